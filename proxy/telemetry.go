package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxprop/ctxprop/ops"
)

// The counters the inbound side adds to a request's context (SPEC §5). An open proxy sums
// them in memory and writes them once per TelemetryWindow, one Store.Apply per context
// (see telemetry); a request's ctx-ops are applied as it ends.
//
// Every latency counter is in microseconds, the unit in its name: counters are integers
// and most requests inside a cluster take less than a millisecond. The buckets are
// cumulative, as Prometheus histogram buckets are: a 30 ms request adds 1 to
// le_100000, le_500000 and le_2500000. http.requests is the +Inf bucket and the count.
// A WebSocket or other upgraded connection counts as one request with no latency, since
// its duration is that of the session, not of a response.
const (
	KeyRequests   = "http.requests"
	KeyErrors     = "http.errors" // 5xx from the app, and 502/504 from the proxy
	KeyLatencySum = "http.latency_us_sum"
)

// LatencyBuckets are the upper bounds of the latency buckets; bucket i is counted
// under BucketKeys[i].
var LatencyBuckets = [...]time.Duration{
	5 * time.Millisecond,
	25 * time.Millisecond,
	100 * time.Millisecond,
	500 * time.Millisecond,
	2500 * time.Millisecond,
}

// BucketKeys are the counter names of LatencyBuckets, their bounds in microseconds.
var BucketKeys = [len(LatencyBuckets)]string{
	"http.latency_us_le_5000",
	"http.latency_us_le_25000",
	"http.latency_us_le_100000",
	"http.latency_us_le_500000",
	"http.latency_us_le_2500000",
}

// LegacyBucketKeys are the names sidecars before issue 16 gave the buckets of
// LatencyBuckets, their bounds in milliseconds beside a sum in microseconds. No sidecar
// writes them any more, but contexts hold them: those written before an upgrade, and
// those a not yet upgraded sidecar of the fleet writes to during a rolling upgrade. Each
// request counted under one name only, so a bucket's value is the sum of both.
var LegacyBucketKeys = [len(LatencyBuckets)]string{
	"http.latency_ms_le_5",
	"http.latency_ms_le_25",
	"http.latency_ms_le_100",
	"http.latency_ms_le_500",
	"http.latency_ms_le_2500",
}

// TelemetryKeys lists every counter the proxy writes: requests, errors, the latency sum
// and the buckets in the order of LatencyBuckets. ContextCollector exports them, with
// LegacyBucketKeys, on /metrics as ctxprop_context_* (and through the metrics bridge by
// OTLP).
func TelemetryKeys() []string {
	keys := []string{KeyRequests, KeyErrors, KeyLatencySum}
	return append(keys, BucketKeys[:]...)
}

// appendTelemetry appends the telemetry ops of one request to list. upgraded says the
// response switched protocols (latency not counted).
func appendTelemetry(list []ops.Op, status int, failed bool, elapsed time.Duration, upgraded bool) []ops.Op {
	list = append(list, ops.Op{Kind: ops.Incr, Key: KeyRequests, By: 1})
	if failed || status >= 500 {
		list = append(list, ops.Op{Kind: ops.Incr, Key: KeyErrors, By: 1})
	}
	if upgraded {
		return list
	}
	list = append(list, ops.Op{Kind: ops.Incr, Key: KeyLatencySum, By: elapsed.Microseconds()})
	for i, le := range LatencyBuckets {
		if elapsed <= le {
			list = append(list, ops.Op{Kind: ops.Incr, Key: BucketKeys[i], By: 1})
		}
	}
	return list
}

// Slots of a tally: the counters of TelemetryKeys, and timed, the requests that count
// latency (not upgraded), which says whether the latency sum is written at all.
const (
	slotRequests = iota
	slotErrors
	slotLatencySum
	slotTimed
	slotBuckets // the first of len(LatencyBuckets)
	numSlots    = slotBuckets + len(LatencyBuckets)
)

// tally is the telemetry of one context since the last flush.
type tally [numSlots]atomic.Int64

// maxTallies bounds the contexts whose telemetry is summed in memory within one window.
// The context name comes from requests, so a flood of names must not grow the map: past
// the bound a request writes its own telemetry, as every request did before (issue 14),
// and the store's limits (max_contexts) refuse what they refuse, loudly, as before.
const maxTallies = 4096

// telemetry sums the per-context counters of inbound requests in memory and writes them
// to the Store once per window, one Apply per context (issue 14): a request costs a read
// lock and a few atomic adds instead of a store write with its lock, limit checks, delta
// joins and an event. A delta of n increments is the increments, so every sidecar
// converges to the same values as with one write per request.
//
// Requests add under the read lock; flush swaps the tallies under the write lock, so the
// counters of one request always travel in the same flush. Between Open and Close only:
// outside that span (a handler used without Open, a hijacked connection that outlives
// Close) add refuses and the request writes its own telemetry.
type telemetry struct {
	mu      sync.RWMutex
	open    bool
	tallies map[string]*tally
}

