package proxy

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxprop/ctxprop/headers"
)

// The proxy's Prometheus metrics, collected from its counters at scrape time. They are the
// sidecar's own view of its traffic, over every context; the per-context telemetry of
// SPEC §5 goes to the Store.

// Sides of the proxy, the "direction" label: inbound (to the app) or outbound (from it).
const (
	sideInbound = iota
	sideOutbound
	numSides
)

var sideNames = [numSides]string{"inbound", "outbound"}

// Status codes are counted by their number, the http_response_status_code label of
// ctxprop_proxy_requests_total (the OpenTelemetry attribute http.response.status_code as
// Prometheus spells it). 499 is what the proxy records, never sends, when the client left
// before the answer (nginx's convention); an exchange that ended with no status, or with
// one outside 100-599, counts with the label empty, which Prometheus reads as absent, as
// OpenTelemetry leaves the attribute out when there is no response.
const (
	minStatus = 100
	maxStatus = 599
	// numCodes is one slot per status from minStatus to maxStatus and slot 0 for none.
	numCodes = maxStatus - minStatus + 2
)

// codeSlot is the slot of status in sideMetrics.codes.
func codeSlot(status int) int {
	if status < minStatus || status > maxStatus {
		return 0
	}
	return status - minStatus + 1
}

// codeLabels are the label values of the slots, made once: a scrape allocates no strings.
var codeLabels = func() (l [numCodes]string) {
	for s := minStatus; s <= maxStatus; s++ {
		l[codeSlot(s)] = strconv.Itoa(s)
	}
	return l
}()

// DurationBuckets are the upper bounds, in seconds, of the buckets of
// ctxprop_proxy_request_duration_seconds. They start below a millisecond: a hop inside a
// cluster usually takes less.
var DurationBuckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// durationBounds are DurationBuckets as durations, compared on the request path.
var durationBounds = func() (b [len(DurationBuckets)]time.Duration) {
	for i, s := range DurationBuckets {
		b[i] = time.Duration(s * float64(time.Second))
	}
	return b
}()

// requestMetrics counts the proxied exchanges. It sits on the request path, so it is
// atomics only: no lock, no allocation. The zero value is ready.
type requestMetrics struct {
	sides [numSides]sideMetrics
}

type sideMetrics struct {
	// codes[codeSlot(status)] counts the exchanges answered with status.
	codes [numCodes]atomic.Uint64
	// buckets[i] counts the requests that took at most durationBounds[i] and more than
	// the bound before; the last counts those over every bound. Cumulated at scrape time.
	buckets  [len(durationBounds) + 1]atomic.Uint64
	sumNanos atomic.Uint64
	// The 502 and 504 answers the proxy wrote itself.
	badGateway, gatewayTimeout atomic.Uint64
}

