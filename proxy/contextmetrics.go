package proxy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/localstore"
)

// OtherContext is the context label of the series that folds every context not exported
// on its own.
const OtherContext = "_other"

// ContextCounterReader reads a few counters of every context, or of a few, and tells
// which contexts change; *localstore.Store is one.
type ContextCounterReader interface {
	Counters(marker string, keys []string) []localstore.ContextCounters
	CountersOf(names []string, marker string, keys []string) []localstore.ContextCounters
	Watch(ctx context.Context, name string, after uint64) (ctxstore.Subscription, error)
}

// ContextMetricsOptions bound the series of a ContextCollector.
type ContextMetricsOptions struct {
	// Max is how many contexts get series of their own (admin.context_metrics_max); the
	// others are summed under context="_other". 0 exports nothing.
	Max int
	// Allow names contexts that always get series of their own (admin.context_metrics),
	// taking the first of the Max places; the rest go to the busiest contexts by requests.
	Allow []string
	// Logger receives the collector's logs. Nil means no logs.
	Logger hclog.Logger
}

// ContextCollector exports the per-context telemetry the inbound proxies of the fleet
// write to the store (SPEC §5), as ctxprop_context_*: every sidecar holds the fleet-wide
// sums, so any one of them shows the whole fleet's traffic per context.
//
// A context's series are there only while it is among the exported ones: a context that
// falls out of the top Max moves its counts into "_other", which rate() reads as a
// counter reset of both series. List a context in Allow to keep its series stable.
//
// Between Open and Close the collector keeps the telemetry of every context in memory and
// a scrape reads only that: a copy and a sort of one small entry per context with
// telemetry, never the store (BenchmarkContextCollector_Scrape: 10,000 contexts, about a
// millisecond where a read of the store took 130 ms). The values are kept up to date off
// the scrape path: the store's change events mark the contexts whose telemetry changed,
// local writes and replicated ones alike, and every contextReadInterval (5 s) those
// contexts are read again, so a change shows within 5 s and a quiet fleet costs nothing.
// Every contextFullReadInterval (1 min), and after the event stream broke off, every
// context is read again: a context that expired sends no event. Decoding a context out of
// the store's cache costs about 13 µs, so a fleet whose 10,000 contexts all change costs
// what every scrape cost before, once per 5 s, in the background.
//
// Without Open (a collector used in a test, or before the store is open), every scrape
// reads the store.
type ContextCollector struct {
	store    ContextCounterReader
	opt      ContextMetricsOptions
	log      hclog.Logger
	allow    map[string]bool
	keys     []string
	requests *prometheus.Desc
	errors   *prometheus.Desc
	duration *prometheus.Desc

	reqs chan chan []localstore.ContextCounters // Counters' requests to keep

	mu     sync.Mutex
	totals map[string][]int64 // nil until Open's first read; a value is never modified, only replaced
	ready  chan struct{}      // closed when totals holds the first read
	cancel context.CancelFunc
	done   chan struct{}

	// contextReadInterval and contextFullReadInterval; a test's shorter ones.
	readInterval, fullInterval time.Duration
}

// contextReadInterval is how often a ContextCollector rereads the contexts that changed;
// contextFullReadInterval how often it rereads every context.
const (
	contextReadInterval     = 5 * time.Second
	contextFullReadInterval = time.Minute
)

// Open starts keeping the telemetry of every context: it subscribes to the store's
// changes, then reads every context in the background. Scrapes from now on wait for
// that first read.
func (c *ContextCollector) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := c.store.Watch(ctx, "", 0)
	if err != nil {
		cancel()
		return fmt.Errorf("proxy: per-context metrics cannot follow the store's changes: %w", err)
	}
	c.mu.Lock()
	c.cancel, c.done, c.ready = cancel, make(chan struct{}), make(chan struct{})
	c.mu.Unlock()
	go c.keep(ctx, sub)
	return nil
}

// Close stops keeping the telemetry; scrapes read the store again.
func (c *ContextCollector) Close() error {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.cancel = nil
	c.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	<-done
	c.mu.Lock()
	c.totals, c.ready = nil, nil
	c.mu.Unlock()
	return nil
}

