package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// The differential test of the fast path's parser (fastparse.go): the same raw bytes go
// to parseHead and to net/http's http.ReadRequest, followed by the checks net/http's
// server makes on what ReadRequest returns (Host present and valid, field names and
// values valid). The fast parser is never more lenient:
//   - parseOK: net/http accepts too, with the same method, target, version, Host,
//     fields (canonical keys, Host removed), Content-Length or chunked framing, and the
//     same body bytes read by the fast path's body reader;
//   - parseMalformed: net/http refuses too;
//   - parseFallback: the bytes go to net/http itself, which decides; listed in
//     fastparse.go as the deliberate exceptions, so no claim is checked.

// netHTTPReads parses raw as net/http's server does and returns the request with its
// body read (bodyErr is the error reading it), or err when net/http refuses it.
func netHTTPReads(raw []byte) (req *http.Request, body []byte, bodyErr error, err error) {
	req, err = http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, nil, nil, err
	}
	// The checks of net/http's server.readRequest after its readRequest. ReadRequest
	// has moved Host out of the header map already, so a present but empty Host (which
	// the server accepts) reads as missing here; parseHead hands an empty Host to
	// net/http (parseFallback), so no verdict of the parser rests on that difference.
	if req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != http.MethodConnect {
		return nil, nil, nil, errors.New("missing required Host header")
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return nil, nil, nil, errors.New("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, nil, nil, errors.New("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, nil, nil, errors.New("invalid header value")
			}
		}
	}
	body, bodyErr = io.ReadAll(req.Body)
	return req, body, bodyErr, nil
}

// fastReads parses raw with the fast path's parser and body reader.
func fastReads(raw []byte) (h fastHead, v parseVerdict, reason string, body []byte, bodyErr error) {
	n := headEnd(raw)
	if n < 0 {
		return h, parseFallback, "no complete head", nil, nil
	}
	v, reason = parseHead(raw[:n], &h)
	if v != parseOK {
		return h, v, reason, nil, nil
	}
	br := bufio.NewReader(bytes.NewReader(raw[n:]))
	if h.chunked || h.contentLength > 0 {
		b := &fastBody{br: br, remain: h.contentLength, chunked: h.chunked}
		if h.chunked {
			b.cr = httputil.NewChunkedReader(br)
		}
		body, bodyErr = io.ReadAll(b)
	}
	return h, v, reason, body, bodyErr
}

// checkDifferential is the property of the differential test and the fuzz target.
func checkDifferential(t *testing.T, raw []byte) {
	t.Helper()
	h, v, reason, fbody, fbodyErr := fastReads(raw)
	req, nbody, nbodyErr, err := netHTTPReads(raw)
	switch v {
	case parseFallback:
		return
	case parseMalformed:
		if err == nil {
			t.Fatalf("fast parser refused %q (%s) but net/http accepts it", raw, reason)
		}
		return
	}
	if err != nil {
		t.Fatalf("fast parser accepted %q but net/http refuses it: %v", raw, err)
	}
	if got, want := h.method, req.Method; got != want {
		t.Errorf("method %q, net/http %q", got, want)
	}
	if got, want := h.target, req.RequestURI; got != want {
		t.Errorf("target %q, net/http %q", got, want)
	}
	// The fast path sends the target as it came; the Transport sends URL.RequestURI(),
	// after ReverseProxy dropped the query parameters url.ParseQuery refuses.
	if got, want := h.target, req.URL.RequestURI(); got != want {
		t.Errorf("target %q, net/http would send %q", got, want)
	}
	if _, err := url.ParseQuery(req.URL.RawQuery); err != nil {
		t.Errorf("target %q has a query ReverseProxy would clean: %v", h.target, err)
	}
	if got, want := "HTTP/1.1", req.Proto; got != want {
		t.Errorf("proto %q, net/http %q", got, want)
	}
	if got, want := h.host, req.Host; got != want {
		t.Errorf("host %q, net/http %q", got, want)
	}
	if !reflect.DeepEqual(h.header, req.Header) && !(len(h.header) == 0 && len(req.Header) == 0) {
		t.Errorf("fields %q, net/http %q", h.header, req.Header)
	}
	chunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
	if got, want := h.chunked, chunked; got != want {
		t.Errorf("chunked %v, net/http %v", got, want)
	}
	wantCL := req.ContentLength
	if !h.chunked && h.contentLength < 0 {
		if wantCL != 0 {
			t.Errorf("no Content-Length, net/http has %d", wantCL)
		}
	} else if !h.chunked && h.contentLength != wantCL {
		t.Errorf("Content-Length %d, net/http %d", h.contentLength, wantCL)
	}
	if got, want := h.close, req.Close; got != want {
		t.Errorf("close %v, net/http %v", got, want)
	}
	if (fbodyErr == nil) != (nbodyErr == nil) {
		t.Errorf("body error %v, net/http %v", fbodyErr, nbodyErr)
	}
	if fbodyErr == nil && nbodyErr == nil && !bytes.Equal(fbody, nbody) {
		t.Errorf("body %q, net/http %q", fbody, nbody)
	}
}

