package proxy

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

// countingStore is a real store that records the collector's reads of it.
type countingStore struct {
	*localstore.Store
	mu   sync.Mutex
	full int
	some [][]string
}

func (s *countingStore) Counters(marker string, keys []string) []localstore.ContextCounters {
	s.mu.Lock()
	s.full++
	s.mu.Unlock()
	return s.Store.Counters(marker, keys)
}

func (s *countingStore) CountersOf(names []string, marker string, keys []string) []localstore.ContextCounters {
	s.mu.Lock()
	s.some = append(s.some, slices.Sorted(slices.Values(names)))
	s.mu.Unlock()
	return s.Store.CountersOf(names, marker, keys)
}

func (s *countingStore) reads() (full int, some [][]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.full, slices.Clone(s.some)
}

// scrapeRequests scrapes c through a pedantic registry and returns
// ctxprop_context_requests_total by context.
func scrapeRequests(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "ctxprop_context_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

// countedStore opens a countingStore on a bbolt file and returns it with a function that
// writes ops to a context durably.
func countedStore(t *testing.T) (*countingStore, func(name string, list ...ops.Op)) {
	store := &countingStore{Store: openStore(t, filepath.Join(t.TempDir(), "ctx.db"), localstore.Limits{})}
	return store, func(name string, list ...ops.Op) {
		t.Helper()
		if _, err := store.Apply(context.Background(), name, list, localstore.Durable); err != nil {
			t.Fatal(err)
		}
	}
}

// requests is the op that counts n inbound requests.
func requests(n int64) ops.Op { return ops.Op{Kind: ops.Incr, Key: KeyRequests, By: n} }

// TestContextCollector_ScrapesReadKeptValues opens a collector on a bbolt store and
// scrapes it again and again: a scrape never reads the store; the collector reads every
// context once, then only the contexts whose telemetry changed (not one whose other
// counters did), and a deleted context's series go. Before issue 16 every scrape five
// seconds after the last read decoded every context.
func TestContextCollector_ScrapesReadKeptValues(t *testing.T) {
	store, apply := countedStore(t)
	ctx := context.Background()
	apply("orders", requests(3))
	apply("payments", requests(5))
	apply("plain", ops.Op{Kind: ops.Incr, Key: "visits", By: 1})

	c := NewContextCollector(store, ContextMetricsOptions{Max: 10})
	c.readInterval = 10 * time.Millisecond
	c.fullInterval = time.Hour
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 5 {
		if got, want := fmt.Sprint(scrapeRequests(t, c)), fmt.Sprint(map[string]float64{"orders": 3, "payments": 5}); got != want {
			t.Fatalf("scrape = %s, want %s", got, want)
		}
	}
	if full, some := store.reads(); full != 1 || len(some) != 0 {
		t.Fatalf("5 scrapes: %d reads of every context and %v of some, want 1 and none", full, some)
	}

	// A change of telemetry is read within the interval; only its context is read.
	apply("payments", ops.Op{Kind: ops.Incr, Key: "app.replies", By: 1}) // not telemetry
	apply("orders", requests(4))
	waitScrape(t, c, map[string]float64{"orders": 7, "payments": 5})
	full, some := store.reads()
	if full != 1 {
		t.Errorf("%d reads of every context, want 1", full)
	}
	if got, want := fmt.Sprint(some), "[[orders]]"; got != want {
		t.Errorf("contexts read again: %s, want %s (payments changed no telemetry)", got, want)
	}

	// A delete sends an event too: the series goes.
	if err := store.Delete(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	waitScrape(t, c, map[string]float64{"payments": 5})

	// Closed, the collector reads the store on every scrape, as before Open.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	scrapeRequests(t, c)
	if full, _ := store.reads(); full != 2 {
		t.Errorf("a scrape after Close: %d reads of every context in all, want 2", full)
	}
}

// TestContextCollector_CountersForHistory: the web page's history samples every context's
// telemetry through the collector (webui.History's CounterReader). Its answer is what a
// read of the store gives, fresh at once (a change is read when asked, not at the next
// interval), and costs a read of the changed contexts only: before, the history read every
// context from the store every 5 s.
func TestContextCollector_CountersForHistory(t *testing.T) {
	store, apply := countedStore(t)
	apply("orders", requests(3), ops.Op{Kind: ops.Incr, Key: BucketKeys[0], By: 3})
	apply("payments", requests(5), ops.Op{Kind: ops.Incr, Key: LegacyBucketKeys[1], By: 2})
	apply("plain", ops.Op{Kind: ops.Incr, Key: "visits", By: 1})

	c := NewContextCollector(store, ContextMetricsOptions{Max: 10})
	c.readInterval = time.Hour // only Counters reads the changed contexts here
	c.fullInterval = time.Hour
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys := append(TelemetryKeys(), LegacyBucketKeys[:]...)
	sorted := func(all []localstore.ContextCounters) string {
		slices.SortFunc(all, func(a, b localstore.ContextCounters) int { return strings.Compare(a.Name, b.Name) })
		return fmt.Sprint(all)
	}
	check := func(when string) {
		t.Helper()
		got := sorted(c.Counters(KeyRequests, keys))
		if want := sorted(store.Store.Counters(KeyRequests, keys)); got != want {
			t.Fatalf("%s: Counters = %s, the store reads %s", when, got, want)
		}
	}
	check("after Open")
	// The answer is the caller's: changing it changes nothing kept.
	for _, cc := range c.Counters(KeyRequests, keys) {
		for i := range cc.Values {
			cc.Values[i] = -1
		}
	}
	apply("orders", requests(4))
	apply("fresh", requests(1))
	check("after writes, within the read interval")
	full, some := store.reads()
	if full != 1 {
		t.Errorf("%d reads of every context, want the first only", full)
	}
	if got, want := fmt.Sprint(some), "[[fresh orders]]"; got != want {
		t.Errorf("contexts read again: %s, want %s", got, want)
	}
	check("with nothing changed")
	if _, some := store.reads(); len(some) != 1 {
		t.Errorf("reads of some contexts with nothing changed: %v, want none more", some)
	}

	// Other keys, or a closed collector: a read of the store.
	c.Counters(KeyRequests, []string{KeyRequests})
	if full, _ := store.reads(); full != 2 {
		t.Errorf("Counters with other keys: %d reads of every context in all, want 2", full)
	}
	c.Close()
	check("after Close")
}

// TestContextCollector_ExpiredContextsGo: a context that expires sends no event; the
// periodic read of every context drops its series.
func TestContextCollector_ExpiredContextsGo(t *testing.T) {
	store := openStore(t, filepath.Join(t.TempDir(), "ctx.db"), localstore.Limits{})
	ctx := context.Background()
	for _, name := range []string{"brief", "lasting"} {
		if _, err := store.Apply(ctx, name, []ops.Op{{Kind: ops.Incr, Key: KeyRequests, By: 2}}, localstore.Durable); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.SetTTL(ctx, "brief", 300*time.Millisecond, true); err != nil {
		t.Fatal(err)
	}
	c := NewContextCollector(store, ContextMetricsOptions{Max: 10})
	c.readInterval, c.fullInterval = 10*time.Millisecond, 50*time.Millisecond
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := scrapeRequests(t, c); got["brief"] != 2 {
		t.Fatalf("scrape before expiry = %v, want brief at 2", got)
	}
	waitScrape(t, c, map[string]float64{"lasting": 2})
}

// waitScrape scrapes c until ctxprop_context_requests_total is want, for at most 5 s.
func waitScrape(t *testing.T, c prometheus.Collector, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := scrapeRequests(t, c)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape = %v after 5 s, want %v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkContextCollector_Scrape is a scrape of the per-context telemetry of 10,000
// contexts, most of them out of the store's cache: read_store is every scrape before
// issue 16 once 5 s had passed since the last (and a collector without Open today),
// kept the scrape of an open collector, reread_100_changed the work an open collector
// does off the scrape path every 5 s when 100 contexts changed.
func BenchmarkContextCollector_Scrape(b *testing.B) {
	store := localstore.New(localstore.Options{Path: filepath.Join(b.TempDir(), "ctx.db"), Logger: hclog.NewNullLogger()})
	if err := store.Open(); err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	list := []ops.Op{
		{Kind: ops.Incr, Key: KeyRequests, By: 10},
		{Kind: ops.Incr, Key: KeyErrors, By: 1},
		{Kind: ops.Incr, Key: KeyLatencySum, By: 8500},
	}
	for _, k := range BucketKeys {
		list = append(list, ops.Op{Kind: ops.Incr, Key: k, By: 10})
	}
	for i := range 10000 {
		if _, err := store.Apply(ctx, fmt.Sprintf("ctx-%05d", i), list, localstore.Windowed); err != nil {
			b.Fatal(err)
		}
	}
	if err := store.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		open bool
	}{{"read_store", false}, {"kept", true}} {
		b.Run(bc.name, func(b *testing.B) {
			c := NewContextCollector(store, ContextMetricsOptions{Max: 50})
			if bc.open {
				if err := c.Open(); err != nil {
					b.Fatal(err)
				}
				defer c.Close()
			}
			ch := make(chan prometheus.Metric, 1024)
			go func() {
				for range ch {
				}
			}()
			defer close(ch)
			c.Collect(ch) // an open collector's first scrape waits for its first read
			b.ReportAllocs()
			for b.Loop() {
				c.Collect(ch)
			}
		})
	}
	// The background work of an open collector when 100 contexts changed in 5 s.
	b.Run("reread_100_changed", func(b *testing.B) {
		names := make([]string, 100)
		for i := range names {
			names[i] = fmt.Sprintf("ctx-%05d", i*97)
		}
		keys := append(TelemetryKeys(), LegacyBucketKeys[:]...)
		b.ReportAllocs()
		for b.Loop() {
			if got := store.CountersOf(names, KeyRequests, keys); len(got) != len(names) {
				b.Fatalf("read %d contexts, want %d", len(got), len(names))
			}
		}
	})
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
	p := startProxy(t, Options{App: hostOf(app.URL), Store: windowedStore{store}, ContextBaggage: "ctx.name", TelemetryWindow: time.Hour})
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
