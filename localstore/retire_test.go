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
)

// remoteIncrAt is the delta of replica r incrementing counter key by by at instant at,
// as it would arrive from that replica.
func remoteIncrAt(r crdt.ReplicaID, key string, by int64, at time.Time) *crdt.Context {
	var c crdt.Context
	return c.Incr(crdt.Write{Replica: r, At: crdt.TimestampOf(at)}, key, by, 0)
}

// TestStore_Retire: a replica gone from the fleet is folded into this one in every
// context it wrote to, the values stay, a delta of it that arrives late is folded too
// when the sweeper settles, and after TombstoneTTL its slots are gone: the context holds
// state for the live replicas only. With a cache of one decoded context, the contexts are
// retired, settled and pruned from their encoding.
func TestStore_Retire(t *testing.T) {
	for _, cache := range []int{0, 1} {
		t.Run(fmt.Sprintf("cache=%d", cache), func(t *testing.T) { testStoreRetire(t, cache) })
	}
}

func testStoreRetire(t *testing.T, cache int) {
	ctx := context.Background()
	clk := newFakeClock()
	const grace = time.Hour
	s := openStore(t, Options{Now: clk.Now, TombstoneTTL: grace, CacheContexts: cache})
	const gone crdt.ReplicaID = 0x77
	for _, name := range []string{"checkout", "orders"} {
		if err := s.Merge(ctx, name, remoteIncrAt(gone, "http.requests", 40, clk.Now()), gone); err != nil {
			t.Fatal(err)
		}
		windowed(t, s, name, incr("http.requests", 2))
	}
	windowed(t, s, "untouched", incr("x", 1))

	n, err := s.Retire(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("Retire changed %d contexts, want 2", n)
	}
	for _, name := range []string{"checkout", "orders"} {
		if got, _ := s.Counter(name, "http.requests"); got != 42 {
			t.Errorf("%s: http.requests = %d after the fold, want 42", name, got)
		}
	}
	if got := s.CounterReplicas()[gone]; got != 2 {
		t.Errorf("before pruning the gone replica holds slots in %d contexts, want 2 (until the grace period passes)", got)
	}
	if n, err := s.settleFolds(ctx); err != nil || n != 0 {
		t.Errorf("settleFolds right after Retire = %d, %v; want 0: its folds are settled", n, err)
	}
	// A delta the gone replica sent before it went, late: its slot in orders grew to 45.
	late := remoteIncrAt(gone, "http.requests", 45, clk.Now().Add(-time.Minute))
	if err := s.Merge(ctx, "orders", late, gone); err != nil {
		t.Fatal(err)
	}
	windowed(t, s, "untouched", incr("x", 1)) // orders out of a cache of one
	if n, err := s.settleFolds(ctx); err != nil || n != 1 {
		t.Fatalf("settleFolds after the late delta = %d, %v; want the one context it outgrew", n, err)
	}
	if n, err := s.settleFolds(ctx); err != nil || n != 0 {
		t.Errorf("settleFolds with nothing changed = %d, %v; want 0", n, err)
	}
	want := map[string]int64{"checkout": 42, "orders": 47}
	clk.Advance(grace + time.Minute)
	if _, err := s.settleFolds(ctx); err != nil {
		t.Fatal(err)
	}
	s.Sweep()
	for _, name := range []string{"checkout", "orders"} {
		snap, err := s.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := snap.Counters["http.requests"]; got != want[name] {
			t.Errorf("%s: http.requests = %d after pruning, want %d", name, got, want[name])
		}
		if snap.Replicas != 1 {
			t.Errorf("%s: Replicas = %d after pruning, want 1", name, snap.Replicas)
		}
	}
	if _, ok := s.CounterReplicas()[gone]; ok {
		t.Errorf("the gone replica still holds slots after pruning: %v", s.CounterReplicas())
	}
	// A late delta of the gone replica is not counted again.
	if err := s.Merge(ctx, "checkout", remoteIncrAt(gone, "http.requests", 40, clk.Now().Add(-2*grace)), gone); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Counter("checkout", "http.requests"); got != 42 {
		t.Errorf("after a late delta of the pruned replica http.requests = %d, want 42", got)
	}
	if _, err := s.Retire(ctx, s.Replica()); err == nil {
		t.Error("Retire of this store's own replica was accepted")
	}
}

// TestStore_RetiredSelf: a store that learns that the fleet retired its replica id stops
// taking writes and says so, and reopened, continues under a new replica id with its
// data, writing again.
func TestStore_RetiredSelf(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ctx.db")
	s := New(Options{Path: path, Logger: testLogger(t)})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	windowed(t, s, "c", incr("k", 5))
	old := s.Replica()
	// Another replica, having waited for this one long enough, folds it.
	c, _ := s.State("c")
	const other crdt.ReplicaID = 0x99
	fold, err := c.Absorb(crdt.Write{Replica: other, At: crdt.TimestampOf(time.Now())}, old)
	if err != nil || fold == nil {
		t.Fatalf("Absorb = %v, %v", fold, err)
	}
	if err := s.Merge(ctx, "c", fold, other); !errors.Is(err, ErrRetired) {
		t.Fatalf("Merge of a fold of this replica = %v, want ErrRetired", err)
	}
	select {
	case <-s.Retired():
	default:
		t.Fatal("Retired() is not closed")
	}
	if err := s.Ready(); !errors.Is(err, ErrRetired) {
		t.Errorf("Ready = %v, want ErrRetired", err)
	}
	if _, err := s.Apply(ctx, "c", []ops.Op{incr("k", 1)}, Durable); !errors.Is(err, ErrRetired) {
		t.Errorf("a write after the retirement = %v, want ErrRetired", err)
	}
	if err := s.Close(); err != nil && !errors.Is(err, ErrRetired) {
		t.Fatal(err)
	}

	// Reopened, the store finds the fold in its file and continues under a new id.
	s2 := openStore(t, Options{Path: path})
	if s2.Replica() == old {
		t.Fatalf("reopened with the retired replica id %s", old)
	}
	if err := s2.Ready(); err != nil {
		t.Fatalf("Ready after the restart: %v", err)
	}
	if got, _ := s2.Counter("c", "k"); got != 5 {
		t.Errorf("k = %d after the restart, want the 5 written before (now in the fold)", got)
	}
	if _, err := s2.Apply(ctx, "c", []ops.Op{incr("k", 1)}, Durable); err != nil {
		t.Fatalf("a write under the new id: %v", err)
	}
	if got, _ := s2.Counter("c", "k"); got != 6 {
		t.Errorf("k = %d after a write under the new id, want 6", got)
	}
}
