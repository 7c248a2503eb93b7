package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestOutbound_AbsoluteForm(t *testing.T) {
	var seen http.Header
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		w.Header().Set("Ctx-Ops", `incr;key="from.remote"`)
		io.WriteString(w, "remote "+r.URL.Path)
	}))
	defer remote.Close()
	store := newMemStore()
	p := startProxy(t, Options{Store: store})
	c := proxiedClient(t, p)

	res, body := get(t, c, remote.URL+"/orders", map[string]string{
		"Baggage":     "ctx.name=orders",
		"Traceparent": testTraceparent,
		"Ctx-Ops":     `incr;key="sent";by=2`,
		"Ctx-Flag-X":  "1",
	})
	if got, want := body, "remote /orders"; got != want {
		t.Fatalf("body %q, want %q (status %d)", got, want, res.StatusCode)
	}
	for _, c := range []struct{ header, want string }{
		{"Ctx-Ops", ""},
		{"Ctx-Flag-X", ""},
		{"Baggage", "ctx.name=orders"},
		{"Traceparent", testTraceparent},
		{"X-Forwarded-For", ""}, // a forward proxy adds nothing
	} {
		if got := seen.Get(c.header); got != c.want {
			t.Errorf("remote saw %s %q, want %q", c.header, got, c.want)
		}
	}
	if got := res.Header.Get("Ctx-Ops"); got != "" {
		t.Errorf("the app saw a remote ctx-ops %q", got)
	}
	if got, want := store.counter("orders", "sent"), int64(2); got != want {
		t.Errorf("sent = %d, want %d", got, want)
	}
	if got := store.counter("orders", "from.remote"); got != 0 {
		t.Errorf("a remote pod's ctx-ops were applied: from.remote = %d", got)
	}
	if got := store.counter("orders", KeyRequests); got != 0 {
		t.Errorf("outbound requests counted in telemetry: %d; only the inbound side counts", got)
	}
}

func TestOutbound_OriginFormRefused(t *testing.T) {
	p := startProxy(t, Options{})
	res, body := get(t, http.DefaultClient, "http://"+p.OutboundAddr().String()+"/orders", nil)
	if got, want := res.StatusCode, http.StatusBadRequest; got != want {
		t.Errorf("status %d, want %d", got, want)
	}
	if !strings.Contains(body, "HTTP_PROXY") {
		t.Errorf("body %q does not say to set HTTP_PROXY", body)
	}
}

func TestOutbound_RemoteDown(t *testing.T) {
	p := startProxy(t, Options{})
	down := closedAddr(t)
	res, body := get(t, proxiedClient(t, p), "http://"+down+"/", nil)
	if got, want := res.StatusCode, http.StatusBadGateway; got != want {
		t.Errorf("status %d, want %d", got, want)
	}
	if !strings.Contains(body, down+" refused the connection") {
		t.Errorf("body %q does not name %s", body, down)
	}
}

// TestOutbound_ConnectTunnel reaches a TLS server through CONNECT: the proxy only
// sees ciphertext.
func TestOutbound_ConnectTunnel(t *testing.T) {
	remote := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret "+r.Header.Get("Ctx-Ops"))
	}))
	defer remote.Close()
	p := startProxy(t, Options{})
	tr := remote.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: p.OutboundAddr().String()})
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for i := range 3 { // several requests on one tunnel
		res, body := get(t, c, remote.URL+"/", map[string]string{"Ctx-Ops": `incr;key="x"`})
		if got, want := res.StatusCode, 200; got != want {
			t.Fatalf("request %d: status %d, want %d", i, got, want)
		}
		// Inside a tunnel the proxy cannot and must not touch headers.
		if got, want := body, `secret incr;key="x"`; got != want {
			t.Errorf("body %q, want %q", got, want)
		}
	}
	if got, want := p.Stats().Tunnels, uint64(1); got != want {
		t.Errorf("tunnels %d, want %d (keep-alive inside the tunnel)", got, want)
	}
}

func TestOutbound_ConnectErrors(t *testing.T) {
	p := startProxy(t, Options{})
	down := closedAddr(t)
	for _, c := range []struct {
		target string
		want   int
	}{
		{down, http.StatusBadGateway},
		{"no-port", http.StatusBadRequest},
	} {
		t.Run(c.target, func(t *testing.T) {
			conn, err := net.Dial("tcp", p.OutboundAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", c.target, c.target)
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.StatusCode; got != c.want {
				t.Errorf("status %d, want %d", got, c.want)
			}
		})
	}
}

// TestOutbound_ConnectHalfClose checks that a tunnel passes the client's end of
// stream on and still returns the server's answer after it.
func TestOutbound_ConnectHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		b, _ := io.ReadAll(conn) // until the client's half-close
		fmt.Fprintf(conn, "got %d bytes", len(b))
	}()
	p := startProxy(t, Options{})
	conn, err := net.Dial("tcp", p.OutboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The payload follows the CONNECT header in the same write, as eager clients do.
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\nhello", ln.Addr())
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.StatusCode, 200; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
	io.WriteString(conn, " world")
	conn.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(rest), "got 11 bytes"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestOutbound_LoopRefused(t *testing.T) {
	p := startProxy(t, Options{})
	_, port, _ := net.SplitHostPort(p.OutboundAddr().String())
	for _, target := range []string{p.OutboundAddr().String(), "localhost:" + port, "0.0.0.0:" + port} {
		t.Run(target, func(t *testing.T) {
			res, _ := get(t, proxiedClient(t, p), "http://"+target+"/", nil)
			if got, want := res.StatusCode, http.StatusLoopDetected; got != want {
				t.Errorf("status %d, want %d", got, want)
			}
		})
	}
}

// TestOutbound_FullDuplex streams an HTTP/1.1 request body and its response in lock
// step: each chunk the app echoes must reach the client before the client sends the
// next one.
func TestOutbound_FullDuplex(t *testing.T) {
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(200)
		rc.Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "echo "+line)
			rc.Flush()
		}
	}))
	defer remote.Close()
	p := startProxy(t, Options{})
	pr, pw := io.Pipe()
	// A proxy that is not full duplex deadlocks here; the deadline turns that into
	// a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, remote.URL, pr)
	res, err := proxiedClient(t, p).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	for i := range 3 {
		fmt.Fprintf(pw, "line %d\n", i)
		got, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if want := fmt.Sprintf("echo line %d\n", i); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	pw.Close()
}
