package crdt

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// base is an arbitrary instant far from zero so that TTL arithmetic never underflows.
var base = TimestampOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

// replica is a test replica: its state and its own clock readings.
type replica struct {
	id    ReplicaID
	state *Context
	at    Timestamp
}

func (r *replica) write(t *rapid.T) Write {
	// Clocks advance by a random step, sometimes by nothing but the logical counter.
	r.at += Timestamp(rapid.IntRange(1, 3<<logicalBits).Draw(t, "step"))
	return Write{Replica: r.id, At: r.at}
}

var (
	keys    = []string{"a", "b", "c"}
	members = []string{"x", "y", "z"}
	ttls    = []time.Duration{0, 0, 0, time.Second, 3 * time.Second}
)

// mutate draws one random mutation of r's state and returns its delta (not yet joined).
func mutate(t *rapid.T, r *replica) *Context {
	w := r.write(t)
	k := rapid.SampledFrom(keys).Draw(t, "key")
	ttl := rapid.SampledFrom(ttls).Draw(t, "ttl")
	switch rapid.IntRange(0, 7).Draw(t, "op") {
	case 0, 1:
		return r.state.Incr(w, k, rapid.Int64Range(-5, 9).Draw(t, "by"), ttl)
	case 2:
		v, _ := json.Marshal(rapid.IntRange(0, 9).Draw(t, "v"))
		return r.state.Put(w, "m", k, v, ttl)
	case 3:
		return r.state.Del(w, "m", k)
	case 4:
		return r.state.Add(w, "s", rapid.SampledFrom(members).Draw(t, "member"), ttl)
	case 5:
		return r.state.Remove(w, "s", rapid.SampledFrom(members).Draw(t, "member"))
	case 6:
		if rapid.IntRange(0, 5).Draw(t, "clear?") == 0 {
			return r.state.Clear(w)
		}
		return r.state.SetTTL(w, ttl*2, rapid.Bool().Draw(t, "fixed"))
	default:
		return r.state.Add(w, "s", rapid.SampledFrom(members).Draw(t, "member"), 0)
	}
}

// history runs random mutations on n replicas that sometimes exchange state, and returns
// every delta made, in order, and the replicas.
func history(t *rapid.T, n int) ([]*Context, []*replica) {
	rs := make([]*replica, n)
	for i := range rs {
		rs[i] = &replica{id: ReplicaID(i + 1), state: &Context{}, at: base}
	}
	var deltas []*Context
	steps := rapid.IntRange(0, 40).Draw(t, "steps")
	for range steps {
		r := rs[rapid.IntRange(0, n-1).Draw(t, "replica")]
		if rapid.IntRange(0, 4).Draw(t, "sync?") == 0 {
			from := rs[rapid.IntRange(0, n-1).Draw(t, "from")]
			r.state.Join(from.state)
			continue
		}
		d := mutate(t, r)
		r.state.Join(d)
		deltas = append(deltas, d)
	}
	return deltas, rs
}

// drawStates returns the states of the three replicas of one random history. States of
// different histories must not be joined: their replicas would reuse each other's dots.
func drawStates(t *rapid.T) (a, b, c *Context) {
	deltas, rs := history(t, 3)
	states := []*Context{rs[0].state, rs[1].state, rs[2].state}
	// A delta or a group of deltas is a state too.
	if len(deltas) > 0 {
		g := &Context{}
		for _, d := range deltas[:rapid.IntRange(1, len(deltas)).Draw(t, "group")] {
			g.Join(d)
		}
		states = append(states, g, deltas[rapid.IntRange(0, len(deltas)-1).Draw(t, "delta")])
	}
	pick := func(label string) *Context { return states[rapid.IntRange(0, len(states)-1).Draw(t, label)] }
	return pick("a"), pick("b"), pick("c")
}

func join(a, b *Context) *Context {
	c := a.Clone()
	c.Join(b)
	return c
}

func TestJoin_Commutative(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, _ := drawStates(t)
		if x, y := join(a, b), join(b, a); !Equal(x, y) {
			t.Fatalf("a⊔b != b⊔a\n%s\n%s", dump(x), dump(y))
		}
	})
}

func TestJoin_Associative(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := drawStates(t)
		if x, y := join(join(a, b), c), join(a, join(b, c)); !Equal(x, y) {
			t.Fatalf("(a⊔b)⊔c != a⊔(b⊔c)\n%s\n%s", dump(x), dump(y))
		}
	})
}

func TestJoin_Idempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, _, _ := drawStates(t)
		if x := join(a, a); !Equal(x, a) {
			t.Fatalf("a⊔a != a\n%s\n%s", dump(x), dump(a))
		}
	})
}