// observe counts one exchange when it ends. An upgraded exchange (WebSocket) counts
// without latency: its duration is that of a session, not of an answer.
func (m *requestMetrics) observe(ex *exchange, elapsed time.Duration) {
	side := sideOutbound
	if ex.inbound {
		side = sideInbound
	}
	s := &m.sides[side]
	s.codes[codeSlot(ex.status)].Add(1)
	if ex.failed {
		s.gatewayError(ex.status)
	}
	if ex.upgraded {
		return
	}
	i := 0
	for i < len(durationBounds) && elapsed > durationBounds[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(uint64(max(elapsed, 0)))
}

// gatewayError counts a 502 or 504 the proxy answered; other statuses are not its own.
func (s *sideMetrics) gatewayError(status int) {
	switch status {
	case http.StatusBadGateway:
		s.badGateway.Add(1)
	case http.StatusGatewayTimeout:
		s.gatewayTimeout.Add(1)
	}
}

// Collector exposes a Proxy's counts as Prometheus metrics named ctxprop_proxy_*. It reads
// the proxy's atomic counters when scraped and holds no state of its own. Register it on
// the registry the admin API serves:
//
//	adminServer.Registry().MustRegister(proxy.NewCollector(p))
type Collector struct {
	p *Proxy

	received, requests, duration, gateway    *prometheus.Desc
	headerErrors, droppedOps, storeErrors    *prometheus.Desc
	telemetryLost, fastHandovers             *prometheus.Desc
	tunnels, refusedMembers, closed, refused *prometheus.Desc

	transConns, transRefused, sniffTimeouts, transDialErrors, transOpen *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector of p's metrics.
func NewCollector(p *Proxy) *Collector {
	side := []string{"direction"}
	return &Collector{
		p: p,
		received: prometheus.NewDesc("ctxprop_proxy_received_total",
			"Requests received, by direction: the proxied ones, the ones the proxy refused itself (bad form, loops) and CONNECT tunnels.", side, nil),
		requests: prometheus.NewDesc("ctxprop_proxy_requests_total",
			`Proxied requests, by direction and status code sent to the client; 499 means the client left before the answer, an empty code that the exchange ended with none.`,
			[]string{"direction", "http_response_status_code"}, nil),
		duration: prometheus.NewDesc("ctxprop_proxy_request_duration_seconds",
			"Time from a proxied request's arrival to the end of its answer, by direction; WebSocket and other upgraded exchanges are not timed.", side, nil),
		gateway: prometheus.NewDesc("ctxprop_proxy_gateway_errors_total",
			"502 and 504 answers the proxy wrote itself because the upstream failed (the app inbound, the remote service or CONNECT target outbound).",
			[]string{"direction", "http_response_status_code"}, nil),
		headerErrors: prometheus.NewDesc("ctxprop_proxy_header_errors_total",
			"Malformed or refused context headers, by header; each was dropped and its request went through.", []string{"header"}, nil),
		droppedOps: prometheus.NewDesc("ctxprop_proxy_dropped_ops_total",
			"ctx-ops lists dropped because their request had no context (baggage ctx.name).", nil, nil),
		storeErrors: prometheus.NewDesc("ctxprop_proxy_store_errors_total",
			"Context writes from the request path (ctx-ops and telemetry) that the store refused; their ops are lost.", nil, nil),
		telemetryLost: prometheus.NewDesc("ctxprop_proxy_telemetry_lost_requests_total",
			"Inbound requests whose telemetry the store refused when the proxy wrote a commit window's sum (a store limit such as max_contexts, or a failed store); each refusal also counts in ctxprop_proxy_store_errors_total.", nil, nil),
		fastHandovers: prometheus.NewDesc("ctxprop_proxy_fast_path_handovers_total",
			"Inbound connections the fast path (inbound.fast_path) handed to the net/http path at a request boundary: h2c, Upgrade, CONNECT, Expect, HTTP/1.0, unusual or ambiguous framing, malformed heads or heads over 4 KiB.", nil, nil),
		tunnels: prometheus.NewDesc("ctxprop_proxy_tunnels_total",
			"CONNECT tunnels opened by the outbound proxy.", nil, nil),
		refusedMembers: prometheus.NewDesc("ctxprop_proxy_refused_members_total",
			"Context members (baggage ctx.name, ctx.flag.*) removed before the app or the next pod saw them, by direction and reason: "+
				"unsigned, bad_signature and stale_signature are inbound members not from a sidecar of this fleet nor a trusted source; "+
				"not_pinnable are flags not in flags.pinned. Their requests went through.",
			[]string{"direction", "reason"}, nil),
		closed: prometheus.NewDesc("ctxprop_proxy_closed_connections_total",
			"Client connections closed after a response because the request's framing could not be trusted (request smuggling defence, RFC 9112 §6.1, §6.3), by direction and reason: "+
				"content_length_and_transfer_encoding, transfer_encoding_http10, bare_lf, obs_fold, "+
				"unverified (the proxy could not follow the framing to or past the request), body_error (malformed or cut body), "+
				"body_unread (the answer ended before the body), body_timeout (no body data for inbound.body_timeout; over HTTP/2 the stream ends).",
			[]string{"direction", "reason"}, nil),
		refused: prometheus.NewDesc("ctxprop_proxy_refused_total",
			"Requests the proxy refused with 403, by direction and reason: loopback_target (a client outside the pod asked the outbound proxy for a loopback or unspecified address).",
			[]string{"direction", "reason"}, nil),
		transConns: prometheus.NewDesc("ctxprop_proxy_transparent_connections_total",
			"Redirected connections (sidecar intercept), by direction and by what their first bytes were: http1 and h2c get the header work, "+
				"tls and opaque (anything else, and clients silent for outbound.sniff_timeout) are spliced to their original destination untouched.",
			[]string{"direction", "protocol"}, nil),
		transRefused: prometheus.NewDesc("ctxprop_proxy_transparent_refused_total",
			"Connections the transparent listener refused, by reason: connection_limit (it held outbound.transparent_max_connections), "+
				"not_redirected (made to the listener itself, not redirected by a rule: forwarding it would loop), "+
				"not_local (redirected inbound, meant for an address that is not the pod's: the pod relays to no other host nor to its loopback).",
			[]string{"reason"}, nil),
		sniffTimeouts: prometheus.NewDesc("ctxprop_proxy_transparent_sniff_timeouts_total",
			"Redirected connections whose client sent too little to be recognised within outbound.sniff_timeout; they were spliced untouched.", side, nil),
		transDialErrors: prometheus.NewDesc("ctxprop_proxy_transparent_dial_errors_total",
			"Spliced redirected connections whose original destination could not be reached; the client's connection was reset.", side, nil),
		transOpen: prometheus.NewDesc("ctxprop_proxy_transparent_open_connections",
			"Connections the transparent listener holds now; at outbound.transparent_max_connections new ones are refused.", nil, nil),
	}
}

// Describe sends the descriptors of every metric Collect sends.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.received, c.requests, c.duration, c.gateway, c.headerErrors, c.droppedOps, c.storeErrors, c.telemetryLost, c.fastHandovers, c.tunnels, c.refusedMembers, c.closed, c.refused,
		c.transConns, c.transRefused, c.sniffTimeouts, c.transDialErrors, c.transOpen} {
		ch <- d
	}
}