// keep follows the store's changes until ctx ends; see ContextCollector.
func (c *ContextCollector) keep(ctx context.Context, sub ctxstore.Subscription) {
	defer close(c.done)
	telemetry := make(map[string]bool, len(c.keys))
	for _, k := range c.keys {
		telemetry[k] = true
	}
	var lastFull time.Time
	readAll := func() {
		all := c.store.Counters(KeyRequests, c.keys)
		totals := make(map[string][]int64, len(all))
		for _, cc := range all {
			totals[cc.Name] = cc.Values
		}
		c.mu.Lock()
		c.totals = totals
		c.mu.Unlock()
		lastFull = time.Now()
	}
	readAll()
	close(c.ready)
	dirty := map[string]bool{}
	// readDirty reads the contexts marked dirty again.
	readDirty := func() {
		if len(dirty) == 0 {
			return
		}
		names := make([]string, 0, len(dirty))
		for name := range dirty {
			names = append(names, name)
		}
		clear(dirty)
		fresh := c.store.CountersOf(names, KeyRequests, c.keys)
		c.mu.Lock()
		for _, name := range names {
			delete(c.totals, name) // deleted, cleared or expired, unless read below
		}
		for _, cc := range fresh {
			c.totals[cc.Name] = cc.Values
		}
		c.mu.Unlock()
	}
	full := false
	tick := time.NewTicker(c.readInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			sub.Close()
			return
		case ev, ok := <-sub.Events():
			if !ok {
				if ctx.Err() != nil {
					return
				}
				// Lagged, or the store closed: what was missed is unknown, so the next
				// read is of every context.
				var err error
				if sub, err = c.store.Watch(ctx, "", 0); err != nil {
					c.log.Warn("per-context metrics stop following the store's changes; they show the values of now until restart", "error", err)
					<-ctx.Done()
					return
				}
				full = true
				continue
			}
			if ev.Touched.Context {
				dirty[ev.Context] = true
				continue
			}
			for _, k := range ev.Touched.Counters {
				if telemetry[k] {
					dirty[ev.Context] = true
					break
				}
			}
		case <-tick.C:
			// Events that arrive during a read mark their contexts again: the next read
			// sees them, and a read is of the state, so reading twice is harmless.
			if full || time.Since(lastFull) >= c.fullInterval {
				full = false
				clear(dirty)
				readAll()
				continue
			}
			readDirty()
		case reply := <-c.reqs:
			// Counters: the contexts that changed are read now, so the answer is as
			// fresh as a read of the store, at the cost of the changed ones only (all
			// of them once the event stream broke off).
			if full {
				full = false
				clear(dirty)
				readAll()
			} else {
				readDirty()
			}
			// Copies, in one backing array: the caller may keep and modify them, as a
			// read of the store's (webui.History adds the legacy buckets in place).
			c.mu.Lock()
			all := make([]localstore.ContextCounters, 0, len(c.totals))
			values := make([]int64, 0, len(c.totals)*len(c.keys))
			for name, v := range c.totals {
				values = append(values, v...)
				all = append(all, localstore.ContextCounters{Name: name, Values: values[len(values)-len(v) : len(values) : len(values)]})
			}
			c.mu.Unlock()
			reply <- all
		}
	}
}

// Counters returns the telemetry of every context as the store's Counters reads it. Asked
// for the collector's own keys under KeyRequests between Open and Close, it answers from
// the values it keeps, after reading again only the contexts that changed since its last
// read: webui.History samples through it, and so costs what the changes cost, not a read
// of every context every few seconds (115–244 ms at 10,000 contexts). Anything else reads
// the store.
func (c *ContextCollector) Counters(marker string, keys []string) []localstore.ContextCounters {
	c.mu.Lock()
	done, ready := c.done, c.ready
	c.mu.Unlock()
	if done == nil || marker != KeyRequests || !slices.Equal(keys, c.keys) {
		return c.store.Counters(marker, keys)
	}
	reply := make(chan []localstore.ContextCounters, 1)
	select {
	case <-ready: // the first read is done: keep is in its loop
	case <-done:
		return c.store.Counters(marker, keys)
	}
	select {
	case c.reqs <- reply:
		return <-reply
	case <-done:
		return c.store.Counters(marker, keys)
	}
}

// rank returns the contexts exported on their own, in order, and the sum of the others
// (nil if none): the kept values between Open and Close, a read of the store otherwise.
// The kept values are ranked under the lock with no copy, in one pass: a scrape costs
// a few comparisons per context, not a sort of them all.
func (c *ContextCollector) rank() ([]ranked, []int64) {
	r := ranker{max: c.opt.Max, allow: c.allow, width: len(c.keys)}
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	if ready != nil {
		<-ready
		c.mu.Lock()
		if c.totals != nil {
			for name, v := range c.totals {
				r.add(name, v)
			}
			c.mu.Unlock()
			return r.top, r.other
		}
		c.mu.Unlock() // closed meanwhile
	}
	for _, cc := range c.store.Counters(KeyRequests, c.keys) {
		r.add(cc.Name, cc.Values)
	}
	return r.top, r.other
}

// ranked is a context exported on its own.
type ranked struct {
	name    string
	values  []int64
	allowed bool
}

// before orders the exported contexts: allowed ones first, then by requests, busiest
// first; names break ties so that the same store gives the same series.
func (a ranked) before(b ranked) bool {
	if a.allowed != b.allowed {
		return a.allowed
	}
	if x, y := a.values[keyRequests], b.values[keyRequests]; x != y {
		return x > y
	}
	return a.name < b.name
}

// ranker keeps the first max contexts in order and sums the others.
type ranker struct {
	max   int
	allow map[string]bool
	width int
	top   []ranked
	other []int64
}

func (r *ranker) add(name string, v []int64) {
	// A context named "_other" itself is folded too: two series with the same label
	// would make the whole scrape fail.
	if name == OtherContext || r.max <= 0 {
		r.fold(v)
		return
	}
	e := ranked{name: name, values: v, allowed: r.allow[name]}
	if len(r.top) == r.max {
		last := r.top[r.max-1]
		if !e.before(last) {
			r.fold(v)
			return
		}
		r.fold(last.values)
		r.top = r.top[:r.max-1]
	}
	i, _ := slices.BinarySearchFunc(r.top, e, func(x, e ranked) int {
		if x.before(e) {
			return -1
		}
		return 1
	})
	r.top = slices.Insert(r.top, i, e)
}

func (r *ranker) fold(v []int64) {
	if r.other == nil {
		r.other = make([]int64, r.width)
	}
	for i, n := range v {
		r.other[i] += n
	}
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
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	c := &ContextCollector{
		store:        store,
		reqs:         make(chan chan []localstore.ContextCounters),
		opt:          opt,
		log:          opt.Logger,
		readInterval: contextReadInterval,
		fullInterval: contextFullReadInterval,
		allow:        make(map[string]bool, len(opt.Allow)),
		keys:         append(TelemetryKeys(), LegacyBucketKeys[:]...),
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

// Collect sends at most Max+1 series of each metric.
func (c *ContextCollector) Collect(ch chan<- prometheus.Metric) {
	if c.opt.Max <= 0 {
		return
	}
	top, other := c.rank()
	for _, e := range top {
		c.send(ch, e.name, e.values)
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
