package localstore

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

func remoteIncr(r crdt.ReplicaID, key string, by int64) *crdt.Context {
	var c crdt.Context
	return c.Incr(crdt.Write{Replica: r, At: crdt.TimestampOf(time.Now())}, key, by, 0)
}

func TestStore_MergeAll(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ctx.db")
	s := openStore(t, Options{Path: path})
	d1, d2 := remoteIncr(7, "orders", 2), remoteIncr(8, "orders", 3)

	changed, err := s.MergeAll(ctx, 7, []string{"a", "b", "a"}, []*crdt.Context{d1, d2, d1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := changed, []bool{true, true, false}; !slices.Equal(got, want) {
		t.Errorf("changed = %v, want %v (the repeat of a delta changes nothing)", got, want)
	}
	if got, want := s.Names(), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	if v, _ := s.Counter("a", "orders"); v != 2 {
		t.Errorf("a/orders = %d, want 2", v)
	}
	enc, ok := s.Encoded("b")
	if !ok {
		t.Fatal("Encoded(b): not held")
	}
	var back crdt.Context
	if err := back.UnmarshalBinary(enc); err != nil || !crdt.Equal(&back, d2) {
		t.Errorf("Encoded(b) does not decode to the merged state (%v)", err)
	}

	// One bad name refuses the whole call: nothing of it is merged.
	_, err = s.MergeAll(ctx, 7, []string{"c", "bad name!"}, []*crdt.Context{d1, d1})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("MergeAll with a bad name: %v, want ErrInvalid", err)
	}
	if _, ok := s.State("c"); ok {
		t.Error("context c merged although its call was refused")
	}
	// A timestamp far in the future refuses the whole call too.
	var c crdt.Context
	future := c.Put(crdt.Write{Replica: 9, At: crdt.TimestampOf(time.Now().Add(time.Hour))}, "m", "k", []byte(`1`), 0)
	if _, err := s.MergeAll(ctx, 9, []string{"d", "e"}, []*crdt.Context{d1, future}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("MergeAll with a clock an hour ahead: %v, want ErrInvalid", err)
	}
	if _, ok := s.State("d"); ok {
		t.Error("context d merged although its call was refused")
	}

	// Merges are durable: they survive a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, Options{Path: path})
	if v, _ := s2.Counter("b", "orders"); v != 3 {
		t.Errorf("after reopen b/orders = %d, want 3", v)
	}
}