// Collect sends the current values. Counters read one by one while requests go on may
// be a few requests apart from each other; each stays monotonic.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.received, st.Inbound, sideNames[sideInbound])
	counter(c.received, st.Outbound, sideNames[sideOutbound])
	for side := range numSides {
		s := &c.p.reqs.sides[side]
		name := sideNames[side]
		// Only the codes seen: a series for each of 500 codes would be noise.
		for code := range numCodes {
			if n := s.codes[code].Load(); n > 0 {
				counter(c.requests, n, name, codeLabels[code])
			}
		}
		counter(c.gateway, s.badGateway.Load(), name, strconv.Itoa(http.StatusBadGateway))
		counter(c.gateway, s.gatewayTimeout.Load(), name, strconv.Itoa(http.StatusGatewayTimeout))

		// The count is the sum of the buckets, so the +Inf bucket always equals it.
		cumulative := make(map[float64]uint64, len(DurationBuckets))
		var count uint64
		for i, le := range DurationBuckets {
			count += s.buckets[i].Load()
			cumulative[le] = count
		}
		count += s.buckets[len(DurationBuckets)].Load()
		sum := time.Duration(s.sumNanos.Load()).Seconds()
		ch <- prometheus.MustNewConstHistogram(c.duration, count, sum, cumulative, name)
	}
	for header, n := range st.HeaderErrors {
		counter(c.headerErrors, n, header)
	}
	counter(c.droppedOps, st.DroppedOps)
	counter(c.storeErrors, st.StoreErrors)
	counter(c.telemetryLost, st.TelemetryLost)
	counter(c.tunnels, st.Tunnels)
	counter(c.fastHandovers, st.FastPathHandovers)
	for side, reasons := range st.RefusedMembers {
		for why, n := range reasons {
			counter(c.refusedMembers, n, sideNames[side], headers.RefusalNames[why])
		}
	}
	for side := range numSides {
		for reason := reasonNone + 1; reason < numReasons; reason++ {
			counter(c.closed, c.p.stats.closes[side][reason].Load(), sideNames[side], reasonNames[reason])
		}
	}
	counter(c.refused, c.p.stats.loopbackRefused.Load(), sideNames[sideOutbound], "loopback_target")
	t := &c.p.trans
	for side := range numSides {
		for proto := range numProtos {
			counter(c.transConns, t.conns[side][proto].Load(), sideNames[side], protoNames[proto])
		}
		counter(c.sniffTimeouts, t.sniffTimeout[side].Load(), sideNames[side])
		counter(c.transDialErrors, t.dialErrors[side].Load(), sideNames[side])
	}
	for reason := range numTransRefusals {
		counter(c.transRefused, t.refused[reason].Load(), transRefusalNames[reason])
	}
	ch <- prometheus.MustNewConstMetric(c.transOpen, prometheus.GaugeValue, float64(t.open.Load()))
}
