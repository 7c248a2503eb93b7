package proxy

import (
	"net"
	"net/http"
	"time"
)

// router sends each request upstream in the protocol it came in: h2c requests (gRPC
// among them) over prior-knowledge HTTP/2, everything else over HTTP/1.1. Each
// protocol has its own pool, sized by Options.MaxIdleConnsPerHost.
type router struct {
	h1  *http.Transport
	h2c *http.Transport
}

var _ http.RoundTripper = (*router)(nil)

// newRouter builds the transports of one side. idle closes upstream connections idle
// that long; zero keeps them. net/http stops and rearms that timer every time a
// connection goes back to the pool, once per request: the inbound side, whose one
// upstream is the local app, keeps its pool (bounded by MaxIdleConnsPerHost; a
// connection the app closes leaves the pool when its read loop sees the close) and
// saves the timer. The outbound side reaches many hosts and needs it.
func newRouter(opt Options, d *net.Dialer, idle time.Duration) *router {
	newTransport := func(h2c bool) *http.Transport {
		var protos http.Protocols
		if h2c {
			protos.SetUnencryptedHTTP2(true)
		} else {
			// Never HTTP/2 for an HTTP/1.1 request: Upgrade and WebSocket need
			// HTTP/1.1 end to end.
			protos.SetHTTP1(true)
		}
		return &http.Transport{
			// Proxy stays nil: the sidecar's own environment may carry the
			// HTTP_PROXY meant for the app, and following it would loop.
			DialContext:           d.DialContext,
			Protocols:             &protos,
			MaxIdleConns:          0, // no total limit; the per-host one bounds each pool
			MaxIdleConnsPerHost:   opt.MaxIdleConnsPerHost,
			IdleConnTimeout:       idle,
			ResponseHeaderTimeout: opt.ResponseHeaderTimeout,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			// A proxy passes Content-Encoding through: with compression on,
			// the transport would ask for gzip and unzip it behind the
			// client's back.
			DisableCompression:     true,
			MaxResponseHeaderBytes: 1 << 20,
		}
	}
	return &router{h1: newTransport(false), h2c: newTransport(true)}
}

func (t *router) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.ProtoMajor == 2 && r.URL.Scheme == "http" {
		return t.h2c.RoundTrip(r)
	}
	return t.h1.RoundTrip(r)
}

func (t *router) closeIdle() {
	t.h1.CloseIdleConnections()
	t.h2c.CloseIdleConnections()
}
