package localstore

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
)

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC() // the first may leave finalizer-held objects of the second
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// maxHeapPerContext bounds the live heap one small context costs (issue 11). The Go
// runtime lets the heap grow to twice what is live before it collects (GOGC=100), so the
// RSS per context is about twice this: 250 bytes here is the 500 bytes of RSS per context
// that the default memory limit of an injected pod is computed with (k8s/, README).
const maxHeapPerContext = 250

// TestStore_Memory_PerContext: a context holding one counter costs at most
// maxHeapPerContext bytes of live heap, both while contexts are being written and once a
// store of them is loaded from its file, and nothing of it is lost.
func TestStore_Memory_PerContext(t *testing.T) {
	const n = 30000
	path := filepath.Join(t.TempDir(), "ctx.db")
	// A short commit window keeps each record of the write-ahead log, and the buffers the
	// log keeps for the next, small; a long checkpoint interval and a large log keep every
	// context written in the log only, with its name in the set of contexts to write to
	// the bbolt file: the most a context costs while written.
	opt := Options{Path: path, Logger: hclog.NewNullLogger(), Limits: Limits{MaxContexts: 100000},
		CommitWindow: time.Millisecond, CheckpointInterval: time.Hour, LogSize: 16 << 20, SweepInterval: time.Hour}
	ctx := context.Background()
	// write writes contexts from to to and returns once they are in the write-ahead log,
	// so that the writes of the last commit window, waiting with their deltas, are not
	// counted.
	write := func(s *Store, from, to int) {
		for i := from; i < to; i++ {
			if _, err := s.Apply(ctx, fmt.Sprintf("mem-%d", i), []ops.Op{incr("hits", 1)}, Windowed); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); ; {
			s.mu.RLock()
			logged := s.pending == nil
			s.mu.RUnlock()
			if logged {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("writes not in the log after 10s")
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	}

	// While written: the slope between n/2 and n contexts, so that what does not grow
	// with the contexts (the watch event ring, the write-ahead log buffers) is left out.
	s := New(opt)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	write(s, 0, n/2)
	half := liveHeap()
	write(s, n/2, n)
	full := liveHeap()
	written := (int64(full) - int64(half)) / (n / 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = nil

	// Loaded: a store opened on the file, against an empty store open at the same time.
	empty := New(Options{Path: filepath.Join(t.TempDir(), "empty.db"), Logger: hclog.NewNullLogger()})
	if err := empty.Open(); err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	base := liveHeap()
	s = New(opt)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	loaded := (int64(liveHeap()) - int64(base)) / n
	t.Logf("live heap per one-counter context: %d B while written, %d B loaded", written, loaded)

	if got, want := s.Stats().Counted, n; got != want {
		t.Fatalf("loaded %d contexts, want %d", got, want)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if v, err := s.Counter(fmt.Sprintf("mem-%d", i), "hits"); err != nil || v != 1 {
			t.Errorf("mem-%d hits = %d, %v; want 1", i, v, err)
		}
	}
	if written > maxHeapPerContext {
		t.Errorf("%d bytes of live heap per context while written, want at most %d", written, maxHeapPerContext)
	}
	if loaded > maxHeapPerContext {
		t.Errorf("%d bytes of live heap per context loaded, want at most %d", loaded, maxHeapPerContext)
	}
}
