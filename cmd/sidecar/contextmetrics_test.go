package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/proxy"
)

// TestContextMetrics_PerContextSeriesOnMetrics sends requests of four contexts through a
// real sidecar's inbound proxy, configured from HCL, and scrapes its admin /metrics:
// ctxprop_context_requests_total, _errors_total and the _request_duration_seconds
// histogram carry the stored telemetry of each exported context exactly, the histogram's
// bounds and sum in seconds; admin.context_metrics_max bounds the series, the contexts
// past it summed under context="_other", with admin.context_metrics always exported;
// 0 exports none. A context without telemetry never shows; one named "_other" is always
// folded, even when busy enough for the top, since two series of that label would fail
// the scrape.
func TestContextMetrics_PerContextSeriesOnMetrics(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(120 * time.Millisecond) // the latency under test, not synchronisation
		}
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	// The traffic: context -> paths, in order.
	traffic := map[string][]string{
		"quiet":  {"/"},
		"busy":   {"/", "/", "/", "/fail", "/fail", "/slow", "/slow"},
		"mid":    {"/", "/", "/"},
		"small":  {"/", "/fail"},
		"_other": {"/", "/", "/", "/"}, // a context of that name is always folded
	}
	type want struct{ requests, errors int64 }
	counts := map[string]want{"quiet": {1, 0}, "busy": {7, 2}, "mid": {3, 0}, "small": {2, 1}, "_other": {4, 0}}
	for _, tc := range []struct {
		name  string
		admin string // the admin block's extra attributes
		// own are the contexts with series of their own; folded are summed in _other.
		own, folded []string
	}{
		{"default fifty", "", []string{"quiet", "busy", "mid", "small"}, []string{"_other"}},
		{"top two with an allowed quiet one", "context_metrics_max = 2\ncontext_metrics = [\"quiet\"]", []string{"quiet", "busy"}, []string{"mid", "small", "_other"}},
		{"top two", "context_metrics_max = 2", []string{"busy", "mid"}, []string{"quiet", "small", "_other"}},
		{"off", "context_metrics_max = 0", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("admin {\n"+tc.admin+"\n}\n"), "test.hcl")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Node.Name = "metrics"
			cfg.Store.Path = filepath.Join(t.TempDir(), "ctxprop.db")
			cfg.Store.CommitWindow = 20 * time.Millisecond
			cfg.Inbound.App = app.Listener.Addr().String()
			cfg.Inbound.ContextBaggage = "ctx.name"
			n := startTestNode(t, cfg)
			ctx := context.Background()
			base := "http://" + n.admin.Addr().String()
			api := admin.NewClient(base, nil)
			// A context with a counter but no telemetry: never a series, never in _other.
			if _, err := api.Incr(ctx, "bystander", "visits", 9, 0); err != nil {
				t.Fatal(err)
			}
			hc := &http.Client{}
			for name, paths := range traffic {
				for _, path := range paths {
					req, _ := http.NewRequest(http.MethodGet, "http://"+n.proxy.InboundAddr().String()+path, nil)
					req.Header.Set("Baggage", "ctx.name="+name)
					res, err := hc.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			}
			// The proxy writes its sums once per commit window: poll the store.
			stored := map[string]map[string]int64{}
			deadline := time.Now().Add(10 * time.Second)
			for name, w := range counts {
				for {
					snap, err := api.Get(ctx, name)
					if err == nil && snap.Counters[proxy.KeyRequests] == w.requests {
						stored[name] = snap.Counters
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("context %s: %v, counters %v; want %d requests", name, err, snap.Counters, w.requests)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			// The collector rereads the contexts that changed every 5 s: poll /metrics
			// until it shows every request (none with the export off).
			var total float64
			if tc.own != nil {
				for _, w := range counts {
					total += float64(w.requests)
				}
			}
			body := scrapeAdmin(t, base)
			for exported := 0.0; ; body = scrapeAdmin(t, base) {
				exported = 0
				for _, m := range regexp.MustCompile(`(?m)^ctxprop_context_requests_total\{[^}]*\} (\S+)$`).FindAllStringSubmatch(body, -1) {
					v, _ := strconv.ParseFloat(m[1], 64)
					exported += v
				}
				if exported == total {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/metrics shows %v requests over the contexts, want %v:\n%s", exported, total, body)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// The stored counters, summed over the contexts given.
			sum := func(key string, names ...string) (v int64) {
				for _, name := range names {
					v += stored[name][key]
				}
				return v
			}
			check := func(label string, names ...string) {
				t.Helper()
				if got, want := seriesValue(t, body, `ctxprop_context_requests_total{context="`+label+`"}`), float64(sum(proxy.KeyRequests, names...)); got != want {
					t.Errorf("requests of %s = %v, want %v", label, got, want)
				}
				var errs int64
				for _, name := range names {
					errs += counts[name].errors
				}
				if got, want := seriesValue(t, body, `ctxprop_context_errors_total{context="`+label+`"}`), float64(errs); got != want {
					t.Errorf("errors of %s = %v, want %v", label, got, want)
				}
				h := `ctxprop_context_request_duration_seconds`
				for i, le := range []string{"0.005", "0.025", "0.1", "0.5", "2.5"} {
					if got, want := seriesValue(t, body, h+`_bucket{context="`+label+`",le="`+le+`"}`), float64(sum(proxy.BucketKeys[i], names...)); got != want {
						t.Errorf("bucket le=%s of %s = %v, want %v (stored %s)", le, label, got, want, proxy.BucketKeys[i])
					}
				}
				requests := float64(sum(proxy.KeyRequests, names...))
				if got := seriesValue(t, body, h+`_bucket{context="`+label+`",le="+Inf"}`); got != requests {
					t.Errorf("bucket +Inf of %s = %v, want %v", label, got, requests)
				}
				if got := seriesValue(t, body, h+`_count{context="`+label+`"}`); got != requests {
					t.Errorf("count of %s = %v, want %v", label, got, requests)
				}
				// The stored sum is in microseconds; the exported one in seconds.
				if got, want := seriesValue(t, body, h+`_sum{context="`+label+`"}`), float64(sum(proxy.KeyLatencySum, names...))/1e6; math.Abs(got-want) > 1e-9 {
					t.Errorf("sum of %s = %v s, want %v s", label, got, want)
				}
			}
			for _, name := range tc.own {
				check(name, name)
			}
			if tc.folded != nil {
				check(proxy.OtherContext, tc.folded...)
			}
			// Nothing else: the bound holds, the folded and bystander contexts have no
			// series, and there is an _other series only when something is folded.
			exported := map[string]bool{}
			for _, m := range regexp.MustCompile(`(?m)^ctxprop_context_\w+\{context="([^"]*)"`).FindAllStringSubmatch(body, -1) {
				exported[m[1]] = true
			}
			wantExported := map[string]bool{}
			for _, name := range tc.own {
				wantExported[name] = true
			}
			if tc.folded != nil {
				wantExported[proxy.OtherContext] = true
			}
			if fmt.Sprint(exported) != fmt.Sprint(wantExported) {
				t.Errorf("contexts with series = %v, want %v", exported, wantExported)
			}
			// Bounds in seconds, not the stored milliseconds.
			if m := regexp.MustCompile(`ctxprop_context_request_duration_seconds_bucket\{[^}]*le="(5|25|100|500|2500)"`).FindString(body); m != "" {
				t.Errorf("a bucket bound in milliseconds: %s", m)
			}
			// The slow requests of busy took at least 120 ms: past the 0.1 s bound.
			if wantExported["busy"] {
				if got := seriesValue(t, body, `ctxprop_context_request_duration_seconds_bucket{context="busy",le="0.1"}`); got > 5 {
					t.Errorf("busy: %v requests within 0.1 s, want at most the 5 fast ones", got)
				}
				if got := seriesValue(t, body, `ctxprop_context_request_duration_seconds_sum{context="busy"}`); got < 0.24 {
					t.Errorf("busy: duration sum %v s, want at least the 0.24 s of its two slow requests", got)
				}
			}
		})
	}
}

// scrapeAdmin returns the admin API's /metrics.
func scrapeAdmin(t *testing.T, base string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", res.Status, b)
	}
	return string(b)
}

// seriesValue returns the value of the series named exactly (name and labels as /metrics
// writes them), failing the test if there is none.
func seriesValue(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Errorf("no series %s", series)
		return math.NaN()
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Errorf("series %s: %v", series, err)
	}
	return v
}