// TestJoin_ReportsChange: Join reports a change exactly when the state is no longer equal
// to what it was, for joins of whole states and for deltas delivered one by one in any
// order, duplicates included (the check a replica makes before forwarding a delta).
func TestJoin_ReportsChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, _ := drawStates(t)
		x := a.Clone()
		if changed, want := x.Join(b), !Equal(a, x); changed != want {
			t.Fatalf("a⊔b reported changed=%v, want %v\na   %s\nb   %s\na⊔b %s", changed, want, dump(a), dump(b), dump(x))
		}
		deltas, _ := history(t, 3)
		if len(deltas) == 0 {
			return
		}
		state := &Context{}
		for i := range rapid.IntRange(1, 2*len(deltas)).Draw(t, "deliveries") {
			d := deltas[rapid.IntRange(0, len(deltas)-1).Draw(t, fmt.Sprint("delivery ", i))]
			before := state.Clone()
			if changed, want := state.Join(d), !Equal(before, state); changed != want {
				t.Fatalf("delivery %d reported changed=%v, want %v\nstate %s\nδ     %s", i, changed, want, dump(before), dump(d))
			}
		}
	})
}

// TestDelta_Inflation checks m(X) = X ⊔ mδ(X): joining a delta into the state it came from
// performs the mutation, is inflationary (X ⊑ m(X)), and joining it again changes nothing.
func TestDelta_Inflation(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		_, rs := history(t, 2)
		r := rs[0]
		x := r.state.Clone()
		d := mutate(t, r)
		mx := join(x, d)
		if !Equal(join(mx, x), mx) {
			t.Fatalf("X ⋢ X⊔δ\nX  %s\nXδ %s", dump(x), dump(mx))
		}
		if !Equal(join(mx, d), mx) {
			t.Fatalf("δ applied twice differs from once")
		}
		// The delta is a part of the new state: joining it into the new state is a no-op
		// from any state it was made for, including a state that already saw more.
		other := join(x, rs[1].state)
		if !Equal(join(join(other, d), mx), join(other, mx)) {
			t.Fatalf("δ is not contained in X⊔δ")
		}
	})
}

// TestDeltas_ReorderedAndDuplicated delivers every delta of a random history to fresh
// replicas in random orders with duplicates: all end in the same state, the join of all.
func TestDeltas_ReorderedAndDuplicated(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		deltas, rs := history(t, 3)
		want := &Context{}
		for _, r := range rs {
			want.Join(r.state)
		}
		for i := range 3 {
			got := &Context{}
			order := rapid.Permutation(deltas).Draw(t, fmt.Sprintf("order%d", i))
			dups := rapid.SliceOfN(rapid.IntRange(0, max(len(deltas)-1, 0)), 0, 5).Draw(t, "dups")
			for _, j := range dups {
				if len(deltas) > 0 {
					order = slices.Insert(order, rapid.IntRange(0, len(order)).Draw(t, "at"), deltas[j])
				}
			}
			// Group some deltas before delivery, as the sync layer batches them.
			for len(order) > 0 {
				n := rapid.IntRange(1, len(order)).Draw(t, "group")
				g := &Context{}
				for _, d := range order[:n] {
					g.Join(d)
				}
				got.Join(g)
				order = order[n:]
			}
			if !Equal(got, want) {
				t.Fatalf("delivery %d differs\ngot  %s\nwant %s", i, dump(got), dump(want))
			}
		}
	})
}

// TestMutators_SequentialModel checks each mutator against a plain model on one replica
// with no expiry in play.
func TestMutators_SequentialModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := &replica{id: 7, state: &Context{}, at: base}
		counters := map[string]int64{}
		entries := map[string]string{}
		set := map[string]bool{}
		for range rapid.IntRange(0, 50).Draw(t, "n") {
			w := r.write(t)
			k := rapid.SampledFrom(keys).Draw(t, "key")
			m := rapid.SampledFrom(members).Draw(t, "member")
			var d *Context
			switch rapid.IntRange(0, 5).Draw(t, "op") {
			case 0:
				by := rapid.Int64Range(-100, 100).Draw(t, "by")
				d = r.state.Incr(w, k, by, 0)
				counters[k] += by
			case 1:
				v := strconv.Quote(rapid.String().Draw(t, "v"))
				d = r.state.Put(w, "m", k, []byte(v), 0)
				entries[k] = v
			case 2:
				d = r.state.Del(w, "m", k)
				delete(entries, k)
			case 3:
				d = r.state.Add(w, "s", m, 0)
				set[m] = true
			case 4:
				d = r.state.Remove(w, "s", m)
				delete(set, m)
			case 5:
				d = r.state.Clear(w)
				clear(counters)
				clear(entries)
				clear(set)
			}
			r.state.Join(d)
			now := r.at
			for _, k := range keys {
				got, ok := r.state.Counter(k, now)
				want, wok := counters[k]
				if got != want || ok != wok {
					t.Fatalf("counter %s = %d,%v; want %d,%v", k, got, ok, want, wok)
				}
				v, ok := r.state.MapGet("m", k, now)
				if want, wok := entries[k]; string(v) != want || ok != wok {
					t.Fatalf("map %s = %s,%v; want %s,%v", k, v, ok, want, wok)
				}
			}
			var want []string
			for m := range set {
				want = append(want, m)
			}
			slices.Sort(want)
			if got := r.state.SetMembers("s", now); !slices.Equal(got, want) {
				t.Fatalf("set = %v; want %v", got, want)
			}
		}
	})
}

