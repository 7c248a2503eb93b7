package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of the inbound fast path (fastpath.go) on real loopback sockets.

// rawApp is an app that records the raw head of every request it reads and answers
// with answer(head); it serves keep-alive connections until the client closes them.
type rawApp struct {
	ln    net.Listener
	mu    sync.Mutex
	heads []string
	conns atomic.Int64
}

func startRawApp(t *testing.T, answer func(head string) string) *rawApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &rawApp{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head.String())))
					if err != nil {
						return
					}
					if req.ContentLength > 0 {
						io.CopyN(io.Discard, br, req.ContentLength)
					}
					a.mu.Lock()
					a.heads = append(a.heads, head.String())
					a.mu.Unlock()
					if _, err := io.WriteString(c, answer(head.String())); err != nil {
						return
					}
				}
			}()
		}
	}()
	return a
}

func (a *rawApp) addr() string { return a.ln.Addr().String() }

func (a *rawApp) lastHead() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.heads) == 0 {
		return ""
	}
	return a.heads[len(a.heads)-1]
}

// dialRaw connects to addr for raw HTTP/1.1 and returns the connection, closed when the
// test ends, with a reader of its answers.
func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTripRaw writes raw on c and reads one response.
func roundTripRaw(t *testing.T, c net.Conn, br *bufio.Reader, raw, method string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response to %q: %v", raw, err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the body of the response to %q: %v", raw, err)
	}
	return res, string(body)
}

