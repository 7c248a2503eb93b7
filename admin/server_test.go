package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/hashicorp/go-hclog"
)

var _ Store = (*localstore.Store)(nil)

// testEnv is a real store on a bbolt file and a real admin server on loopback.
type testEnv struct {
	store  *localstore.Store
	server *Server
	base   string
	client *Client
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: t.Output(), Level: hclog.Debug})
}

func newTestEnv(t *testing.T, opt Options, limits localstore.Limits) *testEnv {
	t.Helper()
	return newTestEnvWith(t, opt, limits, nil)
}

// newTestEnvWith is newTestEnv with routes added by mount (Server.Handle) before Open.
func newTestEnvWith(t *testing.T, opt Options, limits localstore.Limits, mount func(*Server)) *testEnv {
	t.Helper()
	st := localstore.New(localstore.Options{
		Path:   filepath.Join(t.TempDir(), "ctxprop.db"),
		Limits: limits,
		Logger: testLogger(t).Named("store"),
	})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	opt.Address = "127.0.0.1:0"
	opt.Store = st
	opt.Logger = testLogger(t).Named("admin")
	s := New(opt)
	if mount != nil {
		mount(s)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr().String()
	c := NewClient(base, nil)
	t.Cleanup(func() {
		c.CloseIdleConnections()
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("admin Close: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	return &testEnv{store: st, server: s, base: base, client: c}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (e *testEnv) call(t *testing.T, method, path, contentType, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set(HeaderRequestedBy, "admin-test") // as the Client sends; guard_test.go tests without it
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, strings.TrimSpace(string(data))}
}

// errorCode returns the code of a JSON error answer, failing the test if it is not one.
func errorCode(t *testing.T, a answer) string {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal([]byte(a.body), &b); err != nil || b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("answer %d %q is not a JSON error with code and message", a.status, a.body)
	}
	return b.Error.Code
}

// TestServer_Routes walks every row of SPEC §3a in order on one server: each step sees
// what the earlier ones wrote.
func TestServer_Routes(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	const j, txt = "application/json", "text/plain"
	steps := []struct {
		name, method, path, ctype, body string
		status                          int
		want                            string // the exact body, or the error code for an error status
	}{
		{"list empty", "GET", "/v1/contexts", "", "", 200, `{"contexts":[]}`},
		{"get absent", "GET", "/v1/contexts/wf-1", "", "", 404, CodeNotFound},
		{"counter never written", "GET", "/v1/contexts/wf-1/counters/orders", "", "", 200, `{"value":0}`},
		{"incr empty body is by 1", "POST", "/v1/contexts/wf-1/counters/orders", "", "", 200, `{"value":1}`},
		{"incr by", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"by":5}`, 200, `{"value":6}`},
		{"incr negative with ttl", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"by":-2,"ttl":"1h"}`, 200, `{"value":4}`},
		{"incr by zero", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"by":0}`, 400, CodeBadRequest},
		{"incr unknown field", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"by":1,"bye":2}`, 400, CodeBadRequest},
		{"incr bad json", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"by":`, 400, CodeBadRequest},
		{"incr by not int", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"by":1.5}`, 400, CodeBadRequest},
		{"incr bad ttl", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"ttl":"soon"}`, 400, CodeBadRequest},
		{"incr negative ttl", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"ttl":"-1s"}`, 400, CodeBadRequest},
		{"incr trailing data", "POST", "/v1/contexts/wf-1/counters/orders", j, `{"by":1} {}`, 400, CodeBadRequest},
		{"counter read", "GET", "/v1/contexts/wf-1/counters/orders", "", "", 200, `{"value":4}`},
		{"counter key too long", "GET", "/v1/contexts/wf-1/counters/" + strings.Repeat("k", 201), "", "", 400, CodeBadRequest},
		{"put", "PUT", "/v1/contexts/wf-1/maps/steps/pay", j, `{"value":{"ok": true}}`, 204, ``},
		{"put with ttl", "PUT", "/v1/contexts/wf-1/maps/steps/ship", j, `{"value":"done","ttl":"1h"}`, 204, ``},
		{"put without value", "PUT", "/v1/contexts/wf-1/maps/steps/pay", j, `{"ttl":"1h"}`, 400, CodeBadRequest},
		{"put empty body", "PUT", "/v1/contexts/wf-1/maps/steps/pay", j, ``, 400, CodeBadRequest},
		{"map entry", "GET", "/v1/contexts/wf-1/maps/steps/pay", "", "", 200, `{"value":{"ok":true}}`},
		{"map", "GET", "/v1/contexts/wf-1/maps/steps", "", "", 200, `{"entries":{"pay":{"ok":true},"ship":"done"}}`},
		{"del", "DELETE", "/v1/contexts/wf-1/maps/steps/pay", "", "", 204, ``},
		{"map entry deleted", "GET", "/v1/contexts/wf-1/maps/steps/pay", "", "", 404, CodeNotFound},
		{"absent map", "GET", "/v1/contexts/wf-1/maps/none", "", "", 200, `{"entries":{}}`},
		{"set add", "POST", "/v1/contexts/wf-1/sets/regions", j, `{"add":["us-east","eu-west","ap"]}`, 200, `{"members":["ap","eu-west","us-east"]}`},
		{"set add and remove", "POST", "/v1/contexts/wf-1/sets/regions", j, `{"add":["sa"],"remove":["ap"],"ttl":"1h"}`, 200, `{"members":["eu-west","sa","us-east"]}`},
		{"set nothing", "POST", "/v1/contexts/wf-1/sets/regions", j, `{}`, 400, CodeBadRequest},
		{"set ttl without add", "POST", "/v1/contexts/wf-1/sets/regions", j, `{"remove":["x"],"ttl":"1h"}`, 400, CodeBadRequest},
		{"set read", "GET", "/v1/contexts/wf-1/sets/regions", "", "", 200, `{"members":["eu-west","sa","us-east"]}`},
		{"absent set", "GET", "/v1/contexts/wf-1/sets/none", "", "", 200, `{"members":[]}`},
		{"ops header", "POST", "/v1/contexts/wf-1/ops", txt, `incr;key="orders";by=2, put;map="steps";key="pay";value="retry", add;set="regions";member="af"`, 204, ``},
		{"ops json", "POST", "/v1/contexts/wf-1/ops", j + "; charset=utf-8", `[{"op":"incr","key":"orders","by":10},{"op":"rem","set":"regions","member":"af"}]`, 204, ``},
		{"ops atomic: bad op refuses all", "POST", "/v1/contexts/wf-1/ops", j, `[{"op":"incr","key":"orders"},{"op":"put","map":"m","key":"k"}]`, 400, CodeBadRequest},
		{"ops malformed header", "POST", "/v1/contexts/wf-1/ops", txt, `incr;key=`, 400, CodeBadRequest},
		{"ops empty", "POST", "/v1/contexts/wf-1/ops", txt, ``, 400, CodeBadRequest},
		{"ops wrong type", "POST", "/v1/contexts/wf-1/ops", "application/x-www-form-urlencoded", `a=b`, 415, CodeUnsupportedType},
		{"ops no type", "POST", "/v1/contexts/wf-1/ops", "", `incr;key="k"`, 415, CodeUnsupportedType},
		{"after ops", "GET", "/v1/contexts/wf-1/counters/orders", "", "", 200, `{"value":16}`},
		{"ttl", "PUT", "/v1/contexts/wf-1/ttl", j, `{"ttl":"1h","fixed":true}`, 204, ``},
		{"ttl zero", "PUT", "/v1/contexts/wf-1/ttl", j, `{"ttl":"0"}`, 204, ``},
		{"ttl missing", "PUT", "/v1/contexts/wf-1/ttl", j, `{"fixed":true}`, 400, CodeBadRequest},
		{"ttl bad", "PUT", "/v1/contexts/wf-1/ttl", j, `{"ttl":"1 hour"}`, 400, CodeBadRequest},
		{"get", "GET", "/v1/contexts/wf-1", "", "", 200, `{"name":"wf-1","expires_at":null,"counters":{"orders":16},"maps":{"steps":{"pay":"retry","ship":"done"}},"sets":{"regions":["eu-west","sa","us-east"]},"replicas":1}`},
		{"list", "GET", "/v1/contexts", "", "", 200, `{"contexts":[{"name":"wf-1","expires_at":null,"counters":1,"maps":1,"sets":1}]}`},
		{"bad context name", "GET", "/v1/contexts/wf%20one", "", "", 400, CodeBadRequest},
		{"context name with encoded slash", "GET", "/v1/contexts/wf%2F1", "", "", 400, CodeBadRequest},
		{"context name too long", "PUT", "/v1/contexts/" + strings.Repeat("c", 201) + "/maps/m/k", j, `{"value":1}`, 400, CodeBadRequest},
		{"write to bad context name", "POST", "/v1/contexts/a%2Fb/counters/k", j, `{}`, 400, CodeBadRequest},
		{"wrong method", "PATCH", "/v1/contexts/wf-1", j, `{}`, 405, CodeMethodNotAllowed},
		{"unknown route", "GET", "/v1/nothing", "", "", 404, CodeNotFound},
		{"dot segment", "GET", "/v1/contexts/wf-1/maps/steps/..", "", "", 400, CodeBadRequest},
		{"empty segment", "GET", "/v1/contexts//counters/k", "", "", 400, CodeBadRequest},
		{"delete", "DELETE", "/v1/contexts/wf-1", "", "", 204, ``},
		{"deleted", "GET", "/v1/contexts/wf-1", "", "", 404, CodeNotFound},
		{"delete absent", "DELETE", "/v1/contexts/wf-1", "", "", 404, CodeNotFound},
		{"peers without sync", "GET", "/v1/peers", "", "", 200, `{"peers":[]}`},
		{"healthz", "GET", "/healthz", "", "", 200, `{"status":"ok"}`},
		{"readyz", "GET", "/readyz", "", "", 200, `{"status":"ready"}`},
	}
	for _, st := range steps {
		a := e.call(t, st.method, st.path, st.ctype, st.body)
		if a.status != st.status {
			t.Fatalf("%s: %s %s: status %d, want %d; body %s", st.name, st.method, st.path, a.status, st.status, a.body)
		}
		if st.status >= 400 {
			if got := errorCode(t, a); got != st.want {
				t.Errorf("%s: code %q, want %q (%s)", st.name, got, st.want, a.body)
			}
			if got := a.header.Get("Content-Type"); got != "application/json" {
				t.Errorf("%s: Content-Type %q", st.name, got)
			}
			continue
		}
		if a.body != st.want {
			t.Errorf("%s: body\n got %s\nwant %s", st.name, a.body, st.want)
		}
	}
}

