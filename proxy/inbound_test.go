package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ops"
)

const (
	testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTracestate  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
)

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v // net/http sends req.Host, not a Host header
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

func TestInbound_ForwardsToApp(t *testing.T) {
	var seen http.Header
	var seenHost string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, seenHost = r.Header.Clone(), r.Host
		w.Header().Set("Ctx-Ops", `incr;key="app.replies"`)
		w.Header().Set("X-App", "yes")
		io.WriteString(w, "hello from app")
	}))
	defer app.Close()
	store := newMemStore()
	p := startProxy(t, Options{App: hostOf(app.URL), Store: store, TrustedSources: loopback})

	res, body := get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/x?q=1", map[string]string{
		"Host":            "orders.svc",
		"Baggage":         "ctx.name=orders,other=1",
		"Traceparent":     testTraceparent,
		"Tracestate":      testTracestate,
		"Ctx-Ops":         `incr;key="from.outside"`,
		"Connection":      "X-Hop",
		"X-Hop":           "must not pass",
		"X-Forwarded-For": "10.0.0.9",
	})
	if got, want := res.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status %d, want %d; body %q", got, want, body)
	}
	if got, want := body, "hello from app"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
	if got := res.Header.Get("Ctx-Ops"); got != "" {
		t.Errorf("the app's ctx-ops left the pod: %q", got)
	}
	if got, want := res.Header.Get("X-App"), "yes"; got != want {
		t.Errorf("X-App %q, want %q", got, want)
	}
	for _, c := range []struct{ header, want string }{
		{"Traceparent", testTraceparent}, // tracing off: byte for byte
		{"Tracestate", testTracestate},
		{"Baggage", "ctx.name=orders,other=1"},
		{"Ctx-Ops", ""},    // not trusted from another pod
		{"X-Hop", ""},      // named in Connection: hop-by-hop
		{"Connection", ""}, // hop-by-hop
		{"X-Forwarded-For", "10.0.0.9, 127.0.0.1"},
		{"X-Forwarded-Proto", "http"},
	} {
		if got := seen.Get(c.header); got != c.want {
			t.Errorf("app saw %s %q, want %q", c.header, got, c.want)
		}
	}
	if got, want := seenHost, "orders.svc"; got != want {
		t.Errorf("app saw Host %q, want %q", got, want)
	}

	store.waitCounter(t, "orders", KeyRequests, 1)
	for _, c := range []struct {
		key  string
		want int64
	}{
		{"app.replies", 1},
		{"from.outside", 0},
		{KeyErrors, 0},
		{"http.latency_us_le_2500000", 1},
	} {
		if got := store.counter("orders", c.key); got != c.want {
			t.Errorf("counter %s = %d, want %d", c.key, got, c.want)
		}
	}
	if got, want := store.callCount(), 2; got != want {
		t.Errorf("%d Store.Apply calls, want %d (the request's ops, then its window's telemetry)", got, want)
	}
	if got, want := p.Stats().HeaderErrors["ctx-ops"], uint64(1); got != want {
		t.Errorf("ctx-ops header errors %d, want %d (untrusted ops counted)", got, want)
	}
}

func TestInbound_TrustInboundOps(t *testing.T) {
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprint("trust=", trust), func(t *testing.T) {
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if v := r.Header.Get("Ctx-Ops"); v != "" {
					t.Errorf("app got ctx-ops %q; they are for the sidecar", v)
				}
			}))
			defer app.Close()
			store := newMemStore()
			p := startProxy(t, Options{App: hostOf(app.URL), Store: store, TrustInboundOps: trust, TrustedSources: loopback})
			get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{
				"Baggage": "ctx.name=wf-1",
				"Ctx-Ops": `incr;key="steps";by=3`,
			})
			store.waitCounter(t, "wf-1", KeyRequests, 1)
			want := int64(0)
			if trust {
				want = 3
			}
			if got := store.counter("wf-1", "steps"); got != want {
				t.Errorf("steps = %d, want %d", got, want)
			}
		})
	}
}

func TestInbound_NoContext_NoTelemetry(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Ctx-Ops", `incr;key="x"`)
	}))
	defer app.Close()
	store := newMemStore()
	p := startProxy(t, Options{App: hostOf(app.URL), Store: store, TrustedSources: loopback})
	res, _ := get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", nil)
	if got, want := res.StatusCode, 200; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().DroppedOps != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped ops %d, want 1", p.Stats().DroppedOps)
		}
		time.Sleep(time.Millisecond)
	}
	if got := store.callCount(); got != 0 {
		t.Errorf("%d Store.Apply calls for a request without context, want 0", got)
	}
}

func TestInbound_UpstreamErrors(t *testing.T) {
	hung := make(chan struct{})
	defer close(hung)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer failing.Close()
	down := closedAddr(t)

	for _, c := range []struct {
		name       string
		app        string
		wantStatus int
		wantBody   []string
	}{
		{"app down", down, http.StatusBadGateway, []string{"the app at " + down + " refused the connection", "inbound.app"}},
		{"app too slow", hostOf(slow.URL), http.StatusGatewayTimeout, []string{"did not answer within 200ms"}},
		{"app fails", hostOf(failing.URL), http.StatusInternalServerError, []string{"boom"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := newMemStore()
			p := startProxy(t, Options{App: c.app, Store: store, ResponseHeaderTimeout: 200 * time.Millisecond, TrustedSources: loopback})
			res, body := get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{"Baggage": "ctx.name=c1"})
			if got, want := res.StatusCode, c.wantStatus; got != want {
				t.Errorf("status %d, want %d", got, want)
			}
			for _, w := range c.wantBody {
				if !strings.Contains(body, w) {
					t.Errorf("body %q lacks %q", body, w)
				}
			}
			store.waitCounter(t, "c1", KeyRequests, 1)
			if got, want := store.counter("c1", KeyErrors), int64(1); got != want {
				t.Errorf("errors %d, want %d", got, want)
			}
		})
	}
}

