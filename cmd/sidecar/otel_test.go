package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/config"
	"github.com/hashicorp/go-hclog"
)

// collector is an OTLP/HTTP receiver on loopback that keeps what it is sent, by path.
type collector struct {
	mu     sync.Mutex
	bodies map[string][][]byte
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.bodies[r.URL.Path] = append(c.bodies[r.URL.Path], b)
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
}

func (c *collector) has(path, text string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.bodies[path] {
		if bytes.Contains(b, []byte(text)) {
			return true
		}
	}
	return false
}

// TestOTLP_ExportsTracesAndMetrics runs a sidecar with tracing on against a real OTLP/HTTP
// receiver: a proxied request's span and the Prometheus metrics (through the bridge) arrive,
// the per-context telemetry among them.
func TestOTLP_ExportsTracesAndMetrics(t *testing.T) {
	col := &collector{bodies: map[string][][]byte{}}
	srv := httptest.NewServer(col)
	defer srv.Close()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer app.Close()

	cfg := config.DefaultConfig()
	cfg.Node.Name = "otel-test"
	cfg.Store.Path = filepath.Join(t.TempDir(), "ctx.db")
	cfg.Admin.Address, cfg.Inbound.Address, cfg.Outbound.Address, cfg.Sync.Address = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Outbound.TransparentAddress = "127.0.0.1:0"
	cfg.Inbound.App = strings.TrimPrefix(app.URL, "http://")
	cfg.Tracing.Enabled = true
	cfg.Tracing.OTLPEndpoint = strings.TrimPrefix(srv.URL, "http://")
	// An edge sidecar, so that the request's context is believed and gets telemetry,
	// which the per-context metrics export (issue 16).
	cfg.Inbound.ContextBaggage = "ctx.name"

	ctx := context.Background()
	tp, err := newTracerProvider(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := startNode(cfg, hclog.NewNullLogger(), tp)
	if err != nil {
		t.Fatal(err)
	}
	mp, err := newMeterProvider(ctx, cfg, n.admin.Registry(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.close(sctx); err != nil {
			t.Error(err)
		}
		if err := mp.Shutdown(sctx); err != nil {
			t.Error(err)
		}
		if err := tp.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	}()

	req, _ := http.NewRequest(http.MethodGet, "http://"+n.proxy.InboundAddr().String()+"/traced", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	req.Header.Set("baggage", "ctx.name=otel-checkout")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !(col.has("/v1/traces", "ctxprop-sidecar") && col.has("/v1/metrics", "ctxprop_store_commits")) {
		if time.Now().After(deadline) {
			t.Fatalf("collector got traces=%v metrics=%v", col.has("/v1/traces", ""), col.has("/v1/metrics", ""))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The per-context telemetry, with its context as an attribute. The collector reads
	// the store at most every 5 s, so the first export may predate the request's window.
	for !(col.has("/v1/metrics", "ctxprop_context_request_duration_seconds") && col.has("/v1/metrics", "otel-checkout")) {
		if time.Now().After(deadline) {
			t.Fatalf("the per-context metrics of otel-checkout never reached the OTLP receiver")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