func TestServer_MethodNotAllowed_Allow(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	tests := []struct{ method, path, allow string }{
		{"PATCH", "/v1/contexts/c", "DELETE, GET, HEAD"},
		{"POST", "/v1/contexts", "GET, HEAD"},
		{"GET", "/v1/contexts/c/ttl", "PUT"},
		{"PUT", "/v1/contexts/c/counters/k", "GET, HEAD, POST"},
		{"GET", "/v1/contexts/c/ops", "POST"},
		{"POST", "/metrics", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			a := e.call(t, tt.method, tt.path, "", "")
			if got, want := a.status, 405; got != want {
				t.Fatalf("status %d, want %d", got, want)
			}
			if got := a.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if got, want := errorCode(t, a), CodeMethodNotAllowed; got != want {
				t.Errorf("code %q, want %q", got, want)
			}
		})
	}
}

// TestServer_EncodedNames writes and reads names that only survive the path if every
// segment is percent-encoded and decoded exactly once.
func TestServer_EncodedNames(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	ctx := context.Background()
	names := []string{"a/b", "/", "//", ".", "..", "%2F", "café au lait", "100%", "a?b#c", "x;y=z", " lead", "_"}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if err := e.client.Put(ctx, "enc", name, name, json.RawMessage(`1`), 0); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if _, err := e.client.Incr(ctx, "enc", name, 3, 0); err != nil {
				t.Fatalf("Incr: %v", err)
			}
			if _, err := e.client.UpdateSet(ctx, "enc", name, []string{name}, nil, 0); err != nil {
				t.Fatalf("UpdateSet: %v", err)
			}
			// Read back from the store itself, so a double decode can't hide in the client.
			if v, err := e.store.MapGet("enc", name, name); err != nil || string(v) != "1" {
				t.Errorf("store MapGet(%q, %q) = %s, %v", name, name, v, err)
			}
			if v, err := e.store.Counter("enc", name); err != nil || v != 3 {
				t.Errorf("store Counter(%q) = %d, %v; want 3", name, v, err)
			}
			if m, err := e.store.Set("enc", name); err != nil || len(m) != 1 || m[0] != name {
				t.Errorf("store Set(%q) = %q, %v", name, m, err)
			}
			if v, err := e.client.MapGet(ctx, "enc", name, name); err != nil || string(v) != "1" {
				t.Errorf("client MapGet = %s, %v", v, err)
			}
			if v, err := e.client.Counter(ctx, "enc", name); err != nil || v != 3 {
				t.Errorf("client Counter = %d, %v", v, err)
			}
			if err := e.client.Del(ctx, "enc", name, name); err != nil {
				t.Errorf("Del: %v", err)
			}
		})
	}
	// Exactly one decode: "%252F" is the three characters %2F, not a slash.
	if _, err := e.store.MapGet("enc", "%2F", "%2F"); !errors.Is(err, localstore.ErrNotFound) {
		t.Errorf("entry %%2F should have been deleted: %v", err)
	}
	a := e.call(t, "GET", "/v1/contexts/enc/counters/%252F", "", "")
	if got, want := a.body, `{"value":3}`; got != want {
		t.Errorf("counter %%252F = %s, want %s", got, want)
	}
	a = e.call(t, "GET", "/v1/contexts/enc/counters/a%2Fb", "", "")
	if got, want := a.body, `{"value":3}`; got != want {
		t.Errorf("counter a%%2Fb = %s, want %s", got, want)
	}
}