// TestFastPath_SameBytesAsNetHTTP sends the same requests through the fast path and
// through the net/http path (inbound.fast_path = false) to an app that records the raw
// head it gets: the app must see the same bytes, hop-by-hop rules, X-Forwarded-*, the
// context and trace headers, ctx-ops removal and framing included, and the client the
// same answer (but for Date).
func TestFastPath_SameBytesAsNetHTTP(t *testing.T) {
	app := startRawApp(t, func(head string) string {
		if strings.HasPrefix(head, "HEAD ") {
			return "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-App: 1\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\n\r\n"
		}
		return "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-App: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nCtx-Ops: incr;key=\"app.hits\"\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\n\r\nok"
	})
	store := newMemStore()
	base := Options{App: app.addr(), Store: store, TrustedSources: loopback, TrustInboundOps: true, Trace: TraceParticipate, TracestateKey: "ctxprop"}
	fast := startProxy(t, base)
	slowOpt := base
	slowOpt.DisableFastPath = true
	slow := startProxy(t, slowOpt)

	requests := []struct{ name, raw string }{
		{"get", "GET /orders?id=7&x=a/b HTTP/1.1\r\nHost: shop.local:8080\r\nUser-Agent: t/1\r\nAccept: */*\r\nAccept: text/plain\r\n\r\n"},
		{"hop-by-hop", "GET /h HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nProxy-Authorization: Basic eA==\r\nTE: trailers, deflate\r\nX-Keep: 2\r\n\r\n"},
		{"forwarded", "GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n"},
		{"context", "GET / HTTP/1.1\r\nHost: a\r\nTraceparent: " + testTraceparent + "\r\nTracestate: other=1\r\nBaggage: ctx.name=c1,user=u\r\nCtx-Ops: incr;key=\"seen\"\r\nCtx-Flag-X: 1\r\n\r\n"},
		{"post", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"},
		{"delete no body", "DELETE /d HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"pragma", "GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nlower-case: v\r\n\r\n"},
		{"head", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"},
	}
	for _, r := range requests {
		t.Run(r.name, func(t *testing.T) {
			method, _, _ := strings.Cut(r.raw, " ")
			var heads, answers [2]string
			for i, p := range []*Proxy{fast, slow} {
				c, err := net.Dial("tcp", p.InboundAddr().String())
				if err != nil {
					t.Fatal(err)
				}
				res, body := roundTripRaw(t, c, bufio.NewReader(c), r.raw, method)
				c.Close()
				heads[i] = app.lastHead()
				res.Header.Del("Date")
				var b bytes.Buffer
				res.Header.Write(&b)
				answers[i] = fmt.Sprintf("%d %s\n%s\n%s", res.StatusCode, res.Status, b.String(), body)
			}
			// The traceparent is a new child per request with tracing on: compare
			// all but its parent-id, and the tracestate entry that carries it.
			norm := func(s string) string {
				var out []string
				for _, line := range strings.Split(s, "\r\n") {
					switch {
					case strings.HasPrefix(line, "Traceparent: ") && strings.Contains(r.raw, "Traceparent"):
						line = line[:len("Traceparent: ")+36] // the trace-id the client sent
					case strings.HasPrefix(line, "Traceparent: "):
						line = "Traceparent: (a new trace)"
					case strings.HasPrefix(line, "Tracestate: "):
						line = "Tracestate: (per hop)"
					}
					out = append(out, line)
				}
				return strings.Join(out, "\r\n")
			}
			if got, want := norm(heads[0]), norm(heads[1]); got != want {
				t.Errorf("the app got from the fast path\n%s\nand from the net/http path\n%s", got, want)
			}
			if got, want := answers[0], answers[1]; got != want {
				t.Errorf("the client got from the fast path\n%s\nand from the net/http path\n%s", got, want)
			}
		})
	}
	if n := fast.Stats().FastPathRequests; n != uint64(len(requests)) {
		t.Errorf("the fast path served %d requests, want %d", n, len(requests))
	}
	if n := slow.Stats().FastPathRequests; n != 0 {
		t.Errorf("with fast_path off, the fast path served %d requests", n)
	}
	store.waitCounter(t, "c1", "seen", 2)
}

// TestFastPath_KeepAliveReusesAppConnection: sequential requests of one client ride
// one connection to the app, and the app's conn count stays at one.
func TestFastPath_KeepAliveReusesAppConnection(t *testing.T) {
	app := startRawApp(t, func(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	p := startProxy(t, Options{App: app.addr()})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i := range 20 {
		res, err := client.Get("http://" + p.InboundAddr().String() + fmt.Sprintf("/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	if got, want := app.conns.Load(), int64(1); got != want {
		t.Errorf("the app accepted %d connections for 20 sequential requests, want %d", got, want)
	}
	if got, want := p.Stats().FastPathRequests, uint64(20); got != want {
		t.Errorf("fast path requests %d, want %d", got, want)
	}
}

// TestFastPath_ChunkedStreamsBothWays: a chunked request body reaches the app chunk by
// chunk (the app sees the first before the client sent the last), and a chunked
// response reaches the client chunk by chunk.
func TestFastPath_ChunkedStreamsBothWays(t *testing.T) {
	gotFirst := make(chan string, 1)
	sendSecond := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			return
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			t.Errorf("app: first chunk: %v", err)
			return
		}
		gotFirst <- string(buf)
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("app: rest of the body: %v", err)
			return
		}
		w.Write([]byte("got " + string(buf) + string(rest) + ";"))
		w.(http.Flusher).Flush()
		<-sendSecond
		w.Write([]byte("second"))
	}))
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL)})
	c, err := net.Dial("tcp", p.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	select {
	case first := <-gotFirst:
		if first != "hello" {
			t.Fatalf("app got %q first", first)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the app did not get the first chunk before the client sent the last")
	}
	io.WriteString(c, "6\r\n world\r\n0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.TransferEncoding; len(got) != 1 || got[0] != "chunked" {
		t.Errorf("response framing %v, want chunked", got)
	}
	buf := make([]byte, len("got hello world;"))
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatalf("first response chunk: %v", err)
	}
	if got, want := string(buf), "got hello world;"; got != want {
		t.Errorf("first response bytes %q, want %q", got, want)
	}
	close(sendSecond) // only now does the app write the rest
	rest, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(rest), "second"; got != want {
		t.Errorf("rest %q, want %q", got, want)
	}
	// The connection stays usable.
	res2, body := roundTripRaw(t, c, br, "GET /again HTTP/1.1\r\nHost: a\r\n\r\n", "GET")
	if res2.StatusCode != 200 {
		t.Errorf("next request: %d %s", res2.StatusCode, body)
	}
	if got := p.Stats().FastPathRequests; got != 2 {
		t.Errorf("fast path requests %d, want 2", got)
	}
}

