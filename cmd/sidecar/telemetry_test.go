package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/proxy"
)

// TestTelemetry_DurableWithinTheWindowAcrossKill sends requests through a real sidecar's
// inbound proxy, SIGKILLs the process one commit window (plus a margin for an fsync on a
// busy machine, less than a window) after the last answer, restarts it on the same file,
// and finds every request counted: telemetry summed in memory is as durable as a Windowed
// write per request was (issue 14). A proxy that wrote its sums with a Windowed write of
// their own, waiting a second window, would lose them here.
func TestTelemetry_DurableWithinTheWindowAcrossKill(t *testing.T) {
	bin := buildSidecar(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	const window = time.Second
	in := freePort(t)
	env := map[string]string{
		"CTXPROP_STORE_PATH":                filepath.Join(t.TempDir(), "ctx.db"),
		"CTXPROP_STORE_COMMIT_WINDOW":       window.String(),
		"CTXPROP_STORE_CHECKPOINT_INTERVAL": "1h", // the kill finds the window in the log only
		"CTXPROP_INBOUND_ADDRESS":           in,
		"CTXPROP_INBOUND_APP":               strings.TrimPrefix(app.URL, "http://"),
		"CTXPROP_INBOUND_CONTEXT_BAGGAGE":   "ctx.name",
	}
	ctx := context.Background()
	var sent, failed int64
	for cycle := range 3 {
		p := startSidecar(t, bin, env)
		c := admin.NewClient(p.admin, &http.Client{Timeout: 10 * time.Second})
		if got, err := c.Counter(ctx, "killed", proxy.KeyRequests); sent > 0 && (err != nil || got != sent) {
			t.Fatalf("cycle %d: after the kill http.requests = %d (%v), want %d", cycle, got, err, sent)
		}
		if got, _ := c.Counter(ctx, "killed", proxy.KeyErrors); got != failed {
			t.Fatalf("cycle %d: after the kill http.errors = %d, want %d", cycle, got, failed)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := range 4 {
			wg.Go(func() {
				hc := &http.Client{Transport: &http.Transport{}}
				defer hc.CloseIdleConnections()
				for i := range 50 {
					path := "/"
					if (w+i)%7 == 0 {
						path = "/fail"
					}
					req, _ := http.NewRequest(http.MethodGet, "http://"+in+path, nil)
					req.Header.Set("Baggage", "ctx.name=killed")
					res, err := hc.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					mu.Lock()
					sent++
					if path == "/fail" {
						failed++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		// The property under test is a deadline, so this waits for it rather than for
		// an event: the window, and 400 ms for the flush's fsync.
		time.Sleep(window + 400*time.Millisecond)
		p.kill(t)
	}
	p := startSidecar(t, bin, env)
	c := admin.NewClient(p.admin, &http.Client{Timeout: 10 * time.Second})
	if got, err := c.Counter(ctx, "killed", proxy.KeyRequests); err != nil || got != sent {
		t.Fatalf("after the last kill http.requests = %d (%v), want %d", got, err, sent)
	}
	if got, _ := c.Counter(ctx, "killed", proxy.KeyErrors); got != failed {
		t.Fatalf("after the last kill http.errors = %d, want %d", got, failed)
	}
}
