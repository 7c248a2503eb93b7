package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
)

// countedServer serves e's handler on a listener that counts the bytes read from its
// connections.
func countedServer(t *testing.T, e *testEnv) (addr string, read *atomic.Int64) {
	t.Helper()
	read = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.server.Handler()}
	go srv.Serve(countingListener{ln, read})
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), read
}

// readAnswer reads one response from conn, failing the test if none comes within 5s.
func readAnswer(t *testing.T, conn net.Conn, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// waitClosed fails the test unless the server closes conn within 5s. Reads of bytes sent
// after the answer (there should be none) are errors too.
func waitClosed(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the connection open")
	}
	if n != 0 {
		t.Errorf("%d bytes after the answer", n)
	}
}

// TestServer_BodyLimit_AnswersAtLimit sends bodies a little over the limit and then
// nothing more: the 413 must come at once, not after net/http has waited for 256 KiB
// more, and the server must close the connection without reading what follows.
func TestServer_BodyLimit_AnswersAtLimit(t *testing.T) {
	const limit = 64 << 10
	chunk := strings.Repeat("a", 8<<10)
	const head = "PUT /v1/contexts/c/maps/m/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
	var chunks strings.Builder
	for n := 0; n < limit+len(chunk); n += len(chunk) {
		fmt.Fprintf(&chunks, "%x\r\n%s\r\n", len(chunk), chunk)
	}
	// Declared lengths are over the limit by less than the 256 KiB net/http would otherwise
	// drain before answering.
	tests := map[string]string{
		"chunked":                       head + "Transfer-Encoding: chunked\r\n\r\n" + chunks.String(),
		"declared length":               head + fmt.Sprintf("Content-Length: %d\r\n\r\n", limit+100<<10) + chunk,
		"declared length, 100-continue": head + fmt.Sprintf("Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", limit+100<<10),
	}
	for name, sent := range tests {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, Options{MaxBodyBytes: limit}, localstore.Limits{})
			addr, read := countedServer(t, e)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, sent); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, body := readAnswer(t, conn, br)
			if got, want := resp.StatusCode, http.StatusRequestEntityTooLarge; got != want {
				t.Fatalf("status %d, want %d: %s", got, want, body)
			}
			if !strings.Contains(body, CodeBodyTooLarge) || !strings.Contains(body, "admin.max_body_bytes") {
				t.Errorf("body %s lacks %s naming admin.max_body_bytes", body, CodeBodyTooLarge)
			}
			if !resp.Close {
				t.Error("the 413 does not announce Connection: close")
			}
			// More body after the answer: the server must not read it.
			go func() {
				for range 32 {
					if _, err := io.WriteString(conn, chunk); err != nil {
						return // the server closed: expected
					}
				}
			}()
			waitClosed(t, conn, br)
			if got, max := read.Load(), int64(len(sent)); got > max {
				t.Errorf("server read %d bytes; only %d were sent before the answer", got, max)
			}
			if _, err := e.store.Get("c"); !errors.Is(err, localstore.ErrNotFound) {
				t.Errorf("context c: %v; want nothing stored", err)
			}
		})
	}
}

// TestServer_BodyReadTimeout stalls and trickles bodies on raw connections.
func TestServer_BodyReadTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	e := newTestEnv(t, Options{BodyReadTimeout: timeout}, localstore.Limits{})
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", e.server.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, bufio.NewReader(conn)
	}
	stalled := map[string]string{
		"length":  "POST /v1/contexts/t/counters/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"b",
		"chunked": "POST /v1/contexts/t/counters/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"b\r\n",
	}
	for name, req := range stalled {
		t.Run("stalled "+name, func(t *testing.T) {
			conn, br := dial(t)
			start := time.Now()
			io.WriteString(conn, req)
			resp, body := readAnswer(t, conn, br)
			if got, want := resp.StatusCode, http.StatusRequestTimeout; got != want {
				t.Fatalf("status %d, want %d: %s", got, want, body)
			}
			if !strings.Contains(body, CodeBodyTimeout) || !strings.Contains(body, timeout.String()) {
				t.Errorf("body %s lacks %s naming %s", body, CodeBodyTimeout, timeout)
			}
			if took := time.Since(start); took < timeout {
				t.Errorf("answered after %v, before the timeout %v", took, timeout)
			}
			waitClosed(t, conn, br)
		})
	}
	if _, err := e.store.Get("t"); !errors.Is(err, localstore.ErrNotFound) {
		t.Errorf("context t: %v; want nothing stored", err)
	}

	t.Run("body no handler reads", func(t *testing.T) {
		if _, err := e.client.Incr(context.Background(), "d", "k", 1, 0); err != nil {
			t.Fatal(err)
		}
		conn, br := dial(t)
		io.WriteString(conn, "DELETE /v1/contexts/d HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Requested-By: test\r\nContent-Length: 100\r\n\r\nabc")
		resp, body := readAnswer(t, conn, br)
		if got, want := resp.StatusCode, http.StatusNoContent; got != want {
			t.Fatalf("status %d, want %d: %s", got, want, body)
		}
		waitClosed(t, conn, br)
	})

	t.Run("trickled within the timeout", func(t *testing.T) {
		conn, br := dial(t)
		body := `{"by":7}`
		fmt.Fprintf(conn, "POST /v1/contexts/slow/counters/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
		// The whole body takes longer than the timeout; no gap between two bytes does.
		tick := time.NewTicker(timeout / 4)
		defer tick.Stop()
		for i := range len(body) {
			<-tick.C
			io.WriteString(conn, body[i:i+1])
		}
		resp, got := readAnswer(t, conn, br)
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(got) != `{"value":7}` {
			t.Fatalf("answer %d %s, want 200 {\"value\":7}", resp.StatusCode, got)
		}
		// The connection stays usable, and idle past the timeout.
		<-time.After(2 * timeout)
		io.WriteString(conn, "GET /v1/contexts/slow/counters/k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		if resp, got := readAnswer(t, conn, br); resp.StatusCode != http.StatusOK || strings.TrimSpace(got) != `{"value":7}` {
			t.Errorf("next request on the connection: %d %s", resp.StatusCode, got)
		}
	})

	t.Run("watch outlives the timeout", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w, err := e.client.Watch(ctx, "w", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ch := events(w)
		<-time.After(3 * timeout) // longer than any body read may wait
		if _, err := e.client.Incr(ctx, "w", "k", 1, 0); err != nil {
			t.Fatal(err)
		}
		if ev := next(t, ch); ev.Context != "w" {
			t.Errorf("event %+v, want one of context w", ev)
		}
	})
}
