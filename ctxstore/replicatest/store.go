package replicatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/ops"
)

// Store is a store's replication side, and Apply for the tests to make local writes.
// *localstore.Store implements it. The sync package's WatchStore, and the relay's own
// interface, are parts of it.
type Store interface {
	// Replica is this replica's id: the Origin of its local changes.
	Replica() crdt.ReplicaID
	// Apply makes a local write.
	Apply(ctx context.Context, name string, list []ops.Op, d ctxstore.Durability) (ctxstore.Result, error)
	// Watch subscribes to committed changes, local and merged, of context name ("" for
	// all) after event ID after (0: only new ones), until ctx ends.
	Watch(ctx context.Context, name string, after uint64) (ctxstore.Subscription, error)
	// LastEventID is the ID of the latest committed change.
	LastEventID() uint64
	// MergeAll joins deltas[i] into context names[i] durably, all or nothing, and reports
	// which changed the state.
	MergeAll(ctx context.Context, origin crdt.ReplicaID, names []string, deltas []*crdt.Context) ([]bool, error)
	// Names returns every context held, sorted.
	Names() []string
	// Encoded returns the canonical encoding of a context's state; ok false if absent.
	Encoded(name string) ([]byte, bool)
}

// Timeout bounds each wait of the contract tests for an event or for convergence.
const Timeout = 20 * time.Second

// RunStore runs the store contract against the stores open returns. open returns a new,
// empty, opened store and closes it in t.Cleanup.
func RunStore(t *testing.T, open func(t *testing.T) Store) {
	t.Run("LocalWriteIsAnEventWithADelta", func(t *testing.T) { localWrite(t, open) })
	t.Run("MergeIsOneEventOfTheOrigin", func(t *testing.T) { mergeOnce(t, open) })
	t.Run("EncodingIsCanonicalInAnyOrder", func(t *testing.T) { canonical(t, open) })
	t.Run("FullStateCatchesUp", func(t *testing.T) { fullState(t, open) })
	t.Run("RefusesBadInputWhole", func(t *testing.T) { refuses(t, open) })
	t.Run("SubscriptionFiltersResumesAndCloses", func(t *testing.T) { subscription(t, open) })
}

func incr(key string, by int64) []ops.Op {
	return []ops.Op{{Kind: ops.Incr, Key: key, By: by}}
}

func apply(t *testing.T, s Store, name string, list []ops.Op) {
	t.Helper()
	if _, err := s.Apply(context.Background(), name, list, ctxstore.Durable); err != nil {
		t.Fatalf("apply to %s: %v", name, err)
	}
}