func TestServer_Limits(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{MaxContexts: 1, MaxValueBytes: 16, MaxSetMembers: 2})
	tests := []struct {
		name, method, path, body string
		status                   int
		code, limit              string
	}{
		{"first context", "POST", "/v1/contexts/one/counters/k", `{}`, 200, "", ""},
		{"second context", "POST", "/v1/contexts/two/counters/k", `{}`, 422, CodeLimitExceeded, "max_contexts"},
		{"large value", "PUT", "/v1/contexts/one/maps/m/k", `{"value":"` + strings.Repeat("v", 32) + `"}`, 413, CodeValueTooLarge, "max_value_bytes"},
		{"set members", "POST", "/v1/contexts/one/sets/s", `{"add":["a","b","c"]}`, 422, CodeLimitExceeded, "max_set_members"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.call(t, tt.method, tt.path, "application/json", tt.body)
			if a.status != tt.status {
				t.Fatalf("status %d, want %d: %s", a.status, tt.status, a.body)
			}
			if tt.code == "" {
				return
			}
			var b errorBody
			if err := json.Unmarshal([]byte(a.body), &b); err != nil {
				t.Fatal(err)
			}
			if b.Error.Code != tt.code || b.Error.Limit != tt.limit || !strings.Contains(b.Error.Message, tt.limit) {
				t.Errorf("error %+v, want code %s naming %s", b.Error, tt.code, tt.limit)
			}
		})
	}
	// Nothing stored was lost.
	if got, err := e.store.Counter("one", "k"); err != nil || got != 1 {
		t.Errorf("counter = %d, %v; want 1", got, err)
	}
}

