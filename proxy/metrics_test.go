package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/ctxprop/ctxprop/ops"
)

func TestRequestMetrics_Observe(t *testing.T) {
	tests := []struct {
		name    string
		ex      exchange
		elapsed time.Duration
		code    int // the status counted, 0 for none
		bucket  int // -1: not timed
		gateway int // status counted as a gateway error, or 0
	}{
		{"ok", exchange{inbound: true, status: 200}, 300 * time.Microsecond, 200, 0, 0},
		{"on a bound", exchange{inbound: true, status: 204}, time.Millisecond, 204, 1, 0},
		{"just over a bound", exchange{status: 301}, time.Millisecond + 1, 301, 2, 0},
		{"app 503", exchange{inbound: true, status: 503}, 7 * time.Millisecond, 503, 4, 0},
		{"proxy 502", exchange{inbound: true, status: 502, failed: true}, 2 * time.Millisecond, 502, 2, 502},
		{"proxy 504", exchange{status: 504, failed: true}, 11 * time.Second, 504, len(DurationBuckets), 504},
		{"app 502 is the app's", exchange{status: 502}, time.Millisecond, 502, 1, 0},
		{"stream cut after 200", exchange{status: 200, failed: true}, time.Millisecond, 200, 1, 0},
		{"client gone", exchange{status: statusClientGone}, time.Second, 499, 10, 0},
		{"404", exchange{status: 404}, time.Millisecond, 404, 1, 0},
		{"websocket", exchange{inbound: true, status: 101, upgraded: true}, time.Hour, 101, -1, 0},
		{"last code", exchange{status: 599}, time.Millisecond, 599, 1, 0},
		{"no status", exchange{}, time.Millisecond, 0, 1, 0},
		{"out of range", exchange{status: 600}, time.Millisecond, 0, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m requestMetrics
			m.observe(&tt.ex, tt.elapsed)
			side, other := sideOutbound, sideInbound
			if tt.ex.inbound {
				side, other = sideInbound, sideOutbound
			}
			s := &m.sides[side]
			for c := range numCodes {
				want := uint64(0)
				if c == codeSlot(tt.code) {
					want = 1
				}
				if got := s.codes[c].Load(); got != want {
					t.Errorf("code %q = %d, want %d", codeLabels[c], got, want)
				}
				if got := m.sides[other].codes[c].Load(); got != 0 {
					t.Errorf("other direction's code %q = %d, want 0", codeLabels[c], got)
				}
			}
			for b := range s.buckets {
				want := uint64(0)
				if b == tt.bucket {
					want = 1
				}
				if got := s.buckets[b].Load(); got != want {
					t.Errorf("bucket %d = %d, want %d", b, got, want)
				}
			}
			wantSum := uint64(tt.elapsed)
			if tt.bucket < 0 {
				wantSum = 0
			}
			if got := s.sumNanos.Load(); got != wantSum {
				t.Errorf("sum = %d ns, want %d", got, wantSum)
			}
			if got, want := s.badGateway.Load() == 1, tt.gateway == 502; got != want {
				t.Errorf("502 counted: %v, want %v", got, want)
			}
			if got, want := s.gatewayTimeout.Load() == 1, tt.gateway == 504; got != want {
				t.Errorf("504 counted: %v, want %v", got, want)
			}
		})
	}
}

// failingStore refuses every write, as a full or closed store does.
type failingStore struct{}

func (failingStore) Apply(string, []ops.Op) error { return errors.New("store closed") }

