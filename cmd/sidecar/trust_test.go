package main

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
)

// TestTrust_RealSidecars runs two `sidecar run` processes of one keyed fleet, each in
// front of an app of the test, on real sockets (SPEC §4a, issue 10 items 2 and 3):
//   - a caller outside the fleet that names a context and pins flags on B's inbound port
//     creates no context, and B's app sees neither the members nor ctx-flag-* headers;
//   - app A's call to B through A's outbound proxy carries its context, which B keeps
//     (signed by A), records telemetry in and hands to its app with the pinned flag;
//   - a flag that is not in flags.pinned is pinned by nobody.
func TestTrust_RealSidecars(t *testing.T) {
	bin := buildSidecar(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "fleet.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString([]byte("trust-test-fleet-secret-32-bytes"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seen := make(chan http.Header, 8)
	appB := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	inB, syncA, syncB := freePort(t), freePort(t), freePort(t)
	common := map[string]string{
		"CTXPROP_SYNC_KEY_FILE": keyFile,
		"CTXPROP_FLAGS_PINNED":  "new-ui",
		"CTXPROP_SYNC_PEERS":    syncA + "," + syncB,
	}
	env := func(m map[string]string) map[string]string {
		for k, v := range common {
			m[k] = v
		}
		return m
	}
	b := startSidecar(t, bin, env(map[string]string{
		"CTXPROP_NODE_NAME": "b", "CTXPROP_STORE_PATH": filepath.Join(dir, "b.db"),
		"CTXPROP_INBOUND_ADDRESS": inB, "CTXPROP_INBOUND_APP": appB, "CTXPROP_SYNC_ADDRESS": syncB,
	}))
	outA := freePort(t)
	a := startSidecar(t, bin, env(map[string]string{
		"CTXPROP_NODE_NAME": "a", "CTXPROP_STORE_PATH": filepath.Join(dir, "a.db"),
		"CTXPROP_OUTBOUND_ADDRESS": outA, "CTXPROP_SYNC_ADDRESS": syncA,
	}))
	clientB := admin.NewClient(b.admin, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// An outsider on B's inbound port.
	send(t, http.DefaultClient, "http://"+inB+"/", map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"baggage":     "ctx.name=forged-by-outsider,ctx.flag.new-ui=on,ctx.flag.admin=true,user=eve",
	})
	h := <-seen
	if got, want := h.Get("Baggage"), "user=eve"; got != want {
		t.Errorf("B's app saw baggage %q from an outsider, want only %q", got, want)
	}
	for _, k := range []string{"Ctx-Flag-Admin", "Ctx-Flag-New-Ui"} {
		if v := h.Get(k); v != "" {
			t.Errorf("B's app got %s: %s from an outsider", k, v)
		}
	}

	// App A, through its own sidecar's outbound proxy, to B.
	proxyA := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: outA})}}
	send(t, proxyA, "http://"+inB+"/pay", map[string]string{
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
		"baggage":     "ctx.name=order-1001,ctx.flag.new-ui=on,ctx.flag.admin=true",
	})
	h = <-seen
	if got, want := h.Get("Baggage"), "ctx.name=order-1001,ctx.flag.new-ui=on"; got != want {
		t.Errorf("B's app saw baggage %q from A, want %q (signed by A; admin is not pinnable)", got, want)
	}
	if got, want := h.Get("Ctx-Flag-New-Ui"), "on"; got != want {
		t.Errorf("B's app got Ctx-Flag-New-Ui %q from A, want %q", got, want)
	}
	if v := h.Get("Ctx-Flag-Admin"); v != "" {
		t.Errorf("B's app got Ctx-Flag-Admin: %s, a flag not in flags.pinned", v)
	}
	if v := h.Get("Ctx-Sig"); v != "" {
		t.Errorf("the ctx-sig reached B's app: %s", v)
	}

	// B counted A's request in order-1001, and nothing in the outsider's name; the
	// replicated view on A agrees.
	for _, c := range []*admin.Client{clientB, admin.NewClient(a.admin, nil)} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			v, err := c.Counter(ctx, "order-1001", "http.requests")
			if err == nil && v == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("order-1001 http.requests = %d, %v; want 1", v, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if snap, err := clientB.Get(ctx, "forged-by-outsider"); err == nil {
		t.Errorf("the outsider created a context: %+v", snap)
	}
	metrics := fetch(t, b.admin+"/metrics")
	for _, want := range []string{
		`ctxprop_proxy_refused_members_total{direction="inbound",reason="unsigned"} 3`,
		`ctxprop_proxy_refused_members_total{direction="outbound",reason="not_pinnable"} 1`,
	} {
		if !strings.Contains(metrics, want) && !strings.Contains(fetch(t, a.admin+"/metrics"), want) {
			t.Errorf("neither sidecar's /metrics has %s", want)
		}
	}
}

// serveApp serves h on a loopback port until the test ends and returns its address.
func serveApp(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func send(t *testing.T, c *http.Client, rawURL string, hdr map[string]string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %s", rawURL, res.Status)
	}
}

func fetch(t *testing.T, rawURL string) string {
	t.Helper()
	res, err := http.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
