package admin

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// watchRoute is left out of the duration histogram: a watch lasts as long as its client
// stays, which would swamp the buckets that matter.
const watchRoute = "GET /v1/watch"

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	refused  *prometheus.CounterVec
}

func newHTTPMetrics() *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ctxprop_admin_requests_total",
			Help: "Admin API requests by method, route pattern (empty: no route took the request) and status code.",
		}, []string{"http_request_method", "http_route", "http_response_status_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ctxprop_admin_request_duration_seconds",
			Help: "Admin API request duration by method and route pattern, watch streams excluded. Writes include their fsync.",
			// From a cached read (~50µs) to a slow fsync under load (~1s).
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"http_request_method", "http_route"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ctxprop_admin_refused_total",
			Help: "Admin API requests refused as possibly sent by a web page: reason host (Host not loopback, localhost or in admin.allowed_hosts), origin (a write from another origin) or simple_request (a write without a JSON Content-Type or X-Requested-By).",
		}, []string{"reason"}),
	}
	for _, reason := range []string{refusedHost, refusedOrigin, refusedSimple} {
		m.refused.WithLabelValues(reason) // shown at 0 before the first refusal
	}
	return m
}

// observe counts a request that pattern (a mux pattern, "METHOD /path", or
// unmatchedRoute) took. The labels are the OpenTelemetry HTTP server attributes
// http.request.method, http.route and http.response.status_code as Prometheus spells them:
// the method comes from the pattern, or is the request's when it is a standard one and
// _OTHER if not, as OpenTelemetry says, so that a client cannot make up series.
func (m *httpMetrics) observe(pattern, method string, status int, d time.Duration) {
	route := ""
	if pattern != unmatchedRoute {
		route = pattern
		if m, path, ok := strings.Cut(pattern, " "); ok {
			method, route = m, path
		}
	}
	if !knownMethods[method] {
		method = "_OTHER"
	}
	m.requests.WithLabelValues(method, route, statusLabel(status)).Inc()
	if pattern != watchRoute {
		m.duration.WithLabelValues(method, route).Observe(d.Seconds())
	}
}

// statusLabel is strconv.Itoa(status), without an allocation per request for the
// statuses the API answers most.
func statusLabel(status int) string {
	switch status {
	case http.StatusOK:
		return "200"
	case http.StatusNoContent:
		return "204"
	}
	return strconv.Itoa(status)
}

// knownMethods are the methods of RFC 9110 and PATCH (RFC 5789), the set OpenTelemetry
// calls known.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodDelete: true, http.MethodConnect: true, http.MethodOptions: true,
	http.MethodTrace: true, http.MethodPatch: true,
}

// registerMetrics registers the server's collectors. The Go and process collectors are
// registered too unless the caller's registry already has them.
func (s *Server) registerMetrics() {
	for _, c := range []prometheus.Collector{
		s.metrics.requests,
		s.metrics.duration,
		s.metrics.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ctxprop_admin_requests_in_flight",
			Help: "Admin API requests being served, watch streams included.",
		}, func() float64 { return float64(s.inFlight.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ctxprop_admin_connections_total",
			Help: "Connections the admin listener accepted; far more than requests means clients do not keep connections alive.",
		}, func() float64 { return float64(s.conns.Load()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := s.reg.Register(c); err != nil {
			if _, dup := err.(prometheus.AlreadyRegisteredError); !dup {
				s.log.Warn("metrics collector not registered", "error", err)
			}
		}
	}
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: s.log.StandardLogger(nil)})
}
