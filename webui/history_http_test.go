package webui_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/webui"
)

// getHistory reads GET /v1/history of n.
func (n *node) getHistory(t *testing.T) webui.HistoryAnswer {
	t.Helper()
	res, err := http.Get(n.url() + webui.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", webui.HistoryPath, res.Status, body)
	}
	if got, want := res.Header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	if got, want := res.Header.Get("Cache-Control"), "no-store"; got != want {
		t.Errorf("Cache-Control = %q, want %q", got, want)
	}
	var a webui.HistoryAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("GET %s: %v: %s", webui.HistoryPath, err, body)
	}
	return a
}

// totals sums the history's series: "requests <ctx>", "errors <ctx>", "flag <result>",
// and "lag <address>" (the newest lag, in ms).
func totals(a webui.HistoryAnswer) map[string]float64 {
	m := map[string]float64{}
	for _, c := range a.Contexts {
		for i := range a.Times {
			if v := c.Requests[i]; v != nil {
				m["requests "+c.Name] += float64(*v)
			}
			if v := c.Errors[i]; v != nil {
				m["errors "+c.Name] += float64(*v)
			}
		}
	}
	for _, f := range a.Flags {
		for _, v := range f.Counts {
			m["flag "+f.Result] += float64(v)
		}
	}
	for _, p := range a.Peers {
		for _, v := range p.Lag {
			if v != nil {
				m["lag "+p.Address] = *v * 1000
			}
		}
	}
	return m
}

// waitHistory polls GET /v1/history until the totals hold want, or fails at the deadline.
func waitHistory(t *testing.T, n *node, want map[string]float64) webui.HistoryAnswer {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := n.getHistory(t)
		got := totals(a)
		ok := true
		for k, v := range want {
			if got[k] != v {
				ok = false
			}
		}
		if ok {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s totals %v; want %v", webui.HistoryPath, got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

const flagDefinition = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`

// evaluate asks OFREP for flag key, as an OpenFeature provider does, and returns the status.
func (n *node) evaluate(t *testing.T, key string) int {
	t.Helper()
	res, err := http.Post(n.url()+"/ofrep/v1/evaluate/flags/"+key, "application/json", strings.NewReader(`{"context":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestHistory_Endpoint sends requests of two contexts through a real inbound proxy and
// evaluates flags through OFREP on the admin listener, then reads GET /v1/history over
// loopback: the samples hold exactly that traffic per context, its errors and its latency
// by bucket, the flag evaluations by result and the peer's lag.
func TestHistory_Endpoint(t *testing.T) {
	peers := staticPeers{{Name: "pod-b", Address: "127.0.0.1:7403", State: "alive", Lag: 150 * time.Millisecond}}
	n := startNode(t, nodeOptions{charts: true, peers: peers})
	n.call(t, "PUT", "/v1/flags/new-checkout", flagDefinition)
	for range 3 {
		if got, want := n.evaluate(t, "new-checkout"), http.StatusOK; got != want {
			t.Fatalf("OFREP evaluation: %d, want %d", got, want)
		}
	}
	if got, want := n.evaluate(t, "missing"), http.StatusNotFound; got != want {
		t.Fatalf("OFREP evaluation of a missing flag: %d, want %d", got, want)
	}
	for _, path := range []string{"/", "/", "/", "/", "/", "/fail", "/fail", "/slow"} {
		n.send(t, "shop", path)
	}
	n.send(t, "cart", "/")
	n.send(t, "cart", "/")

	a := waitHistory(t, n, map[string]float64{
		"requests shop": 8, "errors shop": 2, "requests cart": 2, "errors cart": 0,
		"flag STATIC": 3, "flag FLAG_NOT_FOUND": 1, "lag 127.0.0.1:7403": 150,
	})
	if got, want := a.Interval, 0.05; got != want {
		t.Errorf("interval = %v s, want %v", got, want)
	}
	if got, want := a.Window, 5.0; got != want {
		t.Errorf("window = %v s, want %v", got, want)
	}
	if len(a.Times) < 1 || len(a.Times) != len(a.Seconds) {
		t.Fatalf("times %v, seconds %v: want one of each per sample", a.Times, a.Seconds)
	}
	for i := 1; i < len(a.Times); i++ {
		if a.Times[i] < a.Times[i-1] {
			t.Fatalf("times not in order: %v", a.Times)
		}
	}
	if got, want := a.Contexts[0].Name, "shop"; got != want {
		t.Errorf("first context = %q, want the busiest, %q", got, want)
	}
	shop := a.Contexts[0]
	var inBuckets int64
	for _, v := range shop.Latency {
		inBuckets += v
	}
	if inBuckets != 8 {
		t.Errorf("shop latency buckets %v hold %d requests, want 8", shop.Latency, inBuckets)
	}
	// The slow request took 120 ms or more: above 100 ms, at most 2.5 s unless the
	// machine stalled.
	if slow := shop.Latency[3] + shop.Latency[4] + shop.Latency[5]; slow < 1 {
		t.Errorf("shop latency buckets %v: want the 120 ms request above the 100 ms bound", shop.Latency)
	}
	if shop.LatencySumSeconds < 0.12 {
		t.Errorf("shop latency sum = %v s, want at least the slow request's 0.12 s", shop.LatencySumSeconds)
	}
	if got, want := fmt.Sprint(a.LatencyBounds), "[0.005 0.025 0.1 0.5 2.5]"; got != want {
		t.Errorf("latency bounds = %s, want %s", got, want)
	}
	if got, want := a.Peers[0].Name, "pod-b"; got != want {
		t.Errorf("peer name = %q, want %q", got, want)
	}

	// Read-only: the admin API answers other methods with its JSON 405.
	req, _ := http.NewRequest(http.MethodPost, n.url()+webui.HistoryPath, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(string(body), `"method_not_allowed"`) {
		t.Errorf("POST %s: %s %s, want 405 method_not_allowed", webui.HistoryPath, res.Status, body)
	}
}
