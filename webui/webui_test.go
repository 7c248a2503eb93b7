package webui_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/flags"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/proxy"
	"github.com/ctxprop/ctxprop/webui"
)

// node is a store and an admin API with the page mounted, on loopback; with
// nodeOptions.charts, also an app behind a real inbound proxy, the real flags and the
// History of the charts, wired as cmd/sidecar wires them.
type node struct {
	store   *localstore.Store
	admin   *admin.Server
	opt     nodeOptions
	log     hclog.Logger
	proxy   *proxy.Proxy
	flags   *flags.Flags
	history *webui.History
}

type nodeOptions struct {
	peers        admin.Peers
	flags        http.Handler // mounted at GET /v1/flags when not nil
	allowedHosts []string     // admin.Options.AllowedHosts
	// charts adds an app behind an inbound proxy writing telemetry to the store, the
	// flags package serving /v1/flags and OFREP, and a History sampling every
	// chartInterval (50 ms when 0) mounted at GET /v1/history.
	charts        bool
	chartInterval time.Duration
}

func startNode(t *testing.T, opt nodeOptions) *node {
	t.Helper()
	log := testLogger(t)
	store := localstore.New(localstore.Options{
		Path:   filepath.Join(t.TempDir(), "ctxprop.db"),
		Logger: log.Named("store"),
	})
	if err := store.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	n := &node{store: store, opt: opt, log: log}
	if opt.charts {
		n.startCharts(t)
	}
	n.admin = startAdmin(t, n, "127.0.0.1:0")
	return n
}

// startCharts starts what the charts read: an app behind the inbound proxy, the flags and
// the History.
func (n *node) startCharts(t *testing.T) {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		case "/slow":
			time.Sleep(120 * time.Millisecond) // the latency under test, not synchronisation
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(app.Close)
	p, err := proxy.New(proxy.Options{
		InboundAddress:  "127.0.0.1:0",
		App:             app.Listener.Addr().String(),
		Store:           requestPathStore{n.store},
		TelemetryWindow: 20 * time.Millisecond,
		ContextBaggage:  "ctx.name",
		Logger:          n.log.Named("proxy"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	n.proxy = p
	n.flags = flags.New(flags.Options{Store: n.store, Logger: n.log.Named("flags")})
	if err := n.flags.Open(); err != nil {
		t.Fatal(err)
	}
	interval := n.opt.chartInterval
	if interval == 0 {
		interval = 50 * time.Millisecond
	}
	n.history, err = webui.NewHistory(webui.HistoryOptions{
		Store:    n.store,
		Peers:    n.opt.peers,
		Flags:    n.flags,
		Interval: interval,
		Window:   100 * interval,
		Max:      50,
		Logger:   n.log.Named("history"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.history.Open(); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: these run after the admin server's Close. The page opens
	// no flag event stream that would hold that Close until the flags close.
	t.Cleanup(func() {
		if err := n.history.Close(); err != nil {
			t.Errorf("history Close: %v", err)
		}
		if err := n.flags.Close(); err != nil {
			t.Errorf("flags Close: %v", err)
		}
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("proxy Close: %v", err)
		}
	})
}

// requestPathStore gives the proxy the store as cmd/sidecar does: windowed writes, and a
// commit after each telemetry window.
type requestPathStore struct{ s *localstore.Store }

func (r requestPathStore) Apply(name string, list []ops.Op) error {
	_, err := r.s.Apply(context.Background(), name, list, localstore.Windowed)
	return err
}

func (r requestPathStore) Commit(ctx context.Context) error { return r.s.Sync(ctx) }

// send makes a request of context name through the inbound proxy and fails the test
// unless it gets an answer.
func (n *node) send(t *testing.T, name, path string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.proxy.InboundAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Baggage", "ctx.name="+name)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

// startAdmin serves the admin API of n's store, with the page, on address.
func startAdmin(t *testing.T, n *node, address string) *admin.Server {
	t.Helper()
	srv := admin.New(admin.Options{
		Address:      address,
		Store:        n.store,
		Peers:        n.opt.peers,
		AllowedHosts: n.opt.allowedHosts,
		Logger:       n.log.Named("admin"),
	})
	ui := webui.Handler()
	srv.Handle("GET /{$}", ui)
	srv.Handle("GET "+webui.AssetPrefix, ui)
	if n.opt.flags != nil {
		srv.Handle("GET /v1/flags", n.opt.flags)
	}
	if n.flags != nil {
		n.flags.Register(srv)
	}
	if n.history != nil {
		srv.Handle("GET "+webui.HistoryPath, n.history)
	}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("admin Close: %v", err)
		}
	})
	return srv
}

func (n *node) url() string { return "http://" + n.admin.Addr().String() }

// call sends a JSON request to the admin API and fails the test unless it succeeds.
func (n *node) call(t *testing.T, method, path, body string) {
	t.Helper()
	req, err := http.NewRequest(method, n.url()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, path, res.Status, b)
	}
}

func TestHandler(t *testing.T) {
	n := startNode(t, nodeOptions{})
	tests := []struct {
		method, path string
		status       int
		contentType  string
		contains     string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", `<script src="/ui/app.js"`},
		{"HEAD", "/", 200, "text/html; charset=utf-8", ""},
		{"GET", "/ui/app.js", 200, "text/javascript; charset=utf-8", "new EventSource("},
		{"GET", "/ui/style.css", 200, "text/css; charset=utf-8", "@keyframes flash"},
		{"GET", "/ui/missing.js", 404, "", ""},
		// The page takes the root only: other paths keep the admin API's JSON 404.
		{"GET", "/index.html", 404, "application/json", `"code"`},
		{"POST", "/", 405, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, n.url()+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.StatusCode, tt.status; got != want {
				t.Fatalf("status = %d, want %d; body %s", got, want, body)
			}
			if tt.contentType != "" && !strings.HasPrefix(res.Header.Get("Content-Type"), tt.contentType) {
				t.Errorf("Content-Type = %q, want %q", res.Header.Get("Content-Type"), tt.contentType)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q:\n%.300s", tt.contains, body)
			}
			if tt.status == 200 {
				if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
					t.Errorf("Content-Security-Policy = %q, want script-src 'self'", csp)
				}
				if got, want := res.Header.Get("X-Content-Type-Options"), "nosniff"; got != want {
					t.Errorf("X-Content-Type-Options = %q, want %q", got, want)
				}
			}
		})
	}
}

func TestHandler_ETag(t *testing.T) {
	n := startNode(t, nodeOptions{})
	res, err := http.Get(n.url() + "/ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req, _ := http.NewRequest("GET", n.url()+"/ui/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusNotModified; got != want {
		t.Errorf("status with If-None-Match = %d, want %d", got, want)
	}
}

// staticPeers stands in for the sync layer at its interface: the page renders what
// GET /v1/peers answers, whoever computes it.
type staticPeers []admin.PeerStatus

func (p staticPeers) Peers() []admin.PeerStatus { return append([]admin.PeerStatus(nil), p...) }

// flagsDocument answers GET /v1/flags with doc, in the shape of flags.ListAnswer: the
// page depends on the JSON, not on the flags package, which only the charts' tests run.
func flagsDocument(doc map[string]any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	})
}

// testLogger routes logs to t.Log until the test is over.
func testLogger(t testing.TB) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: "webui", Output: w, Level: hclog.Info})
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

// urlPathEscape percent-encodes s as one path segment, as SPEC §3a asks of names.
func urlPathEscape(s string) string { return url.PathEscape(s) }