func TestInbound_HeaderLimit(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL), MaxHeaderBytes: 4096})
	for _, c := range []struct {
		size int
		want int
	}{
		{100, http.StatusOK},
		{16 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(fmt.Sprint(c.size), func(t *testing.T) {
			res, _ := get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{"X-Big": strings.Repeat("a", c.size)})
			if got := res.StatusCode; got != c.want {
				t.Errorf("status %d, want %d", got, c.want)
			}
		})
	}
}

func TestInbound_ConnectRefused(t *testing.T) {
	p := startProxy(t, Options{App: closedAddr(t)})
	conn, err := net.Dial("tcp", p.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.StatusCode, http.StatusMethodNotAllowed; got != want {
		t.Errorf("status %d, want %d", got, want)
	}
}

// TestInbound_StreamsWithoutBuffering passes a response whose next chunk the app
// writes only after the client has read the previous one: a proxy that buffered
// would deadlock.
func TestInbound_StreamsWithoutBuffering(t *testing.T) {
	next := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 5 {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.InboundAddr().String()+"/", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	for i := range 5 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if got, want := line, fmt.Sprintf("chunk %d\n", i); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		next <- struct{}{}
	}
}

// TestInbound_LargeBodies sends a large upload and a large download through the
// proxy and checks that the proxy allocated far less than the bodies' size.
func TestInbound_LargeBodies(t *testing.T) {
	const size = 256 << 20
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprint(w, n)
			return
		}
		io.CopyN(w, zeros{}, size)
	}))
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL)})
	url := "http://" + p.InboundAddr().String() + "/"

	before := allocatedBytes()
	res, err := http.Post(url, "application/octet-stream", io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := fmt.Sprint(size); string(got) != want {
		t.Fatalf("app read %s bytes, want %s", got, want)
	}
	res, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || n != size {
		t.Fatalf("downloaded %d bytes (%v), want %d", n, err, size)
	}
	// Client, app and proxy share this process; all of them together must stay far
	// below one body's size.
	if alloc := allocatedBytes() - before; alloc > size/8 {
		t.Errorf("allocated %d MiB moving 2×%d MiB: something buffers bodies", alloc>>20, size>>20)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

func TestInbound_H2CAndTrailers(t *testing.T) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		fmt.Fprintf(w, "proto %d", r.ProtoMajor)
		w.Header().Set("X-Checksum", "abc")
	}))
	app.Config.Protocols = &protos
	app.Start()
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL)})

	c := h2cClient(t)
	res, err := c.Get("http://" + p.InboundAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if got, want := res.ProtoMajor, 2; got != want {
		t.Errorf("client got HTTP/%d, want %d", got, want)
	}
	if got, want := string(body), "proto 2"; got != want {
		t.Errorf("app saw %q, want %q", got, want)
	}
	if got, want := res.Trailer.Get("X-Checksum"), "abc"; got != want {
		t.Errorf("trailer %q, want %q", got, want)
	}
}

// The request's ops (its own and its answer's) are one Apply as the request ends; its
// telemetry comes in the window's Apply, after them.
func TestInbound_RequestOpsInOneCallTelemetryByWindow(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Ctx-Ops", `put;map="steps";key="pay";value="done"`)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer app.Close()
	store := newMemStore()
	p := startProxy(t, Options{App: hostOf(app.URL), Store: store, TrustInboundOps: true, TrustedSources: loopback})
	get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{
		"Baggage": "ctx.name=wf-2",
		"Ctx-Ops": `add;set="regions";member="eu"`,
	})
	store.waitCounter(t, "wf-2", KeyRequests, 1)
	store.mu.Lock()
	defer store.mu.Unlock()
	if got, want := len(store.calls), 2; got != want {
		t.Fatalf("%d calls, want %d", got, want)
	}
	var kinds []ops.Kind
	var keys []string
	for _, op := range store.calls[0].list {
		kinds = append(kinds, op.Kind)
		keys = append(keys, op.Key+op.Member)
	}
	if got, want := keys, []string{"eu", "pay"}; !equal(got, want) {
		t.Errorf("first call's ops %v, want %v", got, want)
	}
	if got, want := kinds, []ops.Kind{ops.Add, ops.Put}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("kinds %v, want %v", got, want)
	}
	keys = keys[:0]
	for _, op := range store.calls[1].list {
		keys = append(keys, op.Key)
	}
	if got, want := keys[:3], []string{KeyRequests, KeyErrors, KeyLatencySum}; !equal(got, want) {
		t.Errorf("second call's ops %v, want them to start with %v", keys, want)
	}
}

func equal(a, b []string) bool {
	return len(a) == len(b) && strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// allocatedBytes is the process's cumulative heap allocation.
func allocatedBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestInbound_BrokenStreamCountsAsError cuts the app's response midway: the client
// must see the break (not a short body passed off as whole) and the request counts as
// an error.
func TestInbound_BrokenStreamCountsAsError(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "only a part")
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer app.Close()
	store := newMemStore()
	p := startProxy(t, Options{App: hostOf(app.URL), Store: store, TrustedSources: loopback})
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.InboundAddr().String()+"/", nil)
	req.Header.Set("Baggage", "ctx.name=broken")
	// The break shows either before the header (the proxy had not flushed yet) or
	// while reading the body.
	res, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Errorf("the client read a cut body without an error")
	}
	store.waitCounter(t, "broken", KeyRequests, 1)
	if got, want := store.counter("broken", KeyErrors), int64(1); got != want {
		t.Errorf("errors %d, want %d", got, want)
	}
}
