package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingApp is the app behind the proxy in the smuggling tests: a loopback
// http.Server that records every request it receives, after reading its body.
type recordingApp struct {
	addr string
	mu   sync.Mutex
	seen []string // "METHOD path"
}

func startRecordingApp(t *testing.T) *recordingApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &recordingApp{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Method+" "+r.URL.Path)
		a.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "app saw "+r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *recordingApp) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// smuggled is the request that each shape hides behind the first one.
const smuggled = "GET {S} HTTP/1.1\r\nHost: {H}\r\n\r\n"

// desyncShapes are the classic request-smuggling shapes (PortSwigger's CL.TE, TE.CL and
// TE.TE families, broken chunk framing, bare LF, obs-fold), each followed in the same
// bytes by a second request. {A} is the first request's target, {S} the smuggled one's,
// {H} the Host. A front end that reads the framing one way and the proxy another would
// let the second request through as if the client had sent it.
//
// reason is why the proxy closes the connection after its answer, status that answer;
// reasonNone is for shapes that net/http refuses itself (400, 501) before the proxy runs.
var desyncShapes = []struct {
	name   string
	raw    string
	reason closeReason
	status int
}{
	// CL.TE: a front end using Content-Length sees one request whose body holds the
	// second; net/http uses Transfer-Encoding and sees two.
	{"CL.TE", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, reasonCLTE, 200},
	// TE.CL: the other way round.
	{"TE.CL", "POST {A} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n" + smuggled, reasonCLTE, 200},
	// TE.TE: obfuscated Transfer-Encoding that one parser honours and the other ignores.
	{"TE.TE xchunked", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled, reasonNone, 501},
	{"TE.TE leading space", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding:  chunked\r\n\r\n0\r\n\r\n" + smuggled, reasonCLTE, 200},
	{"TE.TE tab value", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n" + smuggled, reasonCLTE, 200},
	{"TE.TE upper case", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n" + smuggled, reasonCLTE, 200},
	{"TE.TE list", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, reasonNone, 501},
	{"TE.TE duplicate", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled, reasonNone, 501},
	{"TE.TE space before colon", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled, reasonNone, 400},
	{"TE.TE tab before colon", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n" + smuggled, reasonNone, 400},
	{"TE.TE obs-fold", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length: {LEN}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled, reasonObsFold, 200},
	{"TE on HTTP/1.0", "POST {A} HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, reasonTE10, 200},
	// Chunk framing net/http refuses midway: the bytes after the bad chunk line must not
	// be read as a new request.
	{"chunk size not hex", "POST {A} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + smuggled, reasonBodyError, 400},
	{"chunk size overflow", "POST {A} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n" + smuggled, reasonBodyError, 400},
	{"chunk size negative", "POST {A} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n" + smuggled, reasonBodyError, 400},
	{"chunk without CRLF", "POST {A} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX" + smuggled, reasonBodyError, 400},
	{"chunk line bare LF", "POST {A} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\n" + smuggled, reasonBodyError, 400},
	// Bare LF: a front end that splits lines on CRLF only sees one header where net/http
	// sees two, here a Content-Length it did not see.
	{"bare LF hides Content-Length", "POST {A} HTTP/1.1\r\nHost: {H}\r\nX-Pad: a\nContent-Length: 5\r\n\r\nhello" + smuggled, reasonBareLF, 200},
	{"bare LF header block", "POST {A} HTTP/1.1\nHost: {H}\nContent-Length: 5\n\nhello" + smuggled, reasonBareLF, 200},
	// obs-fold: a front end that does not unfold sees an empty Content-Length.
	{"obs-fold Content-Length", "POST {A} HTTP/1.1\r\nHost: {H}\r\nContent-Length:\r\n 5\r\n\r\nhello" + smuggled, reasonObsFold, 200},
	{"obs-fold other header", "POST {A} HTTP/1.1\r\nHost: {H}\r\nX-Folded: a\r\n\tb\r\nContent-Length: 5\r\n\r\nhello" + smuggled, reasonObsFold, 200},
}

// expandShape fills a shape's placeholders. {LEN} is the length of what follows the
// header block, so that a Content-Length reader takes it all as one body.
func expandShape(raw, first, second, host string) string {
	s := strings.NewReplacer("{A}", first, "{S}", second, "{H}", host).Replace(raw)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		s = strings.Replace(s, "{LEN}", fmt.Sprint(len(s)-(i+4)), 1)
	}
	return s
}

// exchangeRaw writes raw on a new connection to addr and reads responses until the
// proxy closes the connection. It returns the responses' statuses and whether the
// connection was closed; a connection still open after wait counts as not closed.
func exchangeRaw(t *testing.T, addr, raw string, wait time.Duration) (statuses []int, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	br := bufio.NewReader(conn)
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
				return statuses, false
			}
			return statuses, true // EOF or reset: the proxy closed the connection
		}
		statuses = append(statuses, res.StatusCode)
		if _, err := io.Copy(io.Discard, res.Body); err != nil {
			res.Body.Close()
			return statuses, true
		}
		res.Body.Close()
	}
}

// TestProxy_Smuggling sends each desync shape to the real inbound and outbound listeners
// with a real app behind: the app must never see the hidden request, and the proxy must
// close the connection after at most one answer (RFC 9112 §6.1, §6.3; issue 10 item 1).
func TestProxy_Smuggling(t *testing.T) {
	app := startRecordingApp(t)
	p := startProxy(t, Options{App: app.addr})
	sides := []struct {
		name, addr, prefix, host string
	}{
		{"inbound", p.InboundAddr().String(), "", "app.test"},
		{"outbound", p.OutboundAddr().String(), "http://" + app.addr, app.addr},
	}
	for _, side := range sides {
		for i, shape := range desyncShapes {
			t.Run(side.name+"/"+shape.name, func(t *testing.T) {
				// Paths unique to the subtest: the app may still be receiving the
				// first request of the one before, which the proxy was forwarding
				// when its body broke.
				id := fmt.Sprintf("/%s/%d", side.name, i)
				sideIndex := sideInbound
				if side.name == "outbound" {
					sideIndex = sideOutbound
				}
				closesBefore := p.stats.closes[sideIndex][shape.reason].Load()
				raw := expandShape(shape.raw, side.prefix+"/a"+id, side.prefix+"/smuggled"+id, side.host)
				statuses, closed := exchangeRaw(t, side.addr, raw, 3*time.Second)
				var seen []string
				for _, r := range app.requests() {
					if strings.HasSuffix(r, id) {
						seen = append(seen, r)
					}
				}
				for _, r := range seen {
					if strings.Contains(r, "/smuggled/") {
						t.Errorf("the app received the hidden request %q; it saw %q", r, seen)
					}
				}
				if len(seen) > 1 {
					t.Errorf("the app received %d requests %q; the client sent one", len(seen), seen)
				}
				if got, want := fmt.Sprint(statuses), fmt.Sprintf("[%d]", shape.status); got != want {
					t.Errorf("the client got answers %s on one connection; want %s, then a close", got, want)
				}
				if shape.reason != reasonNone {
					if got := p.stats.closes[sideIndex][shape.reason].Load(); got != closesBefore+1 {
						t.Errorf("ctxprop_proxy_closed_connections_total{direction=%q,reason=%q} went from %d to %d, want one more",
							side.name, reasonNames[shape.reason], closesBefore, got)
					}
				}
				if !closed {
					t.Errorf("the connection stayed open after answers %v; want it closed after an ambiguous or broken request", statuses)
				}
			})
		}
	}
}

// TestProxy_KeepAliveAfterCleanRequests is the control of TestProxy_Smuggling: honest
// requests pipelined on one connection, with a Content-Length body, a chunked body
// (with an extension) and none, are all answered, and the connection stays open for
// one more.
func TestProxy_KeepAliveAfterCleanRequests(t *testing.T) {
	app := startRecordingApp(t)
	p := startProxy(t, Options{App: app.addr})
	for _, side := range []struct {
		name, addr, prefix, host string
	}{
		{"inbound", p.InboundAddr().String(), "", "app.test"},
		{"outbound", p.OutboundAddr().String(), "http://" + app.addr, app.addr},
	} {
		t.Run(side.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", side.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			roundTrip := func(raw string, answers int) {
				t.Helper()
				if _, err := io.WriteString(conn, expandShape(raw, side.prefix+"/ok/"+side.name, "", side.host)); err != nil {
					t.Fatal(err)
				}
				for i := range answers {
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("answer %d: %v (the proxy closed a connection that carried only well-framed requests?)", i+1, err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if got, want := res.StatusCode, http.StatusOK; got != want {
						t.Errorf("answer %d: status %d, want %d", i+1, got, want)
					}
					if res.Close {
						t.Errorf("answer %d says Connection: close", i+1)
					}
				}
			}
			roundTrip("POST {A}1 HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello"+
				"POST {A}2 HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"+
				"GET {A}3 HTTP/1.1\r\nHost: {H}\r\n\r\n", 3)
			roundTrip("GET {A}4 HTTP/1.1\r\nHost: {H}\r\n\r\n", 1)
			var seen []string
			for _, r := range app.requests() {
				if strings.Contains(r, "/ok/"+side.name) {
					seen = append(seen, r)
				}
			}
			want := fmt.Sprintf("POST /ok/%[1]s1,POST /ok/%[1]s2,GET /ok/%[1]s3,GET /ok/%[1]s4", side.name)
			if got := strings.Join(seen, ","); got != want {
				t.Errorf("the app saw %s, want %s", got, want)
			}
		})
	}
}
