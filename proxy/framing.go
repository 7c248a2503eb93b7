package proxy

import (
	"bytes"
	"context"
	"hash/maphash"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Request framing (SPEC §4a; issue 10 item 1; RFC 9112 §6.1, §6.3, §11.2).
//
// net/http parses request framing strictly, yet a front end (an ingress, another proxy)
// that reads the same bytes differently could still hide a request inside another:
//
//   - a request with both Content-Length and Transfer-Encoding: net/http follows the
//     latter and deletes the former before any handler runs, so no handler can tell;
//     RFC 9112 §6.1 has the server close the connection after responding;
//   - Transfer-Encoding on HTTP/1.0, which net/http deletes and ignores;
//   - bare LF line endings and obs-fold, which net/http accepts (RFC 9112 allows both)
//     and a stricter or older parser splits differently.
//
// framedConn looks at the raw bytes of each HTTP/1 connection as net/http reads them and
// keeps, per request, a verdict on its header block; the handler takes it and closes the
// connection after the response when the framing was ambiguous. To find where the next
// request starts it follows the body framing (Content-Length, chunked) the way net/http
// does; when it cannot follow (trailers, Upgrade, CONNECT, h2c, anything net/http would
// refuse) it stops and the requests it has no verdict for count as unverified, which
// closes their connection too. Each verdict carries a hash of its request line, checked
// against the one net/http parsed, so a verdict can never be applied to another request.

// closeReason says why the proxy closed a client connection after a response, the
// "reason" label of ctxprop_proxy_closed_connections_total.
type closeReason uint8

const (
	reasonNone        closeReason = iota
	reasonCLTE                    // Content-Length and Transfer-Encoding together
	reasonTE10                    // Transfer-Encoding on HTTP/1.0, which net/http ignores
	reasonBareLF                  // a header line ended by LF alone
	reasonObsFold                 // a header line folded onto the next (obs-fold)
	reasonUnverified              // the framing could not be followed up to or past this request
	reasonBodyError               // the request body was malformed
	reasonBodyUnread              // the exchange ended before the request body did
	reasonBodyTimeout             // the client stalled its body longer than Options.BodyTimeout
	numReasons
)

var reasonNames = [numReasons]string{
	"", "content_length_and_transfer_encoding", "transfer_encoding_http10", "bare_lf", "obs_fold",
	"unverified", "body_error", "body_unread", "body_timeout",
}

// reasonText explains each reason in a log line.
var reasonText = [numReasons]string{
	"",
	"the request has both Content-Length and Transfer-Encoding (RFC 9112 §6.1)",
	"the request is HTTP/1.0 with a Transfer-Encoding, which HTTP/1.0 does not define",
	"a header line ends with LF alone, which a stricter parser reads differently",
	"a header line is folded onto the next (obs-fold)",
	"the proxy cannot follow this connection's framing up to or past this request (a chunked trailer, deep pipelining, a header it cannot read)",
	"the request body is malformed",
	"the response ended before the request body was read to its end",
	"the client sent no body data for longer than the body timeout",
}

// framingListener wraps each accepted connection in a framedConn.
type framingListener struct{ net.Listener }

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newFramedConn(c), nil
}

type framedConnKey struct{}

// connContext is the http.Server ConnContext of the listeners: it lets a handler find
// the framedConn of its request, and the original destination of a redirected one.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*framedConn); ok {
		ctx = context.WithValue(ctx, framedConnKey{}, fc)
		c = fc.Conn
	}
	if ic, ok := c.(*interceptConn); ok {
		ctx = context.WithValue(ctx, origDstKey{}, ic.dst)
	}
	return ctx
}

func framedConnOf(r *http.Request) *framedConn {
	fc, _ := r.Context().Value(framedConnKey{}).(*framedConn)
	return fc
}

// maxQueued bounds the verdicts of pipelined requests that net/http has not served yet;
// a client that pipelines more stops being followed (its later requests are unverified).
const maxQueued = 8

