package localstore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ctxprop/ctxprop/ops"
)

// TestStore_EventBeforeReturn: once a durable write returns, its event is published:
// LastEventID counts it (a syncer's or relay's Close waits for the changes up to it), and
// a watcher subscribed after it does not receive it as new (the relay's
// TestRelay_WritesBeforeOpen failed now and then on that).
func TestStore_EventBeforeReturn(t *testing.T) {
	s := openStore(t, Options{Path: filepath.Join(t.TempDir(), "ctx.db")})
	for i := range 300 {
		before := s.LastEventID()
		if _, err := s.Apply(context.Background(), "c", []ops.Op{{Kind: ops.Incr, Key: "n", By: 1}}, Durable); err != nil {
			t.Fatal(err)
		}
		if got := s.LastEventID(); got <= before {
			t.Fatalf("write %d returned before its event was published: LastEventID %d, was %d before", i, got, before)
		}
	}
}
