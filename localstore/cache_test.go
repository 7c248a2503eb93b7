package localstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
	"pgregory.net/rapid"
)

// TestSweepDue: before the instant sweepDue gives, Sweep would change nothing of a
// context (Compact reports no change, and it is not dropped), whatever the state: the
// sweeper may skip the contexts kept encoded until then without decoding them.
func TestSweepDue(t *testing.T) {
	start := crdt.TimestampOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	second := crdt.Timestamp(1000 << 16)
	rapid.Check(t, func(rt *rapid.T) {
		// Several states per check: the states that matter (one expiry among things
		// that never expire) are a small part of what the generator draws.
		for i := range 8 {
			grace := time.Duration(rapid.IntRange(0, 20).Draw(rt, "grace s")) * time.Second
			c, last := drawState(rt, start, grace)
			due := sweepDue(c, grace)
			// Every second from before the first write to long after the last, and the
			// last instant before due.
			var instants []crdt.Timestamp
			for now := start - second; now < last+120*second && now < due; now += second {
				instants = append(instants, now)
			}
			if due > start {
				instants = append(instants, due-1)
			}
			for _, now := range instants {
				x := c.Clone()
				if x.Compact(now, grace) {
					rt.Fatalf("state %d: sweepDue = %s, yet Compact at %s changes the state", i, due, now)
				}
				horizon := crdt.Timestamp(0)
				if g := crdt.Timestamp(uint64(grace.Milliseconds()) << 16); now > g {
					horizon = now - g
				}
				if x.Size() == 0 && !x.Alive(now) && max(x.Cleared, x.Meta.TS) < horizon {
					rt.Fatalf("state %d: sweepDue = %s, yet the sweeper drops the context at %s", i, due, now)
				}
			}
		}
	})
}

// drawState draws the state of a context two replicas wrote at instants from start, up
// to a minute apart, each joining the other's deltas or not: counters, map entries,
// tombstones, set members, TTLs of all of them, deletes, folds of the other replica
// (retirement) and their settling, compactions. It returns the
// state and the instant of the last write.
func drawState(rt *rapid.T, start crdt.Timestamp, grace time.Duration) (*crdt.Context, crdt.Timestamp) {
	c := &crdt.Context{}
	other := &crdt.Context{}
	at := start
	for range rapid.IntRange(0, 12).Draw(rt, "writes") {
		at += crdt.Timestamp(rapid.IntRange(1, 5000).Draw(rt, "ms") << 16)
		r := crdt.ReplicaID(rapid.IntRange(1, 2).Draw(rt, "replica"))
		target := c
		if r == 2 {
			target = other
		}
		w := crdt.Write{Replica: r, At: at}
		ttl := time.Duration(rapid.SampledFrom([]int{0, 0, 1, 3, 10}).Draw(rt, "ttl s")) * time.Second
		var d *crdt.Context
		var err error
		switch rapid.IntRange(0, 9).Draw(rt, "op") {
		case 0:
			d = target.Incr(w, rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "key"), 1, ttl)
		case 1:
			d = target.Put(w, "m", rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "key"), []byte("1"), ttl)
		case 2:
			d = target.Del(w, "m", rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "key"))
		case 3:
			d = target.Add(w, "s", rapid.SampledFrom([]string{"x", "y"}).Draw(rt, "member"), ttl)
		case 4:
			d = target.Remove(w, "s", rapid.SampledFrom([]string{"x", "y"}).Draw(rt, "member"))
		case 5:
			d = target.SetTTL(w, ttl, rapid.Bool().Draw(rt, "fixed"))
		case 6:
			d = target.Clear(w)
		case 7:
			// Retirement: r folds the other replica's counter slots into its own.
			d, err = target.Absorb(w, 3-r)
		case 8:
			d, err = target.Settle(w)
		default:
			// A compaction, as the sweeper of the writing replica makes.
			target.Compact(at, grace)
			continue
		}
		if err != nil {
			rt.Fatal(err)
		}
		if d == nil {
			continue
		}
		target.Join(d)
		if rapid.Bool().Draw(rt, "share") {
			c.Join(other)
			other.Join(c)
		}
	}
	return c, at
}

