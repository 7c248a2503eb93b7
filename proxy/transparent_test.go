package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestClassify: the first bytes of a redirected connection decide its fate: HTTP/1 in
// origin-form and the h2c preface get the header work; TLS, a CONNECT or absolute-form
// request (meant for a proxy at the destination) and anything else are spliced.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name    string
		in      string
		proto   int
		decided bool
	}{
		{"empty", "", protoOpaque, false},
		{"GET", "GET / HTTP/1.1\r\n", protoHTTP1, true},
		{"GET before the version", "GET /x", protoHTTP1, true},
		{"method so far", "POS", protoOpaque, false},
		{"method and space", "POST ", protoOpaque, false},
		{"lowercase get is not HTTP", "get key\r\n", protoOpaque, true},
		{"redis inline", "GET key\r\n", protoOpaque, true},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\n", protoHTTP1, true},
		{"unknown method with version", "PURGE /cache HTTP/1.1\r\n", protoHTTP1, true},
		{"unknown method, line not ended", "PURGE /cache HT", protoOpaque, false},
		{"unknown method, no version", "PURGE /cache\r\n", protoOpaque, true},
		{"CONNECT goes to the proxy there", "CONNECT example.com:443 HTTP/1.1\r\n", protoOpaque, true},
		{"absolute-form goes to the proxy there", "GET http://example.com/ HTTP/1.1\r\n", protoOpaque, true},
		{"h2c preface", h2Preface, protoH2C, true},
		{"h2c preface so far", h2Preface[:10], protoH2C, false},
		{"PRI that is not the preface", "PRI * HTTP/1.1\r\n", protoHTTP1, true},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01", protoTLS, true},
		{"binary", "\x00\x01\x02", protoOpaque, true},
		{"SSH", "SSH-2.0-OpenSSH_9.6\r\n", protoOpaque, true},
		{"a long token is no method", strings.Repeat("A", 40), protoOpaque, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			proto, decided := classify([]byte(c.in))
			if got, want := decided, c.decided; got != want {
				t.Errorf("decided = %v, want %v", got, want)
			}
			if decided || c.decided {
				if got, want := protoNames[proto], protoNames[c.proto]; got != want {
					t.Errorf("proto = %s, want %s", got, want)
				}
			}
		})
	}
}