// TestFastPath_FallbackMidKeepAlive: after a request served on the fast path, the
// same connection asks for a WebSocket upgrade, or sends CONNECT: the connection moves
// to the net/http path at that request boundary and the client sees the answers it
// always got. h2c prior knowledge on a new connection moves at once.
func TestFastPath_FallbackMidKeepAlive(t *testing.T) {
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "plain %s %s%s", r.Proto, r.URL.Path, body)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo: " + line)
		brw.Flush()
	}))
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true) // the h2c request goes on to the app over h2c
	app.Config.Protocols = &protos
	app.Start()
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL)})
	addr := p.InboundAddr().String()

	t.Run("upgrade", func(t *testing.T) {
		before := p.Stats()
		c, br := dialRaw(t, addr)
		if res, body := roundTripRaw(t, c, br, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n", "GET"); res.StatusCode != 200 || body != "plain HTTP/1.1 /one" {
			t.Fatalf("first request: %d %q", res.StatusCode, body)
		}
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: status %d", res.StatusCode)
		}
		io.WriteString(c, "ping\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "echo: ping\n" {
			t.Fatalf("through the upgraded connection: %q, %v", line, err)
		}
		after := p.Stats()
		if got := after.FastPathRequests - before.FastPathRequests; got != 1 {
			t.Errorf("fast path requests %d, want 1", got)
		}
		if got := after.FastPathHandovers - before.FastPathHandovers; got != 1 {
			t.Errorf("handovers %d, want 1", got)
		}
	})
	t.Run("connect", func(t *testing.T) {
		c, br := dialRaw(t, addr)
		if res, _ := roundTripRaw(t, c, br, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n", "GET"); res.StatusCode != 200 {
			t.Fatalf("first request: %d", res.StatusCode)
		}
		res, body := roundTripRaw(t, c, br, "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n", "CONNECT")
		if res.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(body, "CONNECT is not served here") {
			t.Fatalf("CONNECT: %d %q, want the net/http path's 405", res.StatusCode, body)
		}
		// And the net/http path closes the connection after a refused CONNECT, as it
		// always did: what follows may be the tunnel's bytes.
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := br.ReadByte(); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Error("the connection stayed open after a refused CONNECT")
		}
	})
	t.Run("h2c", func(t *testing.T) {
		before := p.Stats().FastPathHandovers
		res, err := h2cClient(t).Get("http://" + addr + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 || string(body) != "plain HTTP/2.0 /h2" {
			t.Fatalf("h2c: %s %q", res.Proto, body)
		}
		if got := p.Stats().FastPathHandovers - before; got != 1 {
			t.Errorf("handovers %d, want 1", got)
		}
	})
	t.Run("large head", func(t *testing.T) {
		before := p.Stats().FastPathHandovers
		c, br := dialRaw(t, addr)
		big := "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 6<<10) + "\r\n\r\n"
		if res, body := roundTripRaw(t, c, br, big, "GET"); res.StatusCode != 200 || body != "plain HTTP/1.1 /big" {
			t.Fatalf("a head larger than the fast path's buffer: %d %q", res.StatusCode, body)
		}
		if got := p.Stats().FastPathHandovers - before; got != 1 {
			t.Errorf("handovers %d, want 1", got)
		}
	})
	t.Run("expect", func(t *testing.T) {
		c, br := dialRaw(t, addr)
		io.WriteString(c, "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusContinue {
			t.Fatalf("status %d, want 100 Continue from the net/http path", res.StatusCode)
		}
		io.WriteString(c, "hello")
		// The app's own 100 Continue may follow, forwarded as the net/http path forwards
		// every 1xx (and HTTP allows any number of them): the answer is the first final one.
		for res.StatusCode == http.StatusContinue {
			if res, err = http.ReadResponse(br, nil); err != nil {
				t.Fatal(err)
			}
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(body) != "plain HTTP/1.1 /ehello" {
			t.Fatalf("after 100: %d %q", res.StatusCode, body)
		}
	})
}

// TestFastPath_AppClosesBetweenRequests: the app closes its kept-alive connection
// after each answer (as an idle timeout would): the next request, with or without a
// body, is not lost on the stale pooled connection.
func TestFastPath_AppClosesBetweenRequests(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{}, 16)
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err == nil {
					io.Copy(io.Discard, req.Body)
					// A keep-alive answer, then the app closes the connection anyway.
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
				time.Sleep(20 * time.Millisecond)
				c.Close()
				closed <- struct{}{}
			}()
		}
	}()
	p := startProxy(t, Options{App: ln.Addr().String()})
	c, err := net.Dial("tcp", p.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i, raw := range []string{
		"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		method, _, _ := strings.Cut(raw, " ")
		res, body := roundTripRaw(t, c, br, raw, method)
		if res.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i+1, res.StatusCode, body)
		}
		select {
		case <-closed: // the app closed the pooled connection before the next request
		case <-time.After(5 * time.Second):
			t.Fatal("the app did not close")
		}
	}
	if got, want := accepted.Load(), int64(3); got != want {
		t.Errorf("the app accepted %d connections, want %d", got, want)
	}
	if got, want := p.Stats().UpstreamErrors, uint64(0); got != want {
		t.Errorf("upstream errors %d, want %d", got, want)
	}
}

