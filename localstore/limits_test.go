package localstore

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ops"
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