// framedConn is a client connection whose reads pass through a scanner. Reads are
// serialized by net/http (its connReader allows one at a time); take runs on handler
// goroutines. Both hold mu.
type framedConn struct {
	net.Conn
	lost atomic.Bool // the scanner stopped: Read passes bytes through untouched

	mu    sync.Mutex
	scan  scanner
	queue [maxQueued]verdict // verdicts not taken yet, oldest at qHead
	qHead int
	qLen  int
}

// verdict is the scanner's finding on one request's header block.
type verdict struct {
	line   uint64 // hash of the request line, seeded per connection
	reason closeReason
	te     bool // Transfer-Encoding was present: ambiguous on HTTP/1.0, which the scanner cannot see
}

func newFramedConn(c net.Conn) *framedConn {
	fc := &framedConn{Conn: c}
	fc.scan.seed = maphash.MakeSeed()
	fc.scan.reset()
	return fc
}

func (c *framedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.lost.Load() {
		c.mu.Lock()
		c.feed(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

// CloseWrite half-closes the connection; net/http uses it to close gracefully after a
// response it wants the client to read before the reset of a full close.
func (c *framedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// feed runs the scanner over b; mu is held.
func (c *framedConn) feed(b []byte) {
	s := &c.scan
	for len(b) > 0 && !s.stopped {
		b = s.step(b)
		if s.done {
			s.done = false
			v := s.verdict()
			if c.qLen == len(c.queue) {
				s.stopped = true // pipelined too deep to keep verdicts
				break
			}
			c.queue[(c.qHead+c.qLen)%len(c.queue)] = v
			c.qLen++
			s.afterBlock(v)
		}
	}
	if s.stopped {
		c.lost.Store(true)
	}
}

// take returns the verdict on r, the request whose handler runs now, and marks the
// connection as closing when the verdict says so. Without a matching verdict, r is
// unverified.
func (c *framedConn) take(r *http.Request) closeReason {
	c.mu.Lock()
	defer c.mu.Unlock()
	reason := reasonUnverified
	if c.qLen > 0 {
		v := c.queue[c.qHead]
		c.qHead = (c.qHead + 1) % len(c.queue)
		c.qLen--
		if v.line == requestLineHash(c.scan.seed, r) {
			reason = v.reason
			if v.te && r.ProtoMajor == 1 && r.ProtoMinor == 0 {
				reason = reasonTE10
			}
		}
	}
	if reason != reasonNone {
		c.stopLocked()
	}
	return reason
}

// following reports whether the scanner still follows the connection; once it does not,
// the connection closes after the response in progress.
func (c *framedConn) following() bool {
	return !c.lost.Load()
}

// stopLocked stops the scanner: the connection closes after this response, nothing after
// it needs a verdict.
func (c *framedConn) stopLocked() {
	c.scan.stopped = true
	c.lost.Store(true)
}

// requestLineHash hashes the request line net/http parsed r from, which is exactly
// "METHOD SP request-target SP HTTP-version" (net/http splits it at the first two
// spaces). The seed is the connection's, random: a client cannot craft two request lines
// that collide.
func requestLineHash(seed maphash.Seed, r *http.Request) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteString(r.Method)
	h.WriteByte(' ')
	h.WriteString(r.RequestURI)
	h.WriteByte(' ')
	h.WriteString(r.Proto)
	return h.Sum64()
}

// scanState is where the scanner is in the stream.
type scanState uint8

const (
	inHeader    scanState = iota // a line of a header block, the request line first
	inBody                       // a Content-Length body
	inChunkLine                  // a chunk-size line
	inChunkData                  // chunk data
	inChunkEnd                   // the CRLF after chunk data
	inLastCRLF                   // the CRLF after the last chunk: trailers are not followed
)

// lineKeep is how much of a line the scanner keeps: the names and values that decide
// framing fit; a longer Content-Length, Transfer-Encoding or chunk-size line stops it.
const lineKeep = 64

// scanner follows HTTP/1 request framing over the raw bytes of a connection, as net/http
// reads it, and judges each header block. It mirrors net/http only where net/http
// accepts the bytes: anything net/http refuses ends the connection anyway, so there the
// scanner just stops.
type scanner struct {
	seed    maphash.Seed // of the request line hashes
	state   scanState
	stopped bool // gave up; the connection closes after the current response
	done    bool // a header block just ended; its verdict is ready

	// The current line.
	line   [lineKeep]byte
	n      int          // its length so far, which may exceed lineKeep
	last   byte         // its last byte so far
	hash   maphash.Hash // of the request line, without its trailing CR
	heldCR bool         // the request line's last byte so far is a CR not yet hashed

	// The current header block.
	first   bool // the current line is the request line
	reason  closeReason
	cl      int64 // Content-Length, -1 if none
	teCount int
	chunked bool // the last Transfer-Encoding was "chunked"
	unsure  bool // a Content-Length or Transfer-Encoding the scanner could not read
	tunnel  bool // CONNECT or Upgrade: what follows may not be HTTP

	remain uint64 // bytes left of a Content-Length body or of chunk data
}

// reset starts a new request.
func (s *scanner) reset() {
	*s = scanner{seed: s.seed, stopped: s.stopped, state: inHeader, first: true, cl: -1}
	s.hash.SetSeed(s.seed)
}

// verdict is the judgment on the header block that just ended.
func (s *scanner) verdict() verdict {
	v := verdict{line: s.hash.Sum64(), reason: s.reason, te: s.teCount > 0}
	switch {
	case v.reason != reasonNone:
	case s.unsure:
		v.reason = reasonUnverified
	case s.teCount > 0 && s.cl >= 0:
		v.reason = reasonCLTE
	}
	return v
}

// afterBlock sets up the body of the request whose header block just ended.
func (s *scanner) afterBlock(v verdict) {
	switch {
	case v.reason != reasonNone || s.tunnel:
		// The connection closes after this request, or leaves HTTP.
		s.stopped = true
	case s.teCount > 0:
		if s.teCount != 1 || !s.chunked {
			s.stopped = true // net/http answers 501 and closes
			return
		}
		s.newLine()
		s.state = inChunkLine
	case s.cl > 0:
		s.state, s.remain = inBody, uint64(s.cl)
	default:
		s.reset()
	}
}

func (s *scanner) newLine() {
	s.n, s.last = 0, 0
}

// step consumes bytes from b and returns the rest. It stops early when a header block
// ends, so that the caller can queue its verdict.
func (s *scanner) step(b []byte) []byte {
	switch s.state {
	case inBody, inChunkData:
		k := uint64(len(b))
		if k > s.remain {
			k = s.remain
		}
		s.remain -= k
		b = b[k:]
		if s.remain == 0 {
			if s.state == inBody {
				s.reset()
			} else {
				s.state = inChunkEnd
				s.newLine()
			}
		}
		return b
	case inChunkEnd, inLastCRLF:
		// Exactly CRLF, as net/http's chunked reader demands; after the last chunk,
		// anything else is a trailer, which the scanner does not follow.
		want := byte('\r')
		if s.n == 1 {
			want = '\n'
		}
		if b[0] != want {
			s.stopped = true
			return nil
		}
		s.n++
		if s.n == 2 {
			if s.state == inChunkEnd {
				s.state = inChunkLine
				s.newLine()
			} else {
				s.reset()
			}
		}
		return b[1:]
	}
	// A line of a header block or a chunk-size line.
	i := bytes.IndexByte(b, '\n')
	seg := b
	if i >= 0 {
		seg = b[:i]
	}
	s.appendLine(seg)
	if i < 0 {
		return nil
	}
	if s.state == inHeader {
		s.endHeaderLine()
	} else {
		s.endChunkLine()
	}
	return b[i+1:]
}

// appendLine adds seg, which holds no LF, to the current line.
func (s *scanner) appendLine(seg []byte) {
	if len(seg) == 0 {
		return
	}
	if s.state == inHeader && s.n == 0 && !s.first && (seg[0] == ' ' || seg[0] == '\t') {
		s.reason = firstReason(s.reason, reasonObsFold)
	}
	if s.n < lineKeep {
		copy(s.line[s.n:], seg)
	}
	if s.state == inHeader && s.first {
		if s.heldCR {
			s.hash.WriteByte('\r')
			s.heldCR = false
		}
		end := len(seg)
		if seg[end-1] == '\r' {
			end--
			s.heldCR = true
		}
		s.hash.Write(seg[:end])
	}
	s.n += len(seg)
	s.last = seg[len(seg)-1]
}

// content returns the current line without its CR, and whether it is complete in
// s.line.
func (s *scanner) content() ([]byte, bool) {
	n := s.n
	if s.last == '\r' {
		n--
	}
	if n > lineKeep {
		return s.line[:lineKeep], false
	}
	return s.line[:n], true
}

// endHeaderLine judges a complete line of a header block.
func (s *scanner) endHeaderLine() {
	defer s.newLine()
	if s.last != '\r' {
		s.reason = firstReason(s.reason, reasonBareLF)
	}
	line, whole := s.content()
	if s.first {
		s.first, s.heldCR = false, false
		if len(line) == 0 || bytes.HasPrefix(line, []byte("PRI ")) {
			s.stopped = true // refused, or the h2c preface: not HTTP/1 from here on
			return
		}
		if bytes.HasPrefix(line, []byte("CONNECT ")) {
			s.tunnel = true
		}
		return
	}
	if len(line) == 0 {
		s.done = true
		return
	}
	switch line[0] | 0x20 { // the fields below start with c, t or u
	case 'c', 't', 'u':
	default:
		return
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return // not a field that decides framing (net/http refuses a line without a colon)
	}
	switch {
	case asciiEqualFold(name, "content-length"):
		// A value the scanner cannot read is one net/http refuses (400), unless a
		// folded line follows it: the verdict tells which when the block ends.
		n, ok := parseLength(trimOWS(value))
		if !whole || !ok || s.cl >= 0 && n != s.cl {
			s.unsure = true
			return
		}
		s.cl = n
	case asciiEqualFold(name, "transfer-encoding"):
		s.unsure = s.unsure || !whole
		s.teCount++
		s.chunked = asciiEqualFold(trimOWS(value), "chunked")
	case asciiEqualFold(name, "upgrade"):
		s.tunnel = true
	}
}

// endChunkLine reads a complete chunk-size line the way net/http's chunked reader
// does: CRLF-terminated, trailing whitespace trimmed, then the extension cut at ';',
// then 1 to 16 hex digits.
func (s *scanner) endChunkLine() {
	line, whole := s.content()
	if s.last != '\r' || !whole {
		s.stopped = true // net/http fails the body, or the scanner cannot tell
		return
	}
	line = bytes.TrimRight(line, " \t")
	line, _, _ = bytes.Cut(line, []byte(";"))
	if len(line) == 0 || len(line) > 16 {
		s.stopped = true
		return
	}
	var size uint64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			s.stopped = true
			return
		}
		size = size<<4 | uint64(c)
	}
	s.newLine()
	if size == 0 {
		s.state = inLastCRLF
		return
	}
	s.state, s.remain = inChunkData, size
}

// parseLength parses a Content-Length as net/http does (strconv.ParseUint(v, 10, 63)),
// without allocating.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > math.MaxInt64 {
		return 0, false
	}
	return int64(n), true
}

func firstReason(have, add closeReason) closeReason {
	if have != reasonNone {
		return have
	}
	return add
}

func trimOWS(b []byte) []byte { return bytes.Trim(b, " \t") }

// asciiEqualFold reports whether b equals the lower-case ASCII s, ignoring case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
