package proxy

import (
	"bufio"
	"bytes"
	"hash/maphash"
	"io"
	"net/http"
	"strings"
	"testing"
)

// scanAll runs a fresh scanner over stream, split into pieces of at most split bytes
// (0: one piece), and returns the verdicts it queued and whether it still follows, and
// the connection, whose seed hashes request lines.
func scanAll(stream string, split int) ([]verdict, bool, *framedConn) {
	c := newFramedConn(nil)
	var got []verdict
	b := []byte(stream)
	for len(b) > 0 {
		n := len(b)
		if split > 0 && n > split {
			n = split
		}
		c.feed(b[:n])
		b = b[n:]
		for c.qLen > 0 { // drain, as handlers do, so that the queue never fills
			got = append(got, c.queue[c.qHead])
			c.qHead = (c.qHead + 1) % len(c.queue)
			c.qLen--
		}
	}
	return got, !c.lost.Load(), c
}

// lineHash hashes a request line the way the scanner does for c.
func lineHash(c *framedConn, line string) uint64 {
	var h maphash.Hash
	h.SetSeed(c.scan.seed)
	h.WriteString(line)
	return h.Sum64()
}

func TestScanner_Verdicts(t *testing.T) {
	type want struct {
		line   string
		reason closeReason
	}
	cases := []struct {
		name      string
		stream    string
		want      []want
		following bool
	}{
		{"no body", "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
			[]want{{"GET /a HTTP/1.1", 0}, {"GET /b HTTP/1.1", 0}}, true},
		{"content-length body holding a request line", "POST /a HTTP/1.1\r\nContent-Length: 19\r\n\r\nGET /x HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}, {"GET /b HTTP/1.1", 0}}, true},
		{"chunked body with extension and whitespace", "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\"a b\"\r\nhello\r\nA \t\r\n0123456789\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}, {"GET /b HTTP/1.1", 0}}, true},
		{"mixed-case names and padded values", "POST /a HTTP/1.1\r\ncontent-LENGTH:\t 3 \r\n\r\nabcGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}, {"GET /b HTTP/1.1", 0}}, true},
		{"duplicate equal content-length", "POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}, {"GET /b HTTP/1.1", 0}}, true},
		{"CL and TE", "POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", reasonCLTE}}, false},
		{"bare LF in the request line", "GET /a HTTP/1.1\nHost: x\r\n\r\n",
			[]want{{"GET /a HTTP/1.1", reasonBareLF}}, false},
		{"bare LF ending the block", "GET /a HTTP/1.1\r\nHost: x\r\n\n",
			[]want{{"GET /a HTTP/1.1", reasonBareLF}}, false},
		{"obs-fold", "GET /a HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
			[]want{{"GET /a HTTP/1.1", reasonObsFold}}, false},
		{"folded content-length", "POST /a HTTP/1.1\r\nContent-Length:\r\n 5\r\n\r\nhello",
			[]want{{"POST /a HTTP/1.1", reasonObsFold}}, false},
		{"content-length the scanner cannot read", "POST /a HTTP/1.1\r\nContent-Length: 5" + strings.Repeat(" ", 80) + "\r\n\r\nhello",
			[]want{{"POST /a HTTP/1.1", reasonUnverified}}, false},
		{"trailer", "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}}, false},
		{"bad chunk size", "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}}, false},
		{"space before the extension", "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}}, false},
		{"chunk data without CRLF", "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxGET /b HTTP/1.1\r\n\r\n",
			[]want{{"POST /a HTTP/1.1", 0}}, false},
		{"upgrade", "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
			[]want{{"GET /ws HTTP/1.1", 0}}, false},
		{"connect", "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x00\x01binary",
			[]want{{"CONNECT db:5432 HTTP/1.1", 0}}, false},
		{"h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04", nil, false},
		// net/http refuses a CR inside a line (400, then close): the scanner need not.
		{"CR inside a line", "GET /a HTTP/1.1\r\nX: a\rb\r\n\r\n", []want{{"GET /a HTTP/1.1", 0}}, true},
	}
	for _, c := range cases {
		for _, split := range []int{0, 1, 7} {
			got, following, fc := scanAll(c.stream, split)
			if len(got) != len(c.want) {
				t.Errorf("%s, split %d: %d verdicts %v, want %d", c.name, split, len(got), got, len(c.want))
				continue
			}
			for i, w := range c.want {
				if got[i].line != lineHash(fc, w.line) {
					t.Errorf("%s, split %d: verdict %d is not for %q", c.name, split, i, w.line)
				}
				if got[i].reason != w.reason {
					t.Errorf("%s, split %d: verdict %d reason %q, want %q", c.name, split, i, reasonNames[got[i].reason], reasonNames[w.reason])
				}
			}
			if following != c.following {
				t.Errorf("%s, split %d: following = %v, want %v", c.name, split, following, c.following)
			}
		}
	}
}

// TestFramedConn_Take checks the handler's side: a verdict is applied only to the
// request it was made for, and an HTTP/1.0 request with a Transfer-Encoding is
// ambiguous even though the scanner cannot see the version.
func TestFramedConn_Take(t *testing.T) {
	c := newFramedConn(nil)
	c.feed([]byte("GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"))
	other, _ := http.NewRequest(http.MethodGet, "/other", nil)
	other.RequestURI, other.Proto = "/other", "HTTP/1.1"
	if got, want := c.take(other), reasonUnverified; got != want {
		t.Errorf("a request the verdict is not for: %q, want %q", reasonNames[got], reasonNames[want])
	}
	if c.following() {
		t.Errorf("the scanner still follows a connection whose verdicts went out of step")
	}

	c = newFramedConn(nil)
	c.feed([]byte("POST /b HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"))
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("POST /b HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.take(r), reasonTE10; got != want {
		t.Errorf("HTTP/1.0 with Transfer-Encoding: %q, want %q", reasonNames[got], reasonNames[want])
	}
}

// FuzzScanner checks the scanner against net/http's own parser on the same bytes: for
// every request net/http reads, in order, the scanner has a verdict for that request line
// or has stopped, and a verdict of "nothing wrong" is only given to a header block in
// which a plain reading finds no bare LF, no folded line, and not both Content-Length and
// Transfer-Encoding. Pieces of the stream are fed as the first byte of the input says.
func FuzzScanner(f *testing.F) {
	for _, s := range desyncShapes {
		f.Add([]byte("\x05" + expandShape(s.raw, "/a", "/s", "h")))
	}
	f.Add([]byte("\x00GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nokGET /c HTTP/1.1\r\nHost: h\r\n\r\n"))
	f.Add([]byte("\x03POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		split, stream := int(data[0]%16), data[1:]
		got, _, fc := scanAll(string(stream), split)

		src := bytes.NewReader(stream)
		br := bufio.NewReader(src)
		offset := func() int { return len(stream) - src.Len() - br.Buffered() }
		for i := 0; ; i++ {
			start := offset()
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			header := string(stream[start:offset()])
			_, bodyErr := io.Copy(io.Discard, r.Body)
			if i >= len(got) {
				return // the scanner stopped before this request: it is unverified
			}
			if got[i].line != requestLineHash(fc.scan.seed, r) {
				t.Fatalf("request %d: the scanner's verdict is for another request line than %q", i, r.Method+" "+r.RequestURI+" "+r.Proto)
			}
			if got[i].reason == reasonNone {
				if why := plainFramingProblem(header); why != "" {
					t.Fatalf("request %d: verdict clean, but its header block %q has %s", i, header, why)
				}
			}
			if bodyErr != nil {
				return
			}
		}
	})
}

// plainFramingProblem is the scanner's header judgment written the plain way, over a
// whole header block.
func plainFramingProblem(header string) string {
	lines := strings.SplitAfter(header, "\n")
	var cl, te bool
	for i, l := range lines {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\r\n") {
			return "a bare LF"
		}
		if i > 0 && (l[0] == ' ' || l[0] == '\t') {
			return "a folded line"
		}
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(name) {
		case "content-length":
			cl = true
		case "transfer-encoding":
			te = true
		}
	}
	if cl && te {
		return "both Content-Length and Transfer-Encoding"
	}
	return ""
}

// BenchmarkScanner is the framing check's cost per request: the raw bytes of a typical
// request with a small body, scanned as net/http reads them, and the verdict taken.
func BenchmarkScanner(b *testing.B) {
	raw := []byte("POST /orders/1001/items HTTP/1.1\r\nHost: orders.default.svc.cluster.local:8080\r\n" +
		"User-Agent: Go-http-client/1.1\r\nContent-Length: 27\r\nAccept-Encoding: gzip\r\n" +
		"Baggage: ctx.name=checkout,ctx.flag.new-checkout=on\r\n" +
		"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n" +
		"Content-Type: application/json\r\n\r\n{\"sku\":\"A-17\",\"quantity\":2}")
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		b.Fatal(err)
	}
	c := newFramedConn(nil)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		c.mu.Lock()
		c.feed(raw)
		c.mu.Unlock()
		if c.take(r) != reasonNone {
			b.Fatal("a clean request judged ambiguous")
		}
	}
}