// countingListener counts the bytes the server reads from its connections.
type countingListener struct {
	net.Listener
	read *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return countingConn{c, l.read}, err
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

// CloseWrite lets the server half-close, as it does a *net.TCPConn.
func (c countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

// TestServer_BodyLimit sends 10 MB bodies, chunked (no Content-Length to refuse on) and
// with a Content-Length, and checks that the server answers 413 having read little of them.
func TestServer_BodyLimit(t *testing.T) {
	const limit = 64 << 10
	const size = 10 << 20
	e := newTestEnv(t, Options{MaxBodyBytes: limit}, localstore.Limits{})
	var read atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.server.Handler()}
	go srv.Serve(countingListener{ln, &read})
	t.Cleanup(func() { srv.Close() })

	for _, chunked := range []bool{true, false} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			read.Store(0)
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() {
				// Write errors are expected once the server has answered and closed.
				w := bufio.NewWriter(conn)
				if chunked {
					fmt.Fprintf(w, "PUT /v1/contexts/c/maps/m/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
					chunk := strings.Repeat("a", 32<<10)
					for sent := 0; sent < size; sent += len(chunk) {
						if _, err := fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
							return
						}
					}
					fmt.Fprintf(w, "0\r\n\r\n")
				} else {
					fmt.Fprintf(w, "PUT /v1/contexts/c/maps/m/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", size)
					chunk := strings.Repeat("a", 32<<10)
					for sent := 0; sent < size; sent += len(chunk) {
						if _, err := w.WriteString(chunk); err != nil {
							return
						}
					}
				}
				w.Flush()
			}()
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if got, want := resp.StatusCode, 413; got != want {
				t.Fatalf("status %d, want %d: %s", got, want, body)
			}
			if !strings.Contains(string(body), CodeBodyTooLarge) {
				t.Errorf("body %s lacks %s", body, CodeBodyTooLarge)
			}
			// The server may read its buffers and a bounded drain past the limit, never the body.
			if got := read.Load(); got > 2<<20 {
				t.Errorf("server read %d bytes of a %d-byte body with limit %d", got, size, limit)
			}
		})
	}
}

