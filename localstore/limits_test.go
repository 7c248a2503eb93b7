package localstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
	"pgregory.net/rapid"
)

// TestStore_Apply_CounterRange: an increment past the int64 range is refused with
// ErrRange and a *crdt.RangeError on both paths (admin and request), whatever else the
// list holds, and nothing of the list is applied, in memory or on disk.
func TestStore_Apply_CounterRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctx.db")
	s := openStore(t, Options{Path: path})
	ctx := context.Background()
	apply(t, s, "c", incr("k", math.MaxInt64), put("m", "a", `1`))
	before, _ := s.Get("c")
	seq := s.Stats().Seq
	for _, d := range []Durability{Durable, Windowed} {
		for _, list := range [][]ops.Op{
			{incr("k", 1)},
			{incr("other", 1), incr("k", math.MaxInt64)},
			{put("m", "b", `2`), add("s", "x"), incr("k", 1)},
			{incr("k", -1), incr("k", 2)}, // each op sees the ones before it
		} {
			_, err := s.Apply(ctx, "c", list, d)
			var re *crdt.RangeError
			if !errors.Is(err, ErrRange) || !errors.As(err, &re) || re.Key != "k" || re.Value == 0 {
				t.Fatalf("apply %v (%v): err = %v, want ErrRange with a RangeError for k", list, d, err)
			}
			if after, _ := s.Get("c"); mustJSON(after) != mustJSON(before) {
				t.Fatalf("refused list %v changed the context:\n%s\n%s", list, mustJSON(before), mustJSON(after))
			}
		}
	}
	if got := s.Stats().Seq; got != seq {
		t.Errorf("sequence moved from %d to %d: a refused write was counted", seq, got)
	}
	apply(t, s, "c", incr("k", -1), incr("k", 1))
	if v, _ := s.Counter("c", "k"); v != math.MaxInt64 {
		t.Fatalf("k = %d after -1 and +1, want %d", v, int64(math.MaxInt64))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := openStore(t, Options{Path: path})
	if after, _ := r.Get("c"); mustJSON(after) != mustJSON(before) {
		t.Errorf("reopened:\n%s\nwant\n%s", mustJSON(after), mustJSON(before))
	}
}

// counted counts the contexts that are not markers the slow way, to check the count the
// store keeps.
func counted(s *Store) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for name, sl := range s.contexts {
		var c *crdt.Context
		if h := s.cache.m[name]; h != nil {
			c = h.c
		} else {
			var err error
			if c, err = decodeState(name, sl.data); err != nil {
				panic(err)
			}
		}
		if !c.Marker() {
			n++
		}
	}
	return n
}

// TestStore_Delete_Absent: deleting a context that is not alive here (never written,
// deleted, expired) is ErrNotFound and stores nothing: no change in memory, no sequence
// number, no event for watchers or peers, nothing pending for the log.
func TestStore_Delete_Absent(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, Options{Now: clk.Now})
	ctx := context.Background()
	apply(t, s, "deleted", incr("n", 1))
	if err := s.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "expired", incr("n", 1))
	if err := s.SetTTL(ctx, "expired", time.Second, false); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	for _, name := range []string{"never", "deleted", "expired"} {
		t.Run(name, func(t *testing.T) {
			sub, err := s.Watch(ctx, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			// A write returns before its event is published: the events of the writes
			// above are all out once this one's is.
			apply(t, s, "barrier-"+name, incr("n", 1))
			for e := range sub.Events() {
				if e.Context == "barrier-"+name {
					break
				}
			}
			before, _ := s.Encoded(name)
			st := s.Stats()
			err = s.Delete(ctx, name)
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no such context exists here") || !strings.Contains(err.Error(), "nothing was stored") {
				t.Fatalf("Delete(%s) = %v, want ErrNotFound saying nothing was stored", name, err)
			}
			if after, _ := s.Encoded(name); string(after) != string(before) {
				t.Errorf("the state of %s changed", name)
			}
			if got := s.Stats(); got.Seq != st.Seq || got.Contexts != st.Contexts || got.Counted != st.Counted {
				t.Errorf("stats %+v after the refused delete, were %+v", got, st)
			}
			s.mu.RLock()
			pending := s.pending
			s.mu.RUnlock()
			if pending != nil {
				t.Errorf("a batch is pending for the log: %d events", len(pending.events))
			}
			// The first event after the refused delete is the next write's.
			apply(t, s, "sentinel-"+name, incr("n", 1))
			if e := <-sub.Events(); e.Context != "sentinel-"+name {
				t.Errorf("event for %q after the refused delete, want the sentinel's", e.Context)
			}
		})
	}
}

