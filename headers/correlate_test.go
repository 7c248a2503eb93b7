package headers

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/trace"
)

func traceID(n int) trace.TraceID {
	var id trace.TraceID
	id[0] = 1
	id[14], id[15] = byte(n>>8), byte(n)
	id[13] = byte(n >> 16)
	return id
}

func TestCorrelator_BeginLookupRelease(t *testing.T) {
	c := NewCorrelator(8, time.Minute)
	e := Entry{Name: "ctx-a", Flags: []Flag{{"f", "1"}}}
	release := c.Begin(traceID(1), e)
	if got, ok := c.Lookup(traceID(1)); !ok || !reflect.DeepEqual(got, e) {
		t.Fatalf("Lookup = %+v, %v; want %+v, true", got, ok, e)
	}
	if _, ok := c.Lookup(traceID(2)); ok {
		t.Error("Lookup found an entry never begun")
	}
	release()
	if _, ok := c.Lookup(traceID(1)); ok {
		t.Error("entry still there after release")
	}
	if got, want := c.Len(), 0; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
}

func TestCorrelator_SharedTraceID(t *testing.T) {
	c := NewCorrelator(8, 0)
	r1 := c.Begin(traceID(1), Entry{Name: "first"})
	r2 := c.Begin(traceID(1), Entry{Name: "second"})
	if got, _ := c.Lookup(traceID(1)); got.Name != "second" {
		t.Errorf("Lookup = %q, want the latest entry %q", got.Name, "second")
	}
	r1()
	r1() // idempotent: must not release the second request's share
	if _, ok := c.Lookup(traceID(1)); !ok {
		t.Fatal("entry gone while a request with its trace-id is in flight")
	}
	r2()
	if _, ok := c.Lookup(traceID(1)); ok {
		t.Error("entry still there after the last release")
	}
}

func TestCorrelator_NothingRecorded(t *testing.T) {
	c := NewCorrelator(8, 0)
	c.Begin(trace.TraceID{}, Entry{Name: "x"})()
	c.Begin(traceID(1), Entry{})()
	if got, want := c.Len(), 0; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
}

func TestCorrelator_EvictsOldest(t *testing.T) {
	c := NewCorrelator(3, 0)
	var releases []func()
	for i := 1; i <= 4; i++ {
		releases = append(releases, c.Begin(traceID(i), Entry{Name: fmt.Sprint("c", i)}))
	}
	if got, want := c.Len(), 3; got != want {
		t.Errorf("Len = %d, want the capacity %d", got, want)
	}
	if _, ok := c.Lookup(traceID(1)); ok {
		t.Error("the oldest entry was not evicted")
	}
	for i := 2; i <= 4; i++ {
		if _, ok := c.Lookup(traceID(i)); !ok {
			t.Errorf("entry %d evicted, want only the oldest gone", i)
		}
	}
	// A late release of the evicted request must not touch a newer entry for
	// the same trace-id.
	r := c.Begin(traceID(1), Entry{Name: "again"})
	releases[0]()
	if got, ok := c.Lookup(traceID(1)); !ok || got.Name != "again" {
		t.Errorf("Lookup = %+v, %v after a stale release; want the new entry", got, ok)
	}
	r()
}

func TestCorrelator_CapacityBoundSharded(t *testing.T) {
	const capacity = 4096
	c := NewCorrelator(capacity, 0)
	if len(c.shards) < 2 {
		t.Fatalf("%d shards for capacity %d; want sharding", len(c.shards), capacity)
	}
	for i := range 3 * capacity {
		c.Begin(traceID(i), Entry{Name: "x"})
	}
	if got := c.Len(); got > capacity || got < capacity*9/10 {
		t.Errorf("Len = %d, want at most %d and close to it", got, capacity)
	}
}

// TestCorrelator_Timeout runs on synctest's fake clock: no sleeping for real.
func TestCorrelator_Timeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCorrelator(8, time.Second)
		c.Begin(traceID(1), Entry{Name: "old"})
		time.Sleep(600 * time.Millisecond)
		c.Begin(traceID(2), Entry{Name: "young"})
		time.Sleep(600 * time.Millisecond)
		if _, ok := c.Lookup(traceID(1)); ok {
			t.Error("entry found after its timeout")
		}
		if _, ok := c.Lookup(traceID(2)); !ok {
			t.Error("entry gone before its timeout")
		}
		// Begin sweeps expired entries even when nobody looks them up.
		time.Sleep(time.Second)
		c.Begin(traceID(3), Entry{Name: "new"})
		if got, want := c.Len(), 1; got != want {
			t.Errorf("Len = %d, want %d: expired entries not dropped", got, want)
		}
	})
}

func TestCorrelator_Concurrent(t *testing.T) {
	c := NewCorrelator(1024, time.Minute)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				id := traceID(g*10000 + i%50)
				release := c.Begin(id, Entry{Name: "n"})
				if _, ok := c.Lookup(id); !ok {
					t.Errorf("Lookup(%s) missed an in-flight entry", id)
					return
				}
				release()
			}
		})
	}
	wg.Wait()
	if got, want := c.Len(), 0; got != want {
		t.Errorf("Len = %d after every request completed, want %d", got, want)
	}
}

func BenchmarkCorrelator_BeginRelease(b *testing.B) {
	c := NewCorrelator(65536, time.Minute)
	e := Entry{Name: "orders-42"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var id trace.TraceID
		n := 0
		for pb.Next() {
			n++
			id[0], id[15], id[14], id[13] = 1, byte(n), byte(n>>8), byte(n>>16)
			c.Begin(id, e)()
		}
	})
}

func BenchmarkCorrelator_Lookup(b *testing.B) {
	c := NewCorrelator(65536, time.Minute)
	for i := range 4096 {
		c.Begin(traceID(i), Entry{Name: "orders-42"})
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			n++
			if _, ok := c.Lookup(traceID(n % 4096)); !ok {
				b.Fatal("miss")
			}
		}
	})
}
