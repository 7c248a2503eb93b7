package proxy

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxprop/ctxprop/localstore"
)

// OtherContext is the context label of the series that folds every context not exported
// on its own.
const OtherContext = "_other"

// ContextCounterReader reads a few counters of every context; *localstore.Store is one.
type ContextCounterReader interface {
	Counters(marker string, keys []string) []localstore.ContextCounters
}

// ContextMetricsOptions bound the series of a ContextCollector.
type ContextMetricsOptions struct {
	// Max is how many contexts get series of their own (admin.context_metrics_max); the
	// others are summed under context="_other". 0 exports nothing.
	Max int
	// Allow names contexts that always get series of their own (admin.context_metrics),
	// taking the first of the Max places; the rest go to the busiest contexts by requests.
	Allow []string
}

// ContextCollector exports the per-context telemetry the inbound proxies of the fleet
// write to the store (SPEC §5), as ctxprop_context_*: every sidecar holds the fleet-wide
// sums, so any one of them shows the whole fleet's traffic per context.
//
// A context's series are there only while it is among the exported ones: a context that
// falls out of the top Max moves its counts into "_other", which rate() reads as a
// counter reset of both series. List a context in Allow to keep its series stable.
//
// A scrape costs one ContextCounterReader.Counters (a pass over the store's context names
// under its read lock, decoding only the contexts out of the cache that hold telemetry),
// a sort of the contexts with telemetry by requests, and at most Max+1 series of each
// metric, however many contexts the store holds. The decoding dominates: about 13 µs
// per context with telemetry out of the cache (localstore's BenchmarkStore_Counters:
// 10,000 such contexts, 130 ms and 42 MB of garbage on a 2-core VM), as the web page's
// List costs; a fleet near store.max_contexts (100,000) pays over a second per read. The
// store is read at most once per contextReadInterval (5 s) whatever the scrape rate.
type ContextCollector struct {
	store    ContextCounterReader
	opt      ContextMetricsOptions
	allow    map[string]bool
	keys     []string
	requests *prometheus.Desc
	errors   *prometheus.Desc
	duration *prometheus.Desc

	// The store is read at most once per contextReadInterval: scrapes closer together
	// (several Prometheus servers, a curl loop) get the last read, so that they cannot
	// make the sidecar decode every context again and again.
	mu     sync.Mutex
	last   []localstore.ContextCounters
	readAt time.Time
	now    func() time.Time // time.Now; a test's clock
}

// contextReadInterval is the least time between two reads of the store by a
// ContextCollector.
const contextReadInterval = 5 * time.Second

// counters returns the store's telemetry counters, read again only when the last read is
// contextReadInterval old.
func (c *ContextCollector) counters() []localstore.ContextCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	if t := now(); c.last == nil || t.Sub(c.readAt) >= contextReadInterval || t.Before(c.readAt) {
		c.last, c.readAt = c.store.Counters(KeyRequests, c.keys), t
		if c.last == nil {
			c.last = []localstore.ContextCounters{}
		}
	}
	return slices.Clone(c.last)
}

var _ prometheus.Collector = (*ContextCollector)(nil)

// Indexes into the values of the keys a ContextCollector reads: TelemetryKeys, then
// LegacyBucketKeys.
const (
	keyRequests = iota
	keyErrors
	keyLatencySum
	keyBuckets
	keyLegacyBuckets = keyBuckets + len(LatencyBuckets)
)

// NewContextCollector returns a collector of the per-context telemetry in store.
func NewContextCollector(store ContextCounterReader, opt ContextMetricsOptions) *ContextCollector {
	label := []string{"context"}
	c := &ContextCollector{
		store: store,
		opt:   opt,
		allow: make(map[string]bool, len(opt.Allow)),
		keys:  append(TelemetryKeys(), LegacyBucketKeys[:]...),
		requests: prometheus.NewDesc("ctxprop_context_requests_total",
			`Inbound requests of each context, summed over the fleet; context="_other" sums the contexts past admin.context_metrics_max.`, label, nil),
		errors: prometheus.NewDesc("ctxprop_context_errors_total",
			`Inbound requests of each context answered 5xx by the app, or 502/504 by the proxy, summed over the fleet; context="_other" as for requests.`, label, nil),
		duration: prometheus.NewDesc("ctxprop_context_request_duration_seconds",
			`Time from an inbound request's arrival to the end of its answer, per context, summed over the fleet. An upgraded (WebSocket) exchange counts in +Inf with no duration.`, label, nil),
	}
	for _, name := range opt.Allow {
		c.allow[name] = true
	}
	return c
}

// Describe sends the descriptors of the metrics.
func (c *ContextCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.requests
	ch <- c.errors
	ch <- c.duration
}

// Collect reads the store and sends at most Max+1 series of each metric.
func (c *ContextCollector) Collect(ch chan<- prometheus.Metric) {
	if c.opt.Max <= 0 {
		return
	}
	all := c.counters()
	// Allowed contexts first, then by requests, busiest first; names break ties so
	// that the same store gives the same series.
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if x, y := c.allow[a.Name], c.allow[b.Name]; x != y {
			return x
		}
		if x, y := a.Values[keyRequests], b.Values[keyRequests]; x != y {
			return x > y
		}
		return a.Name < b.Name
	})
	// A context named "_other" itself is folded too: two series with the same label
	// would make the whole scrape fail.
	var other []int64
	own := 0
	for _, cc := range all {
		if own < c.opt.Max && cc.Name != OtherContext {
			c.send(ch, cc.Name, cc.Values)
			own++
			continue
		}
		if other == nil {
			other = make([]int64, len(c.keys))
		}
		for i, v := range cc.Values {
			other[i] += v
		}
	}
	if other != nil {
		c.send(ch, OtherContext, other)
	}
}

func (c *ContextCollector) send(ch chan<- prometheus.Metric, name string, v []int64) {
	ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(v[keyRequests]), name)
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(v[keyErrors]), name)
	buckets := make(map[float64]uint64, len(LatencyBuckets))
	for i, le := range LatencyBuckets {
		// A context written by a sidecar older than issue 16 counts under the old name.
		buckets[le.Seconds()] = uint64(max(v[keyBuckets+i]+v[keyLegacyBuckets+i], 0))
	}
	// The stored sum is in microseconds (telemetry.go), under the same name before and
	// after issue 16; Prometheus wants seconds.
	sum := float64(v[keyLatencySum]) / 1e6
	ch <- prometheus.MustNewConstHistogram(c.duration, uint64(max(v[keyRequests], 0)), sum, buckets, name)
}
