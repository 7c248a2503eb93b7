package proxy

import (
	"io"
	"net"
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
# HELP ctxprop_proxy_transparent_refused_total Connections the transparent listener refused, by reason: connection_limit (it held outbound.transparent_max_connections), not_redirected (made to the listener itself, not redirected by a rule: forwarding it would loop).
# TYPE ctxprop_proxy_transparent_refused_total counter
ctxprop_proxy_transparent_refused_total{reason="connection_limit"} 0
ctxprop_proxy_transparent_refused_total{reason="not_redirected"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ctxprop_proxy_transparent_refused_total"); err != nil {
		t.Error(err)
	}
	if got, want := p.Stats().Outbound, uint64(0); got != want {
		t.Errorf("outbound requests = %d, want %d: nothing may be forwarded", got, want)
	}
}
