package peersync

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

// phraseCounter counts the log lines that contain a phrase, and passes every line on.
type phraseCounter struct {
	next   testWriter
	phrase string
	mu     sync.Mutex
	n      int
}

func (c *phraseCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n += strings.Count(string(p), c.phrase)
	c.mu.Unlock()
	return c.next.Write(p)
}

func (c *phraseCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestSyncer_NoPeers_BusyWindowsDoNotResubscribe drives request-path (Windowed) writes as
// fast as the store takes them into a sidecar's store with no peers, as a saturated proxy
// does with ctx-ops on every request: a window then commits thousands of writes at once.
// The sync layer's subscription must keep up (no "fell behind; resubscribing") and see
// every change. Before issue 14 each write was an event of its own, and a window of more
// than a subscription's buffer lagged the subscription at every commit.
func TestSyncer_NoPeers_BusyWindowsDoNotResubscribe(t *testing.T) {
	const phrase = "sync fell behind"
	lines := &phraseCounter{next: testWriter{t}, phrase: phrase}
	nd := startNodeWith(t, "alone", filepath.Join(t.TempDir(), "ctx.db"), freeAddr(t), nil, nil, func(o *Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "alone.sync", Level: hclog.Info, Output: lines})
	})
	ctx := context.Background()
	const writers, perWriter = 4, 5000
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				name := fmt.Sprintf("busy-%d", (w+i)%3)
				if _, err := nd.store.Apply(ctx, name, []ops.Op{{Kind: ops.Incr, Key: "n", By: 1}}, localstore.Windowed); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := nd.store.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes in %s", writers*perWriter, time.Since(start).Round(time.Millisecond))
	target := nd.store.LastEventID()
	waitFor(t, 5*time.Second, "the sync layer to see the last change", func() bool { return nd.sync.lastSeen.Load() >= target })
	if got := lines.count(); got != 0 {
		t.Errorf("%q logged %d times with no peers; want 0", phrase, got)
	}
	var total int64
	for i := range 3 {
		v, _ := nd.store.Counter(fmt.Sprintf("busy-%d", i), "n")
		total += v
	}
	if got, want := total, int64(writers*perWriter); got != want {
		t.Errorf("counters sum to %d, want %d", got, want)
	}
}