// add counts one request in context name and reports whether it did; false means the
// caller writes the request's telemetry itself.
func (t *telemetry) add(name string, status int, failed bool, elapsed time.Duration, upgraded bool) bool {
	t.mu.RLock()
	if c := t.tallies[name]; c != nil && t.open {
		c.count(status, failed, elapsed, upgraded)
		t.mu.RUnlock()
		return true
	}
	t.mu.RUnlock()
	// The first request of a context in this window: make its tally.
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.open {
		return false
	}
	c := t.tallies[name]
	if c == nil {
		if len(t.tallies) >= maxTallies {
			return false
		}
		// A copy: the request's string may share its header's memory.
		c = new(tally)
		t.tallies[strings.Clone(name)] = c
	}
	c.count(status, failed, elapsed, upgraded)
	return true
}

func (c *tally) count(status int, failed bool, elapsed time.Duration, upgraded bool) {
	c[slotRequests].Add(1)
	if failed || status >= 500 {
		c[slotErrors].Add(1)
	}
	if upgraded {
		return
	}
	c[slotTimed].Add(1)
	c[slotLatencySum].Add(elapsed.Microseconds())
	for i, le := range LatencyBuckets {
		if elapsed <= le {
			c[slotBuckets+i].Add(1)
		}
	}
}

// start makes add count from now on.
func (t *telemetry) start() {
	t.mu.Lock()
	t.open, t.tallies = true, make(map[string]*tally)
	t.mu.Unlock()
}

// window is one context's telemetry taken by take.
type window struct {
	name     string
	requests int64
	list     []ops.Op
}

// take returns the telemetry counted since the last take as one op list per context,
// zeroes the tallies and drops those that counted nothing for a whole window. With stop,
// add counts nothing from now on.
func (t *telemetry) take(stop bool) []window {
	t.mu.Lock()
	defer t.mu.Unlock()
	if stop {
		t.open = false
	}
	var out []window
	for name, c := range t.tallies {
		var n [numSlots]int64
		for i := range c {
			n[i] = c[i].Swap(0)
		}
		if n[slotRequests] == 0 {
			delete(t.tallies, name)
			continue
		}
		// The same keys one write per request would have made: a counter is created by
		// its first increment, and the old path wrote the latency sum of a timed request
		// even when it rounded to 0 µs.
		list := make([]ops.Op, 0, numSlots)
		list = append(list, ops.Op{Kind: ops.Incr, Key: KeyRequests, By: n[slotRequests]})
		if n[slotErrors] > 0 {
			list = append(list, ops.Op{Kind: ops.Incr, Key: KeyErrors, By: n[slotErrors]})
		}
		if n[slotTimed] > 0 {
			list = append(list, ops.Op{Kind: ops.Incr, Key: KeyLatencySum, By: n[slotLatencySum]})
		}
		for i := range LatencyBuckets {
			if by := n[slotBuckets+i]; by > 0 {
				list = append(list, ops.Op{Kind: ops.Incr, Key: BucketKeys[i], By: by})
			}
		}
		out = append(out, window{name: name, requests: n[slotRequests], list: list})
	}
	if stop {
		t.tallies = nil
	}
	return out
}

// telemetryLoop writes the summed telemetry every TelemetryWindow until ctx ends.
func (p *Proxy) telemetryLoop(ctx context.Context) {
	defer p.flushing.Done()
	tick := time.NewTicker(p.opt.TelemetryWindow)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := p.flushTelemetry(ctx, false); err != nil && ctx.Err() == nil && p.logStore.allow() {
				// The writes were taken; they are on disk once the store commits them.
				p.log.Error("telemetry not yet durable", "error", err)
			}
		}
	}
}

// flushTelemetry writes what the tallies hold, then, if the Store is a Committer, waits
// until it is durable: a request's telemetry is durable within TelemetryWindow and a
// commit, as a Windowed write of its own was within the commit window. A refused write
// (a store limit such as max_contexts) is counted and logged, throttled; the requests it
// held are counted in Stats.TelemetryLost.
func (p *Proxy) flushTelemetry(ctx context.Context, stop bool) error {
	windows := p.tel.take(stop)
	if len(windows) == 0 && !stop {
		return nil
	}
	for _, w := range windows {
		if err := p.opt.Store.Apply(w.name, w.list); err != nil {
			p.stats.store.Add(1)
			p.stats.telemetryLost.Add(uint64(w.requests))
			if p.logStore.allow() {
				p.log.Error("telemetry lost: store refused it", "context", w.name, "requests", w.requests, "error", err)
			}
		}
	}
	if c, ok := p.opt.Store.(Committer); ok && len(windows) > 0 {
		if err := c.Commit(ctx); err != nil {
			return fmt.Errorf("proxy: telemetry of %d contexts not yet durable: %w", len(windows), err)
		}
	}
	return nil
}