// TestStore_MaxContexts_DeleteMarkers reproduces issue 10 item 7: 19 deletes of names that
// never existed made a 20-context store refuse every new context. Now they store nothing,
// and the markers deletes of real contexts leave do not count either.
func TestStore_MaxContexts_DeleteMarkers(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, Options{Now: clk.Now, Limits: Limits{MaxContexts: 20}})
	ctx := context.Background()
	apply(t, s, "c", incr("n", 1))
	for i := range 19 {
		if err := s.Delete(ctx, fmt.Sprintf("ghost-%d", i)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete ghost-%d: %v, want ErrNotFound", i, err)
		}
	}
	create := func(name string) error {
		_, err := s.Apply(ctx, name, []ops.Op{incr("n", 1)}, Windowed)
		return err
	}
	for i := range 19 {
		if err := create(fmt.Sprintf("new-%d", i)); err != nil {
			t.Fatalf("context %d of 20: %v", i+2, err)
		}
	}
	full := func(name string) {
		t.Helper()
		var le *LimitError
		if err := create(name); !errors.As(err, &le) || le.Limit != "max_contexts" {
			t.Fatalf("context 21 (%s): %v, want max_contexts", name, err)
		}
	}
	full("one-too-many")
	for i := range 5 {
		if err := s.Delete(ctx, fmt.Sprintf("new-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A peer deleted a context this store never had: its marker arrives by merge.
	gone := (&crdt.Context{}).Clear(crdt.Write{Replica: 99, At: crdt.TimestampOf(clk.Now())})
	if _, err := s.MergeAll(ctx, 99, []string{"gone-elsewhere"}, []*crdt.Context{gone}); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Contexts != 21 || st.Counted != 15 || counted(s) != 15 {
		t.Fatalf("stats %+v (recount %d): want 21 held (5 markers of deletes and 1 merged), 15 counted", st, counted(s))
	}
	for i := range 5 {
		if err := create(fmt.Sprintf("again-%d", i)); err != nil {
			t.Fatalf("context %d after the deletes: %v", 16+i, err)
		}
	}
	full("still-one-too-many")
	// A deleted name written again counts again.
	full("new-0")
}

// TestStore_MaxContexts_Expired: an expired context counts until the sweeper reclaims its
// data, TombstoneTTL after the expiry (a late write from a peer may still revive it, so
// its data is still in memory); from then on it counts no more.
func TestStore_MaxContexts_Expired(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, Options{Now: clk.Now, TombstoneTTL: time.Minute, Limits: Limits{MaxContexts: 2}})
	ctx := context.Background()
	apply(t, s, "a", incr("n", 1))
	if err := s.SetTTL(ctx, "a", 10*time.Second, false); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "b", incr("n", 1))
	var le *LimitError
	clk.Advance(11 * time.Second)
	if _, err := s.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a after its TTL: %v", err)
	}
	if _, err := s.Apply(ctx, "c", []ops.Op{incr("n", 1)}, Durable); !errors.As(err, &le) {
		t.Fatalf("c while expired a holds its data: %v, want max_contexts", err)
	}
	clk.Advance(time.Minute)
	s.Sweep()
	if st := s.Stats(); st.Counted != 1 || counted(s) != 1 {
		t.Fatalf("stats %+v after the sweep (recount %d): want 1 counted", st, counted(s))
	}
	apply(t, s, "c", incr("n", 1))
}