// TestCodec_RoundTrip checks decode(encode(x)) = x for random states.
func TestCodec_RoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x, _, _ := drawStates(t)
		b, err := x.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var y Context
		if err := y.UnmarshalBinary(b); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !Equal(x, &y) {
			t.Fatalf("round trip differs\n%s\n%s", dump(x), dump(&y))
		}
	})
}

// TestCompact_KeepsReads checks that compaction never changes a read made at the
// compaction instant or later.
func TestCompact_KeepsReads(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x, _, _ := drawStates(t)
		now := base + Timestamp(rapid.IntRange(0, 200<<logicalBits).Draw(t, "now"))
		grace := time.Duration(rapid.IntRange(0, 5000).Draw(t, "grace")) * time.Millisecond
		y := x.Clone()
		y.Compact(now, grace)
		for _, later := range []Timestamp{now, now + 1<<logicalBits, now + 10000<<logicalBits} {
			if a, b := view(x, later), view(y, later); a != b {
				t.Fatalf("compaction changed the view at %s\nbefore %s\nafter  %s", later, a, b)
			}
		}
	})
}

func view(c *Context, now Timestamp) string {
	out := fmt.Sprintf("alive=%v", c.Alive(now))
	for _, k := range keys {
		v, ok := c.Counter(k, now)
		e, eok := c.MapGet("m", k, now)
		out += fmt.Sprintf(" c%s=%d/%v m%s=%s/%v", k, v, ok, k, e, eok)
	}
	return out + fmt.Sprintf(" s=%v", c.SetMembers("s", now))
}

func dump(c *Context) string {
	return fmt.Sprintf("%+v", *c)
}

// TestProject_SameDeltas checks that mutating a projection yields the deltas that
// mutating the whole state would.
func TestProject_SameDeltas(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x, _, _ := drawStates(t)
		r := &replica{id: 2, state: x, at: base + 100<<logicalBits}
		k := rapid.SampledFrom(keys).Draw(t, "key")
		m := rapid.SampledFrom(members).Draw(t, "member")
		p := x.Project([]string{k}, map[string][]string{"s": {m}})
		w := r.write(t)
		ttl := rapid.SampledFrom(ttls).Draw(t, "ttl")
		for _, pair := range [][2]*Context{
			{x.Incr(w, k, 3, ttl), p.Incr(w, k, 3, ttl)},
			{x.Add(w, "s", m, ttl), p.Add(w, "s", m, ttl)},
			{x.Remove(w, "s", m), p.Remove(w, "s", m)},
			{x.Put(w, "m", k, []byte("1"), ttl), p.Put(w, "m", k, []byte("1"), ttl)},
		} {
			if !Equal(pair[0], pair[1]) {
				t.Fatalf("projection delta differs\nfull %s\nproj %s", dump(pair[0]), dump(pair[1]))
			}
		}
	})
}

// TestJoin_KeepsStatesCanonical checks that a join leaves a state exactly as a full
// normalization would, so equal states keep encoding to equal bytes (the sync layer's
// digests depend on it) although a join only normalizes what the delta touched.
func TestJoin_KeepsStatesCanonical(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, _ := drawStates(t)
		x := join(a, b)
		y := x.Clone()
		y.normalize()
		bx, _ := x.MarshalBinary()
		by, _ := y.MarshalBinary()
		if string(bx) != string(by) {
			t.Fatalf("join left a state that is not normal\njoined %s\nnormal %s", dump(x), dump(y))
		}
	})
}

// TestIncrAll_SameAsIncrs checks IncrAll against Incr applied one after the other.
func TestIncrAll_SameAsIncrs(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x, _, _ := drawStates(t)
		w := Write{Replica: 2, At: base + Timestamp(rapid.IntRange(0, 60<<logicalBits).Draw(t, "at"))}
		var incs []Inc
		for range rapid.IntRange(1, 6).Draw(t, "n") {
			incs = append(incs, Inc{Key: rapid.SampledFrom(keys).Draw(t, "key"), By: rapid.Int64Range(-5, 9).Draw(t, "by"), TTL: rapid.SampledFrom(ttls).Draw(t, "ttl")})
		}
		seq := x.Clone()
		for _, in := range incs {
			seq.Join(seq.Incr(w, in.Key, in.By, in.TTL))
		}
		d, err := x.IncrAll(w, incs)
		if err != nil {
			t.Fatal(err)
		}
		all := join(x, d)
		if !Equal(seq, all) {
			t.Fatalf("IncrAll differs from sequential Incr\nseq %s\nall %s", dump(seq), dump(all))
		}
	})
}