func watch(t *testing.T, s Store, name string, after uint64) ctxstore.Subscription {
	t.Helper()
	sub, err := s.Watch(t.Context(), name, after)
	if err != nil {
		t.Fatalf("watch %q after %d: %v", name, after, err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// next returns the next event of sub, failing after Timeout.
func next(t *testing.T, sub ctxstore.Subscription) ctxstore.Event {
	t.Helper()
	select {
	case ev, ok := <-sub.Events():
		if !ok {
			t.Fatalf("the subscription closed (lagged %v) while an event was due", sub.Lagged())
		}
		return ev
	case <-time.After(Timeout):
		t.Fatalf("no event within %s", Timeout)
	}
	return ctxstore.Event{}
}

func now() crdt.Timestamp { return crdt.TimestampOf(time.Now()) }

func counter(t *testing.T, c *crdt.Context, key string) int64 {
	t.Helper()
	v, _ := c.Counter(key, now())
	return v
}

// state decodes a store's encoding of a context; nil if absent.
func state(t *testing.T, s Store, name string) *crdt.Context {
	t.Helper()
	data, ok := s.Encoded(name)
	if !ok {
		return nil
	}
	c := &crdt.Context{}
	if err := c.UnmarshalBinary(data); err != nil {
		t.Fatalf("Encoded(%q) does not decode: %v", name, err)
	}
	return c
}

func mustMerge(t *testing.T, s Store, origin crdt.ReplicaID, names []string, deltas []*crdt.Context) []bool {
	t.Helper()
	changed, err := s.MergeAll(context.Background(), origin, names, deltas)
	if err != nil {
		t.Fatalf("MergeAll %v: %v", names, err)
	}
	if got, want := len(changed), len(names); got != want {
		t.Fatalf("MergeAll reported %d changes for %d deltas", got, want)
	}
	return changed
}

func localWrite(t *testing.T, open func(t *testing.T) Store) {
	s := open(t)
	sub := watch(t, s, "", 0)
	apply(t, s, "orders", incr("n", 2))
	ev := next(t, sub)
	if got, want := ev.Context, "orders"; got != want {
		t.Errorf("event of context %q, want %q", got, want)
	}
	if got, want := ev.Origin, s.Replica(); got != want {
		t.Errorf("a local write's event has origin %s, want the store's replica %s: a backend would not send it", got, want)
	}
	if ev.Delta == nil {
		t.Fatal("the event carries no delta")
	}
	c := &crdt.Context{}
	c.Join(ev.Delta)
	if got, want := counter(t, c, "n"), int64(2); got != want {
		t.Errorf("the delta joined into nothing gives n = %d, want %d", got, want)
	}
	if got, want := s.LastEventID(), ev.ID; got != want {
		t.Errorf("LastEventID %d, want the event's %d", got, want)
	}
	if !slices.Contains(s.Names(), "orders") {
		t.Errorf("Names %v lacks the written context", s.Names())
	}
}

// deltas makes writes at s and returns their deltas, one event each.
func deltas(t *testing.T, s Store, name string) []*crdt.Context {
	t.Helper()
	sub := watch(t, s, name, 0)
	writes := [][]ops.Op{
		incr("n", 3),
		{{Kind: ops.Add, Set: "members", Member: "a"}, {Kind: ops.Add, Set: "members", Member: "b"}},
		{{Kind: ops.Put, Map: "cfg", Key: "mode", Value: []byte(`"fast"`)}},
		{{Kind: ops.Rem, Set: "members", Member: "a"}, {Kind: ops.Incr, Key: "n", By: -1}},
	}
	var out []*crdt.Context
	for _, w := range writes {
		apply(t, s, name, w)
		out = append(out, next(t, sub).Delta)
	}
	return out
}

func mergeOnce(t *testing.T, open func(t *testing.T) Store) {
	a, b := open(t), open(t)
	ds := deltas(t, a, "c")
	sub := watch(t, b, "", 0)
	if changed := mustMerge(t, b, a.Replica(), []string{"c"}, ds[:1]); !changed[0] {
		t.Error("a new delta merged reports no change")
	}
	ev := next(t, sub)
	if ev.Context != "c" || ev.Origin != a.Replica() {
		t.Errorf("merge event of context %q from %s, want %q from %s: a backend would send it back as local", ev.Context, ev.Origin, "c", a.Replica())
	}
	if changed := mustMerge(t, b, a.Replica(), []string{"c"}, ds[:1]); changed[0] {
		t.Error("a delta merged twice reports a change the second time")
	}
	apply(t, b, "sentinel", incr("k", 1))
	if ev := next(t, sub); ev.Context != "sentinel" {
		t.Errorf("after a merge that changed nothing came an event of %q from %s; want none", ev.Context, ev.Origin)
	}
}

func canonical(t *testing.T, open func(t *testing.T) Store) {
	a := open(t)
	ds := deltas(t, a, "c")
	want, ok := a.Encoded("c")
	if !ok {
		t.Fatal("the writer's Encoded lacks the context")
	}
	forward, backward, whole := open(t), open(t), open(t)
	for i := range ds {
		mustMerge(t, forward, a.Replica(), []string{"c"}, ds[i:i+1])
		mustMerge(t, backward, a.Replica(), []string{"c"}, ds[len(ds)-1-i:len(ds)-i])
	}
	// Duplicates, in one call: harmless.
	mustMerge(t, whole, a.Replica(), []string{"c", "c", "c", "c", "c"}, append(slices.Clone(ds), ds[0]))
	for name, s := range map[string]Store{"in order": forward, "in reverse": backward, "in one call, with a duplicate": whole} {
		got, ok := s.Encoded("c")
		if !ok {
			t.Errorf("merged %s: Encoded lacks the context", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("merged %s: the encoding differs from the writer's (%d bytes, want %d): backends compare digests of it", name, len(got), len(want))
		}
		c := state(t, s, "c")
		if got, want := counter(t, c, "n"), int64(2); got != want {
			t.Errorf("merged %s: n = %d, want %d", name, got, want)
		}
		if got, want := fmt.Sprint(c.SetMembers("members", now())), "[b]"; got != want {
			t.Errorf("merged %s: members %s, want %s", name, got, want)
		}
	}
}

func fullState(t *testing.T, open func(t *testing.T) Store) {
	a, late := open(t), open(t)
	deltas(t, a, "c")
	apply(t, a, "d", incr("k", 7))
	var names []string
	var states []*crdt.Context
	for _, name := range a.Names() {
		names, states = append(names, name), append(states, state(t, a, name))
	}
	changed := mustMerge(t, late, a.Replica(), names, states)
	for i, ch := range changed {
		if !ch {
			t.Errorf("the full state of %s merged into an empty store reports no change", names[i])
		}
	}
	if got, want := late.Names(), a.Names(); !slices.Equal(got, want) {
		t.Errorf("Names %v after catch-up, want %v", got, want)
	}
	for _, name := range names {
		got, _ := late.Encoded(name)
		want, _ := a.Encoded(name)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the encoding after a full-state merge differs from the source's", name)
		}
	}
	if changed := mustMerge(t, late, a.Replica(), names, states); slices.Contains(changed, true) {
		t.Errorf("the same full state merged again reports changes %v", changed)
	}
}

func refuses(t *testing.T, open func(t *testing.T) Store) {
	a, b := open(t), open(t)
	ds := deltas(t, a, "c")
	tests := []struct {
		name   string
		names  []string
		deltas []*crdt.Context
	}{
		{"bad name", []string{"c", "bad name"}, ds[:2]},
		{"fewer deltas than names", []string{"c", "c"}, ds[:1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.MergeAll(context.Background(), a.Replica(), tt.names, tt.deltas)
			if !errors.Is(err, ctxstore.ErrInvalid) {
				t.Errorf("MergeAll: %v, want an error wrapping ctxstore.ErrInvalid", err)
			}
			if names := b.Names(); len(names) != 0 {
				t.Errorf("a refused MergeAll left contexts %v", names)
			}
		})
	}
}

func subscription(t *testing.T, open func(t *testing.T) Store) {
	s := open(t)
	all := watch(t, s, "", 0)
	only := watch(t, s, "only", 0)
	apply(t, s, "other", incr("k", 1))
	apply(t, s, "only", incr("k", 1))
	first, second := next(t, all), next(t, all)
	if ev := next(t, only); ev.Context != "only" || ev.ID != second.ID {
		t.Errorf("a watch of context %q got event %d of %q, want %d", "only", ev.ID, ev.Context, second.ID)
	}
	if first.ID >= second.ID {
		t.Errorf("event IDs %d then %d: not increasing", first.ID, second.ID)
	}
	resumed := watch(t, s, "", first.ID)
	if resumed.Missed() {
		t.Error("resuming after an event the store holds reports Missed")
	}
	if ev := next(t, resumed); ev.ID != second.ID {
		t.Errorf("resuming after %d gave event %d, want %d", first.ID, ev.ID, second.ID)
	}

	only.Close()
	only.Close() // twice is safe
	closed(t, only, "Close")
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	closed(t, sub, "the end of Watch's context")
	sub.Close()
}

// closed waits until sub's channel is closed, not for lagging.
func closed(t *testing.T, sub ctxstore.Subscription, by string) {
	t.Helper()
	deadline := time.After(Timeout)
	for {
		select {
		case _, ok := <-sub.Events():
			if !ok {
				if sub.Lagged() {
					t.Errorf("closed by %s, the subscription reports Lagged", by)
				}
				return
			}
		case <-deadline:
			t.Fatalf("the subscription was not closed by %s within %s", by, Timeout)
		}
	}
}