// TestStore_Sweep_Encoded: contexts out of the cache of decoded contexts are swept like
// the others once they are due: expired data reclaimed, empty contexts dropped and no
// longer counted toward max_contexts, in memory and in the file; those not due are left
// alone, and a context written between the sweeper's read and its write-back keeps the
// write.
func TestStore_Sweep_Encoded(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "ctx.db")
	opt := Options{Path: path, Now: clk.Now, TombstoneTTL: time.Minute, CacheContexts: 1, SweepInterval: time.Hour}
	s := openStore(t, opt)
	ctx := context.Background()
	apply(t, s, "short", ops.Op{Kind: ops.Incr, Key: "n", By: 1, TTL: 10 * time.Second})
	apply(t, s, "entry", put("m", "k", `"v"`), ops.Op{Kind: ops.Put, Map: "m", Key: "gone", Value: []byte(`1`), TTL: 10 * time.Second})
	if err := s.SetTTL(ctx, "ttl", 10*time.Second, true); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "ttl", incr("n", 1))
	apply(t, s, "forever", incr("n", 1)) // the only one in the cache
	s.mu.RLock()
	encoded := 0
	for name := range s.contexts {
		if s.cache.m[name] == nil {
			encoded++
		}
	}
	s.mu.RUnlock()
	if encoded != 3 {
		t.Fatalf("%d contexts kept encoded, want 3 (cache of 1)", encoded)
	}

	if n := s.Sweep(); n != 0 {
		t.Errorf("a sweep before anything expired changed %d contexts", n)
	}
	clk.Advance(11 * time.Second)
	if n := s.Sweep(); n != 1 {
		t.Errorf("sweep after the entry's TTL changed %d contexts, want 1 (its map entry made a tombstone)", n)
	}
	clk.Advance(2 * time.Minute) // past the tombstone TTL
	s.Sweep()
	if got, want := s.Stats().Contexts, 2; got != want {
		t.Errorf("%d contexts after the sweeps, want %d (entry and forever)", got, want)
	}
	if got, want := s.Stats().Counted, counted(s); got != want {
		t.Errorf("counted %d, a recount finds %d", got, want)
	}
	if v, err := s.MapGet("entry", "m", "k"); err != nil || string(v) != `"v"` {
		t.Errorf("entry m.k = %s, %v after the sweeps; want \"v\"", v, err)
	}
	if v, _ := s.Counter("forever", "n"); v != 1 {
		t.Errorf("forever n = %d, want 1", v)
	}
	for _, name := range []string{"short", "ttl"} {
		if _, err := s.Get(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after its TTL and the sweeps: %v, want ErrNotFound", name, err)
		}
	}

	// Reopened, the file holds what memory held.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := openStore(t, opt)
	if got, want := r.Names(), []string{"entry", "forever"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reopened: contexts %v, want %v", got, want)
	}
}

// TestStore_Cache_Bounds: the cache holds at most CacheContexts decoded contexts and,
// but for the one in use, at most CacheBytes of their encodings; whatever goes in and out
// of it, every read, write, merge, sweep and reopen sees the same data as a store that
// keeps every context decoded.
func TestStore_Cache_Bounds(t *testing.T) {
	dir := t.TempDir()
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		opt := func(name string, cache, bytes int) Options {
			return Options{Path: filepath.Join(dir, fmt.Sprintf("%d-%s.db", n, name)), Logger: hclog.NewNullLogger(),
				CacheContexts: cache, CacheBytes: bytes, CommitWindow: time.Millisecond}
		}
		small := New(opt("small", rapid.IntRange(1, 3).Draw(rt, "cache"), rapid.IntRange(1, 200).Draw(rt, "bytes")))
		all := New(opt("all", 1000, 1<<20))
		for _, s := range []*Store{small, all} {
			if err := s.Open(); err != nil {
				rt.Fatal(err)
			}
		}
		defer func() { small.Close(); all.Close() }()
		ctx := context.Background()
		names := []string{"a", "b", "c", "d", "e"}
		for range rapid.IntRange(1, 40).Draw(rt, "steps") {
			name := rapid.SampledFrom(names).Draw(rt, "name")
			switch rapid.IntRange(0, 5).Draw(rt, "step") {
			case 0, 1:
				op := rapid.SampledFrom([]ops.Op{incr("n", 1), put("m", "k", `"x"`), put("m", rapid.StringMatching(`[a-z]{1,30}`).Draw(rt, "key"), `"long value"`),
					add("s", "x"), rem("s", "x"), {Kind: ops.Del, Map: "m", Key: "k"}}).Draw(rt, "op")
				for _, s := range []*Store{small, all} {
					if _, err := s.Apply(ctx, name, []ops.Op{op}, Durable); err != nil {
						rt.Fatal(err)
					}
				}
			case 2:
				d := (&crdt.Context{}).Incr(crdt.Write{Replica: 9, At: crdt.TimestampOf(time.Now())}, "peer", 2, 0)
				for _, s := range []*Store{small, all} {
					if _, err := s.MergeAll(ctx, 9, []string{name, "e"}, []*crdt.Context{d, d}); err != nil {
						rt.Fatal(err)
					}
				}
			case 3:
				for _, s := range []*Store{small, all} {
					if err := s.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
						rt.Fatal(err)
					}
				}
			case 4:
				reopened := New(small.opt)
				if err := small.Close(); err != nil {
					rt.Fatal(err)
				}
				small = reopened
				if err := small.Open(); err != nil {
					rt.Fatal(err)
				}
			case 5:
				small.Sweep()
				all.Sweep()
			}
			small.mu.RLock()
			hot, bytes, maxN, maxB := small.cache.n, small.cache.bytes, small.cache.maxN, small.cache.maxB
			over := hot > maxN || (bytes > maxB && hot > 1)
			small.mu.RUnlock()
			if over {
				rt.Fatalf("cache holds %d contexts, %d bytes; bounds %d, %d", hot, bytes, maxN, maxB)
			}
			for _, name := range names {
				a, errA := small.Get(name)
				b, errB := all.Get(name)
				if mustJSON(a) != mustJSON(b) || (errA == nil) != (errB == nil) {
					rt.Fatalf("context %s: %s (%v) with a small cache, %s (%v) with all decoded", name, mustJSON(a), errA, mustJSON(b), errB)
				}
				// What sync digests is the canonical encoding of the current state.
				data, ok := small.Encoded(name)
				c, held := small.State(name)
				if ok != held {
					rt.Fatalf("context %s: Encoded says held %v, State %v", name, ok, held)
				}
				if ok {
					want, _ := c.MarshalBinary()
					if string(data) != string(want) {
						rt.Fatalf("context %s: Encoded is not the encoding of the state", name)
					}
				}
			}
			if got, want := small.Stats().Counted, counted(small); got != want {
				rt.Fatalf("counted %d, a recount finds %d", got, want)
			}
		}
	})
}