// differentialSeeds are the shapes of smuggling_test.go and framing_test.go, with
// valid requests of every framing the fast path takes. {A} and {H} are filled in.
var differentialSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /p/a%20b?q=1&r=x/y HTTP/1.1\r\nHost: app.local:8080\r\nUser-Agent: t\r\nAccept: */*\r\nAccept: text/plain\r\n\r\n",
	"GET /a*b!c'd(e)f,g;h=i:j@k HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	"GET /%41%2f HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nhost: a\r\nx-lower: 1\r\ncontent-type:  text/plain \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nBaggage: ctx.name=bench\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
	"POST /a HTTP/1.1\r\nHost: a\r\ncontent-LENGTH:\t 3 \r\n\r\nabc",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\"a b\"\r\nhello\r\nA \t\r\n0123456789\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n\r\n",
	// The smuggling shapes.
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: a\r\nX-Pad: a\nContent-Length: 5\r\n\r\nhello",
	"POST /a HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n\tb\r\nContent-Length: 5\r\n\r\nhello",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3 4\r\n\r\nabc",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
	"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
	"GET /a HTTP/1.1\nHost: x\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: x\r\n\n",
	"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
	"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x00\x01binary",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAA\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX\x00: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: 1\x00\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: 1\x7f\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n",
	"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
	"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /?a;b=1 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nTrailer: X\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nKeep-Alive: 5\r\nConnection: Keep-Alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
}

func TestFastParser_Differential(t *testing.T) {
	for _, seed := range differentialSeeds {
		t.Run(strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(seed[:min(len(seed), 60)]), func(t *testing.T) {
			checkDifferential(t, []byte(seed))
		})
	}
}

// TestFastParser_Verdicts pins what the parser does with the shapes that matter most:
// the plain ones are served, every smuggling shape leaves the fast path.
func TestFastParser_Verdicts(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want parseVerdict
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", parseOK},
		{"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", parseOK},
		{"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", parseOK},
		{"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", parseFallback},
		{"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", parseFallback},
		{"POST /a HTTP/1.1\r\nHost: a\r\nX-Pad: a\nContent-Length: 5\r\n\r\n", parseFallback},
		{"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 5\r\n\r\n", parseFallback},
		{"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", parseFallback},
		{"POST /a HTTP/1.0\r\nHost: a\r\n\r\n", parseFallback},
		{"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", parseFallback},
		{"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n", parseFallback},
		{"PRI * HTTP/2.0\r\n\r\n", parseFallback},
		{"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", parseFallback},
		{"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", parseMalformed},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", parseMalformed},
		{"GET / HTTP/1.1\r\n\r\n", parseMalformed},
		{"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", parseMalformed},
	} {
		n := headEnd([]byte(c.raw))
		if n < 0 {
			t.Fatalf("%q: no head found", c.raw)
		}
		var h fastHead
		if got, reason := parseHead([]byte(c.raw[:n]), &h); got != c.want {
			t.Errorf("%q: verdict %d (%s), want %d", c.raw, got, reason, c.want)
		}
	}
}

func FuzzFastParser(f *testing.F) {
	for _, seed := range differentialSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkDifferential(t, raw)
	})
}