// TestFastPath_RetryOnStaleConnection: the app closes a pooled connection just as the
// next request arrives on it (after the proxy looked): a GET, which is safe to send
// again and had no answer, is retried on a new connection as the Transport does.
func TestFastPath_RetryOnStaleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := accepted.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if n == 1 && i == 1 {
						return // the first connection dies on its second request, unanswered
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	p := startProxy(t, Options{App: ln.Addr().String()})
	c, err := net.Dial("tcp", p.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 2 {
		res, body := roundTripRaw(t, c, br, fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i), "GET")
		if res.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if got, want := accepted.Load(), int64(2); got != want {
		t.Errorf("the app accepted %d connections, want %d (one retry)", got, want)
	}
}

// TestFastPath_AppDown: the app does not listen: 502 with the net/http path's words.
func TestFastPath_AppDown(t *testing.T) {
	p := startProxy(t, Options{App: closedAddr(t)})
	c, err := net.Dial("tcp", p.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 2 { // the connection stays usable after a 502
		res, body := roundTripRaw(t, c, br, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET")
		if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "refused the connection") {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	st := p.Stats()
	if st.FastPathRequests != 2 || st.UpstreamErrors != 2 {
		t.Errorf("fast path requests %d, upstream errors %d; want 2 and 2", st.FastPathRequests, st.UpstreamErrors)
	}
}

// TestFastPath_Pipelined: three requests in one write get three answers in order.
func TestFastPath_Pipelined(t *testing.T) {
	app := startRecordingApp(t)
	p := startProxy(t, Options{App: app.addr})
	c, err := net.Dial("tcp", p.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\nHost: h\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for _, want := range []string{"app saw /a", "app saw /b", "app saw /c"} {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if string(body) != want {
			t.Errorf("body %q, want %q", body, want)
		}
	}
	if got := p.Stats().FastPathRequests; got != 3 {
		t.Errorf("fast path requests %d, want 3", got)
	}
}

// TestFastPath_Timeouts: a client that stalls within a head is cut after the read
// header timeout, one idle between requests after the idle timeout, and one that stalls
// its body gets 408 after the body timeout.
func TestFastPath_Timeouts(t *testing.T) {
	app := startRecordingApp(t)
	p := startProxy(t, Options{App: app.addr, ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, BodyTimeout: 200 * time.Millisecond})
	addr := p.InboundAddr().String()
	closedWithin := func(t *testing.T, c net.Conn, br *bufio.Reader, d time.Duration) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(d))
		_, err := br.ReadByte()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection still open after %s", d)
		}
	}
	t.Run("head", func(t *testing.T) {
		c, br := dialRaw(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHo")
		closedWithin(t, c, br, 3*time.Second)
	})
	t.Run("idle", func(t *testing.T) {
		c, br := dialRaw(t, addr)
		roundTripRaw(t, c, br, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET")
		start := time.Now()
		closedWithin(t, c, br, 3*time.Second)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("closed after %s, before the idle timeout", d)
		}
	})
	t.Run("body", func(t *testing.T) {
		c, br := dialRaw(t, addr)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusRequestTimeout || !res.Close {
			t.Errorf("status %d close %v, want 408 and close", res.StatusCode, res.Close)
		}
		io.ReadAll(res.Body)
		closedWithin(t, c, br, 3*time.Second)
	})
}

// TestFastPath_Drain: Close lets a request in flight on the fast path finish and
// closes idle connections at once.
func TestFastPath_Drain(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}))
	defer app.Close()
	p, err := New(Options{App: hostOf(app.URL), InboundAddress: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	addr := p.InboundAddr().String()
	idle, idleBR := dialRaw(t, addr)
	roundTripRaw(t, idle, idleBR, "GET /idle HTTP/1.1\r\nHost: a\r\n\r\n", "GET")

	busy, _ := dialRaw(t, addr)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	closeErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		closeErr <- p.Close(ctx)
	}()
	// The idle connection closes while the busy one is still in flight.
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := idleBR.ReadByte(); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the idle connection was not closed by Close")
	}
	select {
	case err := <-closeErr:
		t.Fatalf("Close returned %v with a request in flight", err)
	default:
	}
	close(release)
	busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("the request in flight: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if string(body) != "done /slow" {
		t.Errorf("body %q", body)
	}
	if !res.Close {
		t.Error("the answer finished during the drain does not say Connection: close")
	}
	if err := <-closeErr; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestFastPath_EarlyAnswerEndsTheExchange: the app answers before the client sent its
// whole body: the client gets the answer, then its connection closes (body_unread), as on
// the net/http path, since the rest of the body would be read as a request.
func TestFastPath_EarlyAnswerEndsTheExchange(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	defer app.Close()
	p := startProxy(t, Options{App: hostOf(app.URL)})
	c, err := net.Dial("tcp", p.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n0123456789") // over the 256 KiB Go's server would read first
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "too large") {
		t.Fatalf("answer %d %q, want the app's 413", res.StatusCode, body)
	}
	if _, err := br.ReadByte(); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the connection stayed open with the body unread")
	}
	if got := p.stats.closes[sideInbound][reasonBodyUnread].Load(); got != 1 {
		t.Errorf("body_unread closes %d, want 1", got)
	}
	if got := p.Stats().FastPathRequests; got != 1 {
		t.Errorf("fast path requests %d, want 1", got)
	}
}