// TestStore_CountedStaysExact: whatever mix of local writes, deletes, TTLs, merges from a
// peer, expiries, sweeps, reopens and crash replays, the count of contexts toward
// max_contexts the store keeps equals a recount, and covers every live context.
func TestStore_CountedStaysExact(t *testing.T) {
	dir := t.TempDir()
	n := 0
	names := []string{"a", "b", "c", "d"}
	rapid.Check(t, func(rt *rapid.T) {
		n++
		clk := newFakeClock()
		// A cache of one to five decoded contexts, for four names: contexts go in and out
		// of it between the steps (cache.go).
		opt := Options{Path: filepath.Join(dir, fmt.Sprintf("%d.db", n)), Now: clk.Now, TombstoneTTL: 30 * time.Second,
			SweepInterval: time.Hour, CheckpointInterval: time.Hour, Logger: hclog.NewNullLogger(),
			CacheContexts: rapid.IntRange(1, 5).Draw(rt, "cache")}
		s := New(opt)
		if err := s.Open(); err != nil {
			rt.Fatal(err)
		}
		defer func() { s.Close() }()
		ctx := context.Background()
		peer := map[string]*crdt.Context{}
		for _, name := range names {
			peer[name] = &crdt.Context{}
		}
		var at crdt.Timestamp
		peerWrite := func() crdt.Write {
			at = max(at+1, crdt.TimestampOf(clk.Now()))
			return crdt.Write{Replica: 77, At: at}
		}
		for range rapid.IntRange(1, 30).Draw(rt, "steps") {
			name := rapid.SampledFrom(names).Draw(rt, "name")
			switch step := rapid.IntRange(0, 9).Draw(rt, "step"); step {
			case 0, 1, 2:
				op := rapid.SampledFrom([]ops.Op{incr("n", 1), put("m", "k", "1"), {Kind: ops.Del, Map: "m", Key: "k"}, add("s", "x"), rem("s", "x"),
					{Kind: ops.Add, Set: "s", Member: "y", TTL: 5 * time.Second}}).Draw(rt, "op")
				d := rapid.SampledFrom([]Durability{Durable, Windowed}).Draw(rt, "durability")
				if _, err := s.Apply(ctx, name, []ops.Op{op}, d); err != nil {
					rt.Fatal(err)
				}
			case 3:
				if err := s.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
					rt.Fatal(err)
				}
			case 4:
				ttl := rapid.SampledFrom([]time.Duration{0, 5 * time.Second}).Draw(rt, "ttl")
				if err := s.SetTTL(ctx, name, ttl, false); err != nil {
					rt.Fatal(err)
				}
			case 5:
				p := peer[name]
				var d *crdt.Context
				switch rapid.IntRange(0, 3).Draw(rt, "peer op") {
				case 0:
					d = p.Incr(peerWrite(), "n", 1, 0)
				case 1:
					d = p.Clear(peerWrite())
				case 2:
					d = p.Put(peerWrite(), "m", "p", []byte("2"), 0)
				default:
					d = p.SetTTL(peerWrite(), 5*time.Second, false)
				}
				p.Join(d)
				if rapid.Bool().Draw(rt, "one by one?") {
					if err := s.Merge(ctx, name, d, 77); err != nil {
						rt.Fatal(err)
					}
				} else if _, err := s.MergeAll(ctx, 77, []string{name}, []*crdt.Context{d}); err != nil {
					rt.Fatal(err)
				}
			case 6:
				clk.Advance(time.Duration(rapid.IntRange(1, 40).Draw(rt, "seconds")) * time.Second)
			case 7:
				s.Sweep()
			case 8, 9:
				// Reopen: from the bbolt file after a clean close, or from a copy of the
				// files as a crash leaves them (the log replayed).
				var path string
				if step == 8 {
					if err := s.Close(); err != nil {
						rt.Fatal(err)
					}
					path = s.opt.Path
				} else {
					path = crashCopy(t, s)
					if err := s.Close(); err != nil {
						rt.Fatal(err)
					}
				}
				opt.Path = path
				s = New(opt)
				if err := s.Open(); err != nil {
					rt.Fatal(err)
				}
			}
			if got, want := s.Stats().Counted, counted(s); got != want {
				rt.Fatalf("the store counts %d contexts toward max_contexts; a recount finds %d", got, want)
			}
			if live := len(s.List()); live > s.Stats().Counted {
				rt.Fatalf("%d live contexts, %d counted", live, s.Stats().Counted)
			}
		}
	})
}
