package proxy

import (
	"context"
	"math"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

// countingReader is a ContextCounterReader that counts its reads.
type countingReader struct {
	reads int
	value int64
}

func (r *countingReader) Counters(marker string, keys []string) []localstore.ContextCounters {
	r.reads++
	values := make([]int64, len(keys))
	values[keyRequests] = r.value
	return []localstore.ContextCounters{{Name: "checkout", Values: values}}
}

// TestContextCollector_ReadsTheStoreAtMostEveryInterval: scrapes closer together than
// contextReadInterval share one read of the store; the next one after it reads again.
func TestContextCollector_ReadsTheStoreAtMostEveryInterval(t *testing.T) {
	r := &countingReader{value: 1}
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	c := NewContextCollector(r, ContextMetricsOptions{Max: 10})
	c.now = func() time.Time { return at }
	scrape := func() {
		t.Helper()
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		scrape()
		at = at.Add(time.Second)
	}
	if r.reads != 1 {
		t.Errorf("5 scrapes within %s read the store %d times, want 1", contextReadInterval, r.reads)
	}
	at = at.Add(contextReadInterval)
	scrape()
	if r.reads != 2 {
		t.Errorf("a scrape %s after the last read read the store %d times in all, want 2", contextReadInterval, r.reads)
	}
}

// oldSidecarWrites are the telemetry counters a sidecar from before issue 16 wrote for
// four requests: the buckets named in milliseconds beside the sum in microseconds.
var oldSidecarWrites = []ops.Op{
	{Kind: ops.Incr, Key: "http.requests", By: 4},
	{Kind: ops.Incr, Key: "http.errors", By: 1},
	{Kind: ops.Incr, Key: "http.latency_us_sum", By: 3_250_000},
	{Kind: ops.Incr, Key: "http.latency_ms_le_5", By: 1},
	{Kind: ops.Incr, Key: "http.latency_ms_le_25", By: 1},
	{Kind: ops.Incr, Key: "http.latency_ms_le_100", By: 2},
	{Kind: ops.Incr, Key: "http.latency_ms_le_500", By: 2},
	{Kind: ops.Incr, Key: "http.latency_ms_le_2500", By: 3},
}

// TestContextCollector_ExportsContextsOfOlderSidecars writes a context into a bbolt file
// with the keys of an older sidecar, opens the file again, sends requests into the same
// context through a real proxy (the keys of this one) and scrapes: each bucket is the
// old count plus the new, the sum both in seconds, as after a rolling upgrade.
func TestContextCollector_ExportsContextsOfOlderSidecars(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctx.db")
	old := openStore(t, path, localstore.Limits{})
	if _, err := old.Apply(context.Background(), "orders", oldSidecarWrites, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	store := openStore(t, path, localstore.Limits{})
	app := telemetryApp(t)
	p, err := New(Options{InboundAddress: "127.0.0.1:0", App: hostOf(app.URL), Store: windowedStore{store},
		ContextBaggage: "ctx.name", TelemetryWindow: time.Hour, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{}}
	const n = 3
	for range n {
		if err := send(c, p.InboundAddr().String(), "/slow/30", "orders"); err != nil {
			t.Fatal(err)
		}
	}
	c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil { // writes the window
		t.Fatal(err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewContextCollector(store, ContextMetricsOptions{Max: 10}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var hist *dto.Histogram
	for _, f := range families {
		if f.GetName() == "ctxprop_context_request_duration_seconds" {
			hist = f.GetMetric()[0].GetHistogram()
		}
	}
	if hist == nil {
		t.Fatal("no ctxprop_context_request_duration_seconds in the scrape")
	}
	if got, want := hist.GetSampleCount(), uint64(4+n); got != want {
		t.Errorf("count = %d, want %d (4 old, %d new)", got, want, n)
	}
	newSum, _ := store.Counter("orders", KeyLatencySum)
	if got, want := hist.GetSampleSum(), 3.25+float64(newSum-3_250_000)/1e6; math.Abs(got-want) > 1e-9 {
		t.Errorf("sum = %v s, want %v", got, want)
	}
	oldBuckets := []uint64{1, 1, 2, 2, 3}
	for i, b := range hist.GetBucket() {
		fresh, _ := store.Counter("orders", BucketKeys[i])
		if got, want := b.GetCumulativeCount(), oldBuckets[i]+uint64(fresh); got != want {
			t.Errorf("bucket le=%v = %d, want %d (old %d, this sidecar's %d)", b.GetUpperBound(), got, want, oldBuckets[i], fresh)
		}
		if got, want := b.GetUpperBound(), LatencyBuckets[i].Seconds(); got != want {
			t.Errorf("bucket %d bound %v, want %v", i, got, want)
		}
	}
	// The requests of this sidecar took 30 ms or more: counted from le=0.1 on.
	if fresh, _ := store.Counter("orders", BucketKeys[2]); fresh != n {
		t.Errorf("%s = %d, want %d: the test wants this sidecar's requests in the buckets", BucketKeys[2], fresh, n)
	}
}
