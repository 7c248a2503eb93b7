package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/hashicorp/go-hclog"
)

// TestNode_RequestContextTTL checks the wiring of store.request_context_ttl on a real
// sidecar: a context that the app's ctx-ops create through the outbound proxy expires
// after it, while one created through the admin API keeps no expiry when the proxy
// writes to it later.
func TestNode_RequestContextTTL(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer upstream.Close()
	cfg := config.DefaultConfig()
	cfg.Node.Name = "ttl"
	cfg.Store.Path = filepath.Join(t.TempDir(), "ctxprop.db")
	cfg.Store.RequestContextTTL = 3 * time.Hour
	cfg.Inbound.App = upstream.Listener.Addr().String()
	n := startTestNode(t, cfg)
	ctx := context.Background()
	api := admin.NewClient("http://"+n.admin.Addr().String(), nil)
	app := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: n.proxy.OutboundAddr().String()})}}
	call := func(name string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, upstream.URL, nil)
		req.Header.Set("Baggage", "ctx.name="+name)
		req.Header.Set("Ctx-Ops", `incr;key="calls"`)
		resp, err := app.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// get polls for the context: the request path's write need not be visible by the
	// time the response is.
	get := func(name string) localstore.Snapshot {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			snap, err := api.Get(ctx, name)
			if err == nil && snap.Counters["calls"] > 0 {
				return snap
			}
			if time.Now().After(deadline) {
				t.Fatalf("context %s after the request: %+v, %v", name, snap, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	before := time.Now()
	call("made-by-request")
	snap := get("made-by-request")
	if snap.ExpiresAt == nil || snap.ExpiresAt.Before(before.Add(3*time.Hour).Add(-time.Second)) || snap.ExpiresAt.After(time.Now().Add(3*time.Hour)) {
		t.Errorf("a context the request path created expires at %v, want about %v", snap.ExpiresAt, before.Add(3*time.Hour))
	}
	if _, err := api.Incr(ctx, "made-by-admin", "n", 1, 0); err != nil {
		t.Fatal(err)
	}
	call("made-by-admin")
	if snap := get("made-by-admin"); snap.ExpiresAt != nil {
		t.Errorf("an admin-created context expires at %v after a request wrote to it, want never", snap.ExpiresAt)
	}
}

// startTestNode starts a sidecar in this process on cfg with every listener on an
// ephemeral loopback port, logging to the test, and closes it when the test ends.
func startTestNode(t *testing.T, cfg config.Config) *node {
	t.Helper()
	cfg.Admin.Address = "127.0.0.1:0"
	cfg.Inbound.Address = "127.0.0.1:0"
	cfg.Outbound.Address = "127.0.0.1:0"
	cfg.Outbound.TransparentAddress = "127.0.0.1:0"
	cfg.Sync.Address = "127.0.0.1:0"
	n, err := startNode(cfg, hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: t.Output()}), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return n
}