func TestServer_Draining(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	// A second server on the same store, served by the test: Close sets its draining flag
	// while its handler is still reachable.
	s := New(Options{Store: e.store, Logger: testLogger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(ln.Addr().String(), nil)
	defer c.CloseIdleConnections()
	ctx := context.Background()
	if _, err := c.Incr(ctx, "d", "k", 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = c.Incr(ctx, "d", "k", 1, 0)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != CodeShuttingDown {
		t.Errorf("Incr while draining: %v, want 503 %s", err, CodeShuttingDown)
	}
	if err := c.Ready(ctx); err == nil {
		t.Error("Ready while draining: nil error")
	}
	if err := c.Health(ctx); err != nil {
		t.Errorf("Health while draining: %v; the process is alive", err)
	}
}

// TestServer_InFlightFinishes starts a write whose body is not yet sent, closes the server,
// then completes the body: the write that began before Close is answered.
func TestServer_InFlightFinishes(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	conn, err := net.Dial("tcp", e.server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"by":7}`
	fmt.Fprintf(conn, "POST /v1/contexts/f/counters/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:3])
	// Wait until the handler holds the request, blocked reading the body.
	deadline := time.Now().Add(5 * time.Second)
	for e.server.inFlight.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the handler")
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- e.server.Close(context.Background()) }()
	for !e.server.draining.Load() {
		if time.Now().After(deadline) {
			t.Fatal("Close never set draining")
		}
		time.Sleep(time.Millisecond)
	}
	io.WriteString(conn, body[3:])
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	if got, want := resp.StatusCode, 200; got != want {
		t.Fatalf("status %d, want %d: %s", got, want, data)
	}
	if got, want := strings.TrimSpace(string(data)), `{"value":7}`; got != want {
		t.Errorf("body %s, want %s", got, want)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestServer_StoreClosed(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	a := e.call(t, "POST", "/v1/contexts/c/counters/k", "", "")
	if got, want := a.status, 503; got != want {
		t.Fatalf("status %d, want %d: %s", got, want, a.body)
	}
	if got, want := errorCode(t, a), CodeShuttingDown; got != want {
		t.Errorf("code %q, want %q", got, want)
	}
	a = e.call(t, "GET", "/readyz", "", "")
	if got, want := a.status, 503; got != want || !strings.Contains(a.body, "store: ") {
		t.Errorf("readyz: %d %s; want %d naming the store", got, a.body, want)
	}
}

func TestStoreError(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("x: %w", localstore.ErrInvalid), 400, CodeBadRequest},
		{fmt.Errorf("x: %w", localstore.ErrNotFound), 404, CodeNotFound},
		{&localstore.LimitError{Limit: "max_contexts", Max: 1, What: "x"}, 422, CodeLimitExceeded},
		{fmt.Errorf("apply: %w", &localstore.LimitError{Limit: "max_value_bytes", Max: 1, What: "x"}), 413, CodeValueTooLarge},
		{fmt.Errorf("%w: context \"c\": %w", localstore.ErrRange, errors.New("counter \"k\" is 1")), 422, CodeOutOfRange},
		{localstore.ErrClosed, 503, CodeShuttingDown},
		{fmt.Errorf("%w: disk full", localstore.ErrFailed), 503, CodeStoreFailed},
		{context.Canceled, 503, CodeShuttingDown},
		{errors.New("surprise"), 500, CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			e := StoreError(tt.err)
			if e.Status != tt.status || e.Code != tt.code || e.Message == "" {
				t.Errorf("storeError = %+v, want %d %s with a message", e, tt.status, tt.code)
			}
		})
	}
}

func TestServer_Readyz_Checks(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	var down atomic.Bool
	e.server.AddReadyCheck("inbound listener", func() error {
		if down.Load() {
			return errors.New("not listening")
		}
		return nil
	})
	if a := e.call(t, "GET", "/readyz", "", ""); a.status != 200 {
		t.Fatalf("readyz %d %s", a.status, a.body)
	}
	down.Store(true)
	a := e.call(t, "GET", "/readyz", "", "")
	if a.status != 503 || !strings.Contains(a.body, "inbound listener: not listening") {
		t.Errorf("readyz %d %s; want 503 naming the check", a.status, a.body)
	}
}

type staticPeers []PeerStatus

func (p staticPeers) Peers() []PeerStatus { return p }

func TestServer_Peers(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	peers := staticPeers{
		{Name: "pod-b", Address: "10.0.0.7:7403", State: "alive", LastContact: at, Lag: 150 * time.Millisecond, BytesIn: 10, BytesOut: 20, Errors: 1, LastError: "timeout"},
		{Address: "10.0.0.8:7403", State: "suspect"},
	}
	e := newTestEnv(t, Options{Peers: peers}, localstore.Limits{})
	a := e.call(t, "GET", "/v1/peers", "", "")
	want := `{"peers":[{"name":"pod-b","address":"10.0.0.7:7403","state":"alive","last_contact":"2026-01-02T03:04:05Z","lag":"150ms","bytes_in":10,"bytes_out":20,"errors":1,"last_error":"timeout"},` +
		`{"address":"10.0.0.8:7403","state":"suspect","lag":"0s","bytes_in":0,"bytes_out":0,"errors":0}]}`
	if a.body != want {
		t.Errorf("peers\n got %s\nwant %s", a.body, want)
	}
	got, err := e.client.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != peers[0] || got[1] != peers[1] {
		t.Errorf("client Peers = %+v, want %+v", got, peers)
	}
}

// TestServer_Metrics: /metrics serves the API's metrics, and the collectors registered on
// Registry, as the sidecar registers the store's.
func TestServer_Metrics(t *testing.T) {
	e := newTestEnvWith(t, Options{}, localstore.Limits{}, func(s *Server) {
		s.Registry().MustRegister(localstore.NewCollector(s.opt.Store.(*localstore.Store)))
	})
	if _, err := e.client.Incr(context.Background(), "m", "k", 1, 0); err != nil {
		t.Fatal(err)
	}
	e.call(t, "GET", "/v1/contexts/m/counters/k", "", "")
	e.call(t, "GET", "/v2/nothing", "", "")  // no route: empty http_route
	e.call(t, "BREW", "/v1/nothing", "", "") // a made-up method is _OTHER
	a := e.call(t, "GET", "/metrics", "", "")
	for _, want := range []string{
		"ctxprop_store_log_syncs_total 1", // the write is in the log; bbolt gets it within the window
		"ctxprop_store_commits_total ",
		"ctxprop_store_changes_total 1",
		"ctxprop_store_contexts 1",
		"ctxprop_store_commit_failures_total 0",
		"ctxprop_store_commit_seconds_total ",
		`ctxprop_admin_requests_total{http_request_method="POST",http_response_status_code="200",http_route="/v1/contexts/{ctx}/counters/{key}"} 1`,
		`ctxprop_admin_request_duration_seconds_count{http_request_method="GET",http_route="/v1/contexts/{ctx}/counters/{key}"} 1`,
		`ctxprop_admin_requests_total{http_request_method="GET",http_response_status_code="404",http_route=""} 1`,
		`ctxprop_admin_requests_total{http_request_method="_OTHER",http_response_status_code="404",http_route=""} 1`,
		"go_goroutines ",
	} {
		if !strings.Contains(a.body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestServer_Open_Loopback(t *testing.T) {
	st := localstore.New(localstore.Options{Path: filepath.Join(t.TempDir(), "db")})
	tests := []struct {
		addr    string
		allow   bool
		wantErr string
	}{
		{"0.0.0.0:0", false, "admin address 0.0.0.0:0 is not loopback; the admin API has no authentication — bind 127.0.0.1 or set admin.allow_non_loopback = true"},
		{"[::]:0", false, "admin address [::]:0 is not loopback; the admin API has no authentication — bind 127.0.0.1 or set admin.allow_non_loopback = true"},
		{"10.1.2.3:7400", false, "admin address 10.1.2.3:7400 is not loopback; the admin API has no authentication — bind 127.0.0.1 or set admin.allow_non_loopback = true"},
		{"no-port", false, `admin: address "no-port"`},
		{"127.0.0.1:0", false, ""},
		{"0.0.0.0:0", true, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s allow=%v", tt.addr, tt.allow), func(t *testing.T) {
			s := New(Options{Address: tt.addr, AllowNonLoopback: tt.allow, Store: st})
			err := s.Open()
			defer s.Close(context.Background())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Open: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Fatalf("Open: %v, want %q", err, tt.wantErr)
			}
		})
	}
}
