package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/webui"
)

// TestCharts_History runs a sidecar configured from HCL, sends requests through its inbound
// proxy and reads GET /v1/history on its admin API: the ring sampled every
// admin.chart_interval holds that traffic per context, bounded by
// admin.context_metrics_max, and the page it serves has the charts. With
// admin.chart_interval = "0" there is no history: the route answers the API's 404, which
// the page shows as "no charts".
func TestCharts_History(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusBadGateway)
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	start := func(t *testing.T, adminBlock string) (adminURL, inbound string) {
		cfg, err := config.Parse([]byte("admin {\n"+adminBlock+"\n}\n"), "test.hcl")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Node.Name = "charts"
		cfg.Store.Path = filepath.Join(t.TempDir(), "ctxprop.db")
		cfg.Store.CommitWindow = 20 * time.Millisecond
		cfg.Inbound.App = app.Listener.Addr().String()
		cfg.Inbound.ContextBaggage = "ctx.name"
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		n := startTestNode(t, cfg)
		return "http://" + n.admin.Addr().String(), "http://" + n.proxy.InboundAddr().String()
	}
	send := func(t *testing.T, inbound, name, path string) {
		req, _ := http.NewRequest(http.MethodGet, inbound+path, nil)
		req.Header.Set("Baggage", "ctx.name="+name)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	get := func(t *testing.T, url string) (int, []byte) {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, body
	}

	t.Run("sampled", func(t *testing.T) {
		adminURL, inbound := start(t, "context_metrics_max = 1\nchart_interval = \"1s\"\nchart_window = \"1m\"")
		for range 5 {
			send(t, inbound, "busy", "/")
		}
		send(t, inbound, "busy", "/fail")
		send(t, inbound, "quiet", "/")
		// Sums over the samples: busy has a series of its own, quiet is in _other.
		want := map[string]int64{"busy": 6, "busy errors": 1, "_other": 1}
		var got map[string]int64
		var a webui.HistoryAnswer
		for deadline := time.Now().Add(15 * time.Second); ; {
			status, body := get(t, adminURL+webui.HistoryPath)
			if status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", webui.HistoryPath, status, body)
			}
			if err := json.Unmarshal(body, &a); err != nil {
				t.Fatal(err)
			}
			got = map[string]int64{}
			for _, c := range a.Contexts {
				for i := range a.Times {
					if v := c.Requests[i]; v != nil {
						got[c.Name] += *v
					}
					if v := c.Errors[i]; v != nil && *v > 0 {
						got[c.Name+" errors"] += *v
					}
				}
			}
			if len(got) == len(want) && got["busy"] == want["busy"] && got["busy errors"] == want["busy errors"] && got["_other"] == want["_other"] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("history sums %v, want %v", got, want)
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
		if got, want := a.Interval, 1.0; got != want {
			t.Errorf("interval = %v s, want %v (admin.chart_interval)", got, want)
		}
		if got, want := a.Window, 60.0; got != want {
			t.Errorf("window = %v s, want %v (admin.chart_window)", got, want)
		}
		if got, want := a.Max, 1; got != want {
			t.Errorf("max_series = %d, want %d (admin.context_metrics_max)", got, want)
		}
		if status, body := get(t, adminURL+"/"); status != http.StatusOK || !strings.Contains(string(body), `id="chart-requests"`) {
			t.Errorf("GET /: %d, want the page with its charts:\n%.300s", status, body)
		}
	})

	t.Run("off", func(t *testing.T) {
		adminURL, _ := start(t, "chart_interval = \"0\"")
		status, body := get(t, adminURL+webui.HistoryPath)
		if status != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("GET %s with no history: %d %s, want the API's 404", webui.HistoryPath, status, body)
		}
	})
}