// TestTransparent_RefusesWhatWasNotRedirected: a connection made straight to the
// transparent listener has the listener itself as original destination; forwarding it
// would loop, so it is closed without an answer, logged and counted.
func TestTransparent_RefusesWhatWasNotRedirected(t *testing.T) {
	p := startProxy(t, Options{TransparentAddress: "127.0.0.1:0"})
	addr := p.TransparentAddr()
	if addr == nil {
		t.Fatal("TransparentAddr() = nil after Open with a TransparentAddress")
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+addr.String()+"\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if len(got) != 0 {
		t.Fatalf("the listener answered %q, want the connection closed without an answer", got)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection is still open after 5s, want it closed")
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(p))
	want := `
# HELP ctxprop_proxy_transparent_refused_total Connections the transparent listener refused, by reason: connection_limit (it held outbound.transparent_max_connections), not_redirected (made to the listener itself, not redirected by a rule: forwarding it would loop), not_local (redirected inbound, meant for an address that is not the pod's: the pod relays to no other host nor to its loopback).
# TYPE ctxprop_proxy_transparent_refused_total counter
ctxprop_proxy_transparent_refused_total{reason="connection_limit"} 0
ctxprop_proxy_transparent_refused_total{reason="not_local"} 0
ctxprop_proxy_transparent_refused_total{reason="not_redirected"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ctxprop_proxy_transparent_refused_total"); err != nil {
		t.Error(err)
	}
	if got, want := p.Stats().Outbound, uint64(0); got != want {
		t.Errorf("outbound requests = %d, want %d: nothing may be forwarded", got, want)
	}
}

// interceptPair hands p.intercept the server side of a real loopback connection, as the
// transparent listener's accept loop does once it has read dst from the kernel (which
// needs redirection rules: cmd/sidecar's TestTransparent_Interception runs those). It
// returns the client side.
func interceptPair(t *testing.T, p *Proxy, dst string) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p.conns.Add(1)
	go func() {
		defer p.conns.Done()
		p.intercept(server, netip.MustParseAddrPort(dst), sideOutbound, p.transQ, nil)
	}()
	return client
}

// TestIntercept_HTTPGoesToTheOriginalDestination: a redirected HTTP/1.1 request gets the
// outbound header work and reaches the original destination, whatever its Host says;
// the Host goes on unchanged.
func TestIntercept_HTTPGoesToTheOriginalDestination(t *testing.T) {
	seen := make(chan *http.Request, 1)
	up := listenHTTP(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		io.WriteString(w, "upstream")
	}))
	p := startProxy(t, Options{TransparentAddress: "127.0.0.1:0", Trace: TraceParticipate})
	c := interceptPair(t, p, up)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: 127.0.0.1:7400\r\nBaggage: ctx.name=order-1\r\n"+
		"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nCtx-Ops: incr;key=\"n\"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "upstream" {
		t.Fatalf("answer %d %q, want the upstream's", resp.StatusCode, body)
	}
	r := <-seen
	if got, want := r.Host, "127.0.0.1:7400"; got != want {
		t.Errorf("upstream saw Host %q, want the client's %q unchanged", got, want)
	}
	if got := r.Header.Get("Ctx-Ops"); got != "" {
		t.Errorf("ctx-ops left the pod: %q", got)
	}
	if tp := r.Header.Get("Traceparent"); !strings.Contains(tp, "4bf92f3577b34da6a3ce929d0e0e4736") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Errorf("upstream saw traceparent %q, want the trace continued with a new parent-id", tp)
	}
	if got, want := p.Stats().Outbound, uint64(1); got != want {
		t.Errorf("outbound requests = %d, want %d", got, want)
	}
	if got := p.trans.conns[sideOutbound][protoHTTP1].Load(); got != 1 {
		t.Errorf("http1 connections = %d, want 1", got)
	}
}

// TestIntercept_H2C: prior-knowledge h2c, as gRPC speaks it, is served and sent on as h2c.
func TestIntercept_H2C(t *testing.T) {
	seen := make(chan *http.Request, 1)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("Trailer", "Grpc-Status")
		io.WriteString(w, "h2c upstream")
		w.Header().Set("Grpc-Status", "0")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := startProxy(t, Options{TransparentAddress: "127.0.0.1:0"})
	c := interceptPair(t, p, ln.Addr().String())
	tr := &http.Transport{Protocols: &protos, DialContext: func(context.Context, string, string) (net.Conn, error) { return c, nil }}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Get("http://svc.example/grpc")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "h2c upstream" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("answer %q, trailer %v; want the upstream's body and its trailer", body, resp.Trailer)
	}
	r := <-seen
	if r.ProtoMajor != 2 || r.Host != "svc.example" {
		t.Errorf("upstream saw %s with :authority %q, want HTTP/2 and svc.example", r.Proto, r.Host)
	}
	if got := p.trans.conns[sideOutbound][protoH2C].Load(); got != 1 {
		t.Errorf("h2c connections = %d, want 1", got)
	}
}

// TestIntercept_OpaqueSplicedByteForByte: bytes that are not HTTP reach the original
// destination untouched, both ways, and a half-close is passed on.
func TestIntercept_OpaqueSplicedByteForByte(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	received := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var got bytes.Buffer
		io.Copy(io.MultiWriter(c, &got), c)
		c.(*net.TCPConn).CloseWrite()
		received <- got.Bytes()
	}()
	p := startProxy(t, Options{TransparentAddress: "127.0.0.1:0"})
	c := interceptPair(t, p, ln.Addr().String())
	data := make([]byte, 1<<20)
	rand.Read(data)
	data[0] = 0x16 // a TLS record header, as far as the sniffer can tell
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	echoed, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(<-received, data) || !bytes.Equal(echoed, data) {
		t.Error("the bytes were changed on the way")
	}
	if got := p.trans.conns[sideOutbound][protoTLS].Load(); got != 1 {
		t.Errorf("tls connections = %d, want 1", got)
	}
}

// TestIntercept_CloseDoesNotWaitOutTheSniff: Close ends a connection whose client has
// not spoken yet instead of waiting for the sniff timeout.
func TestIntercept_CloseDoesNotWaitOutTheSniff(t *testing.T) {
	p, err := New(Options{TransparentAddress: "127.0.0.1:0", SniffTimeout: time.Hour, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	interceptPair(t, p, closedAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		p.Close(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(4 * time.Second):
		t.Fatal("Close still waits 4s into the sniff of a silent connection")
	}
}

// TestNew_TransparentLoopbackOnly: redirected connections arrive on loopback; a listener
// other hosts reach needs the same opt-in as the outbound proxy.
func TestNew_TransparentLoopbackOnly(t *testing.T) {
	for _, c := range []struct {
		addr  string
		allow bool
		want  string // "" for no error
	}{
		{"127.0.0.1:0", false, ""},
		{"[::1]:0", false, ""},
		{"0.0.0.0:0", false, "outbound.allow_non_loopback = true"},
		{"10.1.2.3:7404", false, "outbound.allow_non_loopback = true"},
		{"0.0.0.0:0", true, ""},
		{"7404", false, "want host:port"},
	} {
		t.Run(c.addr, func(t *testing.T) {
			_, err := New(Options{TransparentAddress: c.addr, OutboundNonLoopback: c.allow})
			switch {
			case c.want == "" && err != nil:
				t.Errorf("New = %v, want no error", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("New = %v, want an error with %q", err, c.want)
			}
		})
	}
}

// TestLocalAddrs: a redirected inbound connection may go only to an address of the pod's
// interfaces that is neither loopback nor unspecified; an address added later is found
// once a second has passed since the last read.
func TestLocalAddrs(t *testing.T) {
	ifaces := []net.Addr{
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		&net.IPNet{IP: net.ParseIP("::1"), Mask: net.CIDRMask(128, 128)},
		&net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: net.ParseIP("fd00::3"), Mask: net.CIDRMask(64, 128)},
	}
	reads := 0
	l := &localAddrs{list: func() ([]net.Addr, error) { reads++; return ifaces, nil }}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true},
		{"fd00::3", true},
		{"127.0.0.1", false}, // an interface's, but loopback: the app's loopback-only ports
		{"::1", false},
		{"0.0.0.0", false},
		{"10.1.2.4", false}, // another host on the pod's subnet
		{"198.51.100.7", false},
	} {
		if got := l.has(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("has(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if reads != 1 {
		t.Errorf("the interfaces were read %d times within a second, want 1", reads)
	}
	ifaces = append(ifaces, &net.IPNet{IP: net.ParseIP("10.1.2.4"), Mask: net.CIDRMask(24, 32)})
	l.read = l.read.Add(-time.Second)
	if !l.has(netip.MustParseAddr("10.1.2.4")) {
		t.Error("an address added to an interface is not found after a second")
	}
}