// TestCollector drives real traffic through both sides of a proxy and reads the metrics
// through a registry, as a scrape of GET /metrics does.
func TestCollector(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/missing":
			w.WriteHeader(http.StatusNotFound)
		default:
			io.WriteString(w, "ok")
		}
	}))
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL), Store: failingStore{}, TrustedSources: loopback})
	down := startProxy(t, Options{App: closedAddr(t)})
	// A registry per proxy, since their series have the same labels; the pedantic one
	// checks that Collect sends only what Describe declared.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(p))
	regDown := prometheus.NewPedanticRegistry()
	regDown.MustRegister(NewCollector(down))

	in := "http://" + p.InboundAddr().String()
	for _, r := range []struct {
		path    string
		headers map[string]string
	}{
		{"/", map[string]string{"Baggage": "ctx.name=orders"}}, // telemetry write refused by the store
		{"/", map[string]string{"Traceparent": "00-garbage"}},
		{"/fail", nil},
	} {
		get(t, http.DefaultClient, in+r.path, r.headers)
	}
	res, _ := get(t, http.DefaultClient, "http://"+down.InboundAddr().String()+"/", nil)
	if got, want := res.StatusCode, http.StatusBadGateway; got != want {
		t.Fatalf("inbound to a closed app: status %d, want %d", got, want)
	}

	c := proxiedClient(t, p)
	get(t, c, app.URL+"/missing", map[string]string{"Ctx-Ops": `incr;key="x"`}) // no context: ops dropped
	get(t, c, "http://"+closedAddr(t)+"/", nil)
	if got, want := connectTo(t, p, closedAddr(t)), http.StatusBadGateway; got != want {
		t.Fatalf("CONNECT to a closed port: status %d, want %d", got, want)
	}

	waitMetrics(t, reg, `
# HELP ctxprop_proxy_requests_total Proxied requests, by direction and status code sent to the client; 499 means the client left before the answer, an empty code that the exchange ended with none.
# TYPE ctxprop_proxy_requests_total counter
ctxprop_proxy_requests_total{direction="inbound",http_response_status_code="200"} 2
ctxprop_proxy_requests_total{direction="inbound",http_response_status_code="503"} 1
ctxprop_proxy_requests_total{direction="outbound",http_response_status_code="404"} 1
ctxprop_proxy_requests_total{direction="outbound",http_response_status_code="502"} 1
# HELP ctxprop_proxy_received_total Requests received, by direction: the proxied ones, the ones the proxy refused itself (bad form, loops) and CONNECT tunnels.
# TYPE ctxprop_proxy_received_total counter
ctxprop_proxy_received_total{direction="inbound"} 3
ctxprop_proxy_received_total{direction="outbound"} 3
# HELP ctxprop_proxy_gateway_errors_total 502 and 504 answers the proxy wrote itself because the upstream failed (the app inbound, the remote service or CONNECT target outbound).
# TYPE ctxprop_proxy_gateway_errors_total counter
ctxprop_proxy_gateway_errors_total{direction="inbound",http_response_status_code="502"} 0
ctxprop_proxy_gateway_errors_total{direction="outbound",http_response_status_code="502"} 2
ctxprop_proxy_gateway_errors_total{direction="inbound",http_response_status_code="504"} 0
ctxprop_proxy_gateway_errors_total{direction="outbound",http_response_status_code="504"} 0
# HELP ctxprop_proxy_header_errors_total Malformed or refused context headers, by header; each was dropped and its request went through.
# TYPE ctxprop_proxy_header_errors_total counter
ctxprop_proxy_header_errors_total{header="baggage"} 0
ctxprop_proxy_header_errors_total{header="ctx-ops"} 0
ctxprop_proxy_header_errors_total{header="other"} 0
ctxprop_proxy_header_errors_total{header="traceparent"} 1
ctxprop_proxy_header_errors_total{header="tracestate"} 0
# HELP ctxprop_proxy_dropped_ops_total ctx-ops lists dropped because their request had no context (baggage ctx.name).
# TYPE ctxprop_proxy_dropped_ops_total counter
ctxprop_proxy_dropped_ops_total 1
# HELP ctxprop_proxy_store_errors_total Context writes from the request path (ctx-ops and telemetry) that the store refused; their ops are lost.
# TYPE ctxprop_proxy_store_errors_total counter
ctxprop_proxy_store_errors_total 1
# HELP ctxprop_proxy_tunnels_total CONNECT tunnels opened by the outbound proxy.
# TYPE ctxprop_proxy_tunnels_total counter
ctxprop_proxy_tunnels_total 1
`)
	waitMetrics(t, regDown, `
# HELP ctxprop_proxy_gateway_errors_total 502 and 504 answers the proxy wrote itself because the upstream failed (the app inbound, the remote service or CONNECT target outbound).
# TYPE ctxprop_proxy_gateway_errors_total counter
ctxprop_proxy_gateway_errors_total{direction="inbound",http_response_status_code="502"} 1
ctxprop_proxy_gateway_errors_total{direction="outbound",http_response_status_code="502"} 0
ctxprop_proxy_gateway_errors_total{direction="inbound",http_response_status_code="504"} 0
ctxprop_proxy_gateway_errors_total{direction="outbound",http_response_status_code="504"} 0
`)

	// The latency histograms: every timed request in one bucket, the sum positive.
	for _, h := range []struct {
		side  string
		count uint64
	}{{"inbound", 3}, {"outbound", 2}} {
		hist := histogram(t, reg, "ctxprop_proxy_request_duration_seconds", h.side)
		if got, want := hist.GetSampleCount(), h.count; got != want {
			t.Errorf("%s: histogram count %d, want %d", h.side, got, want)
		}
		if hist.GetSampleSum() <= 0 {
			t.Errorf("%s: histogram sum %v, want > 0", h.side, hist.GetSampleSum())
		}
		b := hist.GetBucket()
		if got, want := len(b), len(DurationBuckets); got != want {
			t.Fatalf("%s: %d buckets, want %d", h.side, got, want)
		}
		for i := 1; i < len(b); i++ {
			if b[i].GetCumulativeCount() < b[i-1].GetCumulativeCount() {
				t.Errorf("%s: bucket le=%v count %d below the previous one's %d", h.side, b[i].GetUpperBound(), b[i].GetCumulativeCount(), b[i-1].GetCumulativeCount())
			}
		}
		if last := b[len(b)-1].GetCumulativeCount(); last != h.count {
			t.Errorf("%s: le=10 bucket %d, want every request (%d): a local request takes less than 10s", h.side, last, h.count)
		}
	}
}

// connectTo asks the outbound proxy p for a CONNECT tunnel to target and returns the
// status of the answer.
func connectTo(t *testing.T, p *Proxy, target string) int {
	t.Helper()
	conn, err := net.Dial("tcp", p.OutboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// waitMetrics polls reg until the metrics named in want have the values of want (the
// Prometheus text format): the proxy counts a request as its handler returns, which may
// be just after the client has read the answer.
func waitMetrics(t *testing.T, reg *prometheus.Registry, want string) {
	t.Helper()
	var names []string
	for _, line := range strings.Split(want, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names = append(names, strings.Fields(name)[0])
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func histogram(t *testing.T, reg *prometheus.Registry, name, side string) *dto.Histogram {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "direction" && l.GetValue() == side {
					return m.GetHistogram()
				}
			}
		}
	}
	t.Fatalf("no %s{direction=%q}", name, side)
	return nil
}