// TestFastPath_ResponseFramings: the app answers in every framing a response can have
// (Content-Length, chunked with trailers, interim 103 before the answer, ended by close,
// 204, 304): a client gets the same status, fields, body and trailers through the fast path
// as through the net/http path, and the fast path's connection goes on after each.
func TestFastPath_ResponseFramings(t *testing.T) {
	answers := map[string]string{
		"/cl":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"/chunked": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 42\r\n\r\n",
		"/early":   "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/eof":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",
		"/204":     "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"/304":     "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\nContent-Length: 10\r\n\r\n",
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					a := answers[req.URL.Path]
					io.WriteString(c, a)
					if strings.Contains(a, "Connection: close") {
						return
					}
				}
			}()
		}
	}()
	base := Options{App: ln.Addr().String()}
	fast := startProxy(t, base)
	base.DisableFastPath = true
	slow := startProxy(t, base)
	describe := func(t *testing.T, c net.Conn, br *bufio.Reader, path string) string {
		t.Helper()
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var interim []string
		for {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if res.StatusCode < 200 {
				interim = append(interim, res.Status+" "+res.Header.Get("Link"))
				continue
			}
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("%s: body: %v", path, err)
			}
			res.Header.Del("Date")
			var b bytes.Buffer
			res.Header.Write(&b)
			var tr bytes.Buffer
			res.Trailer.Write(&tr)
			return fmt.Sprintf("interim %q\n%s\n%s\nbody %q\ntrailer %s", interim, res.Status, b.String(), body, tr.String())
		}
	}
	fc, err := net.Dial("tcp", fast.InboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	fbr := bufio.NewReader(fc)
	for _, path := range []string{"/cl", "/chunked", "/early", "/eof", "/204", "/304", "/cl"} {
		t.Run(path, func(t *testing.T) {
			sc, err := net.Dial("tcp", slow.InboundAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			want := describe(t, sc, bufio.NewReader(sc), path)
			if got := describe(t, fc, fbr, path); got != want {
				t.Errorf("through the fast path:\n%s\nthrough the net/http path:\n%s", got, want)
			}
		})
	}
	if got := fast.Stats().FastPathRequests; got != 7 {
		t.Errorf("fast path requests %d, want 7 on one connection", got)
	}
}
