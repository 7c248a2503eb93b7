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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// bodyApp is an app that reads each request body to its end and reports how that went.
type bodyApp struct {
	addr  string
	reads chan bodyRead
}

type bodyRead struct {
	n   int64
	err error
}

func startBodyApp(t *testing.T) *bodyApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &bodyApp{addr: ln.Addr().String(), reads: make(chan bodyRead, 16)}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		a.reads <- bodyRead{n, err}
		fmt.Fprintf(w, "read %d bytes", n)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *bodyApp) next(t *testing.T) bodyRead {
	t.Helper()
	select {
	case r := <-a.reads:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the app's request never ended")
		return bodyRead{}
	}
}

// syncBuffer is a log destination that tests read while the proxy writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestInbound_BodyTimeout sends a header and part of a body, then nothing, as a slow
// client holding the app's request would (issue 10 item 9): within the body timeout the
// client gets 408 and a closed connection, the app's request ends in an error, and the
// metric and the log say why.
func TestInbound_BodyTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	app := startBodyApp(t)
	logs := &syncBuffer{}
	p := startProxy(t, Options{App: app.addr, BodyTimeout: timeout, Logger: hclog.New(&hclog.LoggerOptions{Output: logs})})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(p))

	for i, c := range []struct{ name, head, part string }{
		{"content-length", "POST /slow HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n", "ten bytes."},
		{"chunked", "POST /slow HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", p.InboundAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.head+c.part); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			conn.SetReadDeadline(sent.Add(10 * time.Second))
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if got, want := res.StatusCode, http.StatusRequestTimeout; got != want {
				t.Errorf("status %d, want %d; body %q", got, want, body)
			}
			if !strings.Contains(string(body), "inbound.body_timeout") {
				t.Errorf("the answer %q does not name inbound.body_timeout", body)
			}
			if _, err := br.ReadByte(); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
				t.Errorf("the connection stayed open after the 408: read %v", err)
			}
			elapsed := time.Since(sent)
			if elapsed < timeout*9/10 || elapsed > timeout+3*time.Second {
				t.Errorf("the connection closed %s after the client stalled; want about %s", elapsed, timeout)
			}
			if r := app.next(t); r.err == nil {
				t.Errorf("the app read %d bytes and a clean end of a body the client never finished", r.n)
			}
			if got, want := p.stats.closes[sideInbound][reasonBodyTimeout].Load(), uint64(i+1); got != want {
				t.Errorf("body_timeout closes = %d, want %d", got, want)
			}
		})
	}
	waitMetrics(t, reg, `
# HELP ctxprop_proxy_closed_connections_total Client connections closed after a response because the request's framing could not be trusted (request smuggling defence, RFC 9112 §6.1, §6.3), by direction and reason: content_length_and_transfer_encoding, transfer_encoding_http10, bare_lf, obs_fold, unverified (the proxy could not follow the framing to or past the request), body_error (malformed or cut body), body_unread (the answer ended before the body), body_timeout (no body data for inbound.body_timeout; over HTTP/2 the stream ends).
# TYPE ctxprop_proxy_closed_connections_total counter
ctxprop_proxy_closed_connections_total{direction="inbound",reason="bare_lf"} 0
ctxprop_proxy_closed_connections_total{direction="outbound",reason="bare_lf"} 0
ctxprop_proxy_closed_connections_total{direction="inbound",reason="body_error"} 0
ctxprop_proxy_closed_connections_total{direction="outbound",reason="body_error"} 0
ctxprop_proxy_closed_connections_total{direction="inbound",reason="body_timeout"} 2
ctxprop_proxy_closed_connections_total{direction="outbound",reason="body_timeout"} 0
ctxprop_proxy_closed_connections_total{direction="inbound",reason="body_unread"} 0
ctxprop_proxy_closed_connections_total{direction="outbound",reason="body_unread"} 0
ctxprop_proxy_closed_connections_total{direction="inbound",reason="content_length_and_transfer_encoding"} 0
ctxprop_proxy_closed_connections_total{direction="outbound",reason="content_length_and_transfer_encoding"} 0
ctxprop_proxy_closed_connections_total{direction="inbound",reason="obs_fold"} 0
ctxprop_proxy_closed_connections_total{direction="outbound",reason="obs_fold"} 0
ctxprop_proxy_closed_connections_total{direction="inbound",reason="transfer_encoding_http10"} 0
ctxprop_proxy_closed_connections_total{direction="outbound",reason="transfer_encoding_http10"} 0
ctxprop_proxy_closed_connections_total{direction="inbound",reason="unverified"} 0
ctxprop_proxy_closed_connections_total{direction="outbound",reason="unverified"} 0
`)
	if got := logs.String(); !strings.Contains(got, "reason=body_timeout") {
		t.Errorf("no log line names the body timeout; logs:\n%s", got)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestInbound_BodyTimeout_HealthyStream streams a body whose chunks come slower than
// nothing at all but faster than the body timeout: it goes through whole, however long
// the whole body takes.
func TestInbound_BodyTimeout_HealthyStream(t *testing.T) {
	const timeout = 400 * time.Millisecond
	app := startBodyApp(t)
	p := startProxy(t, Options{App: app.addr, BodyTimeout: timeout})
	pr, pw := io.Pipe()
	go func() {
		for range 8 { // 8 pauses of a quarter of the timeout: twice the timeout in all
			io.WriteString(pw, "0123456789")
			time.Sleep(timeout / 4)
		}
		pw.Close()
	}()
	res, err := http.Post("http://"+p.InboundAddr().String()+"/stream", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status %d, want %d; body %q", got, want, body)
	}
	if r := app.next(t); r.err != nil || r.n != 80 {
		t.Errorf("the app read %d bytes (%v), want 80", r.n, r.err)
	}
	if got := p.stats.closes[sideInbound][reasonBodyTimeout].Load(); got != 0 {
		t.Errorf("body_timeout closes = %d, want 0", got)
	}
}

// TestInbound_BodyTimeout_HTTP2 stalls the body of an h2c request: the stream gets 408
// while the connection serves on.
func TestInbound_BodyTimeout_HTTP2(t *testing.T) {
	const timeout = 300 * time.Millisecond
	app := startBodyApp(t)
	p := startProxy(t, Options{App: app.addr, BodyTimeout: timeout})
	c := h2cClient(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, "the start of a body that never ends")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.InboundAddr().String()+"/slow", pr)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusRequestTimeout; got != want {
		t.Fatalf("status %d, want %d; body %q", got, want, body)
	}
	if r := app.next(t); r.err == nil {
		t.Errorf("the app read %d bytes and a clean end of a body the client never finished", r.n)
	}
	// The same connection still serves.
	res, err = c.Get("http://" + p.InboundAddr().String() + "/after")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, want := res.StatusCode, http.StatusOK; got != want {
		t.Errorf("next request on the connection: status %d, want %d", got, want)
	}
}
