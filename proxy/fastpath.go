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
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"

	"github.com/ctxprop/ctxprop/headers"
)

// The inbound fast path (issue 14): an HTTP/1.1 data path in the model of nginx and
// HAProxy, for the connections of the inbound listener.
//
// Most of the CPU a net/http proxy spends per request is not the header work but the
// machinery around it: the server's connection goroutine and its background read, the
// Transport's read and write loop goroutines per upstream connection, the channels and
// wake-ups between them. Here one goroutine serves one client connection from start to
// end: it reads a request head with parseHead into a pooled buffer, does exactly the
// header work of serveInbound and the ReverseProxy (hop-by-hop rules, X-Forwarded-*,
// headers.ReadInbound and Apply, flags, tracing, telemetry through finishInbound), writes
// the head to a pooled keep-alive connection to the app, and streams the response back
// as it arrives. A request body that is not already in the buffer is copied upstream by
// a second goroutine, so that an app that answers before it read the whole body, or
// streams both ways, cannot deadlock the exchange (the Transport does the same).
//
// Whatever parseHead does not take (h2c, Upgrade and WebSocket, CONNECT, Expect,
// HTTP/1.0, ambiguous or unusual framing, malformed heads, a head larger than the
// buffer) goes to the net/http path at a request boundary: the connection, with the bytes
// read so far replayed in front of it, is handed to the inbound http.Server through its
// connection queue, and stays there. The client sees the same connection and the same
// answers it would have had from the net/http path.
//
// Redirected inbound connections (transparent interception) stay on the net/http path:
// their upstream is the original destination, not the pooled app address.

// fastBufSize is the size of the write buffers and of the body copy; fastReadSize that of
// a client connection's read buffer, which it holds while idle, as net/http's server does
// (4 KiB). A head larger than the read buffer goes to the net/http path. The write
// buffer is held only during an exchange: memory follows requests in flight, not
// connections kept alive.
const (
	fastBufSize  = 8 << 10
	fastReadSize = 4 << 10
)

var (
	fastReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, fastReadSize) }}
	fastWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, fastBufSize) }}
	// fastCopies are the body copies' buffers: fastBufSize, not the net/http path's 32 KiB
	// of which the fast path used a quarter.
	fastCopies = sync.Pool{New: func() any { return new([fastBufSize]byte) }}
)

// fastPath serves the inbound listener's connections; see above.
type fastPath struct {
	p    *Proxy
	pool upstreamPool

	// mu guards the set of connections, taken as a connection starts and ends; the
	// per-request state is atomic, so that requests share no lock. shutdown and a
	// connection going idle each store their flag before they load the other's, so at
	// least one of them sees the other and an idle connection is always closed.
	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	closing  bool        // no new connections; mu
	draining atomic.Bool // shutdown ran: idle connections close, answers say "Connection: close"
	cut      atomic.Bool // closeAll ran: app connections taken from now on are closed at once
	live     tracker     // connections being served, for the drain
}

func newFastPath(p *Proxy) *fastPath {
	f := &fastPath{p: p, conns: make(map[*fastConn]struct{})}
	f.pool.max = p.opt.MaxIdleConnsPerHost
	f.pool.addr = p.opt.App
	f.pool.dialer = p.dialer
	return f
}

// fastConn is one client connection of the fast path.
type fastConn struct {
	c      net.Conn
	rw     io.ReadWriter // c's reads and writes (newRawIO)
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	linger bool                   // closing after an answer with client bytes possibly unread
	idle   atomic.Bool            // waiting for a request
	up     atomic.Pointer[upConn] // the app connection of the exchange in progress
}

// serve takes c; it runs on a goroutine of its own.
func (f *fastPath) serve(c net.Conn) {
	fc := &fastConn{c: c, rw: newRawIO(c), remote: c.RemoteAddr().String()}
	fc.idle.Store(true)
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		c.Close()
		return
	}
	f.conns[fc] = struct{}{}
	f.live.enter()
	f.mu.Unlock()
	fc.br = fastReaders.Get().(*bufio.Reader)
	fc.br.Reset(fc.rw)
	handedOver := f.loop(fc)
	fc.br.Reset(nil)
	fastReaders.Put(fc.br)
	if !handedOver {
		if fc.linger {
			lingerClose(c)
		}
		c.Close()
	}
	f.mu.Lock()
	delete(f.conns, fc)
	f.mu.Unlock()
	f.live.leave()
}

// lingerClose half-closes c and reads what the client still sends for a moment
// before the close, as net/http's closeWriteAndWait: closing a socket with unread bytes
// resets it, and the reset can destroy the answer before the client read it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(c, 256<<10))
}

// setIdle marks fc idle or busy and reports false when the proxy is closing, in which
// case an idle connection is to be closed.
func (f *fastPath) setIdle(fc *fastConn, idle bool) bool {
	fc.up.Store(nil)
	fc.idle.Store(idle)
	return !f.draining.Load()
}

// shutdown stops serving: idle connections close now, busy ones after their response.
// It returns once all are done or ctx ends.
func (f *fastPath) shutdown(ctx context.Context) error {
	f.draining.Store(true)
	f.mu.Lock()
	f.closing = true
	for fc := range f.conns {
		if fc.idle.Load() {
			fc.c.Close()
		}
	}
	f.mu.Unlock()
	return f.live.wait(ctx)
}

// closeAll cuts every connection still open, past the drain deadline.
func (f *fastPath) closeAll() {
	f.draining.Store(true)
	f.cut.Store(true)
	f.mu.Lock()
	f.closing = true
	for fc := range f.conns {
		fc.c.Close()
		if up := fc.up.Load(); up != nil {
			up.c.Close()
		}
	}
	f.mu.Unlock()
	f.pool.closeIdle()
}

// loop serves the requests of fc until the connection ends; it reports true when it
// handed the connection to the net/http path, which then owns it.
func (f *fastPath) loop(fc *fastConn) bool {
	p := f.p
	var h fastHead
	first := true
	for {
		if !f.setIdle(fc, true) {
			return false
		}
		// As in net/http: the first head must come within the read header timeout
		// of the accept; between requests the idle timeout applies until a byte
		// comes, then the read header timeout. A deadline costs a timer update, so it
		// is set only when needed: a head that came whole in the first read needs
		// none more, and one left armed while nothing reads the client is harmless
		// (the next wait sets its own; a body read sets the body timeout or clears it).
		if first {
			setDeadline(fc.c, p.opt.ReadHeaderTimeout)
		} else {
			setDeadline(fc.c, p.opt.IdleTimeout)
		}
		if _, err := fc.br.Peek(1); err != nil {
			return false
		}
		if !f.setIdle(fc, false) {
			return false
		}
		if b, _ := fc.br.Peek(fc.br.Buffered()); !first && headEnd(b) < 0 {
			setDeadline(fc.c, p.opt.ReadHeaderTimeout)
		}
		first = false
		n, err := readHead(fc.br, p.opt.MaxHeaderBytes)
		if err != nil {
			if errors.Is(err, errHeadTooLarge) || errors.Is(err, errNotHTTP) {
				return f.handOver(fc)
			}
			return false // the client left or stalled within a head: net/http closes too
		}
		buf, _ := fc.br.Peek(n)
		if v, _ := parseHead(buf, &h); v != parseOK {
			return f.handOver(fc)
		}
		fc.br.Discard(n)
		if (h.chunked || h.contentLength > 0) && p.opt.BodyTimeout <= 0 {
			fc.c.SetReadDeadline(time.Time{}) // no body timeout: the body may take its time
		}
		if !f.exchange(fc, &h) {
			return false
		}
	}
}

// setDeadline sets c's read deadline d from now; d <= 0 clears it.
func setDeadline(c net.Conn, d time.Duration) {
	if d > 0 {
		c.SetReadDeadline(time.Now().Add(d))
	} else {
		c.SetReadDeadline(time.Time{})
	}
}

// handOver gives fc, with the bytes read and not consumed, to the inbound http.Server.
func (f *fastPath) handOver(fc *fastConn) bool {
	fc.c.SetReadDeadline(time.Time{})
	var head []byte
	if n := fc.br.Buffered(); n > 0 {
		b, _ := fc.br.Peek(n)
		head = bytes.Clone(b)
	}
	f.p.stats.fastHandovers.Add(1)
	f.p.inQ.push(&interceptConn{Conn: fc.c, head: head})
	return true
}

var (
	errHeadTooLarge = errors.New("request head larger than the fast path's buffer")
	errNotHTTP      = errors.New("not an HTTP/1 request line")
)

// readHead waits until br holds a whole request head and returns its length.
func readHead(br *bufio.Reader, maxHeader int) (int, error) {
	limit := min(br.Size(), maxHeader)
	for {
		b, _ := br.Peek(br.Buffered())
		if n := headEnd(b); n >= 0 {
			return n, nil
		}
		if len(b) >= limit {
			return 0, errHeadTooLarge
		}
		// Binary bytes before the first line end (TLS, a stray protocol): net/http
		// answers them at once; so does it here.
		if bytes.IndexByte(b, '\n') < 0 && bytes.ContainsFunc(b, func(r rune) bool { return r < ' ' && r != '\r' && r != '\t' || r == 0x7f }) {
			return 0, errNotHTTP
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			if len(b) > 0 && errors.Is(err, io.EOF) {
				return 0, errNotHTTP // a partial head, then EOF: net/http says what it says
			}
			return 0, err
		}
	}
}

// exchange forwards one request and its response. It reports whether the client
// connection may serve another request.
func (f *fastPath) exchange(fc *fastConn, h *fastHead) (keep bool) {
	p := f.p
	p.stats.inbound.Add(1)
	p.stats.fastRequests.Add(1)
	fc.bw = fastWriters.Get().(*bufio.Writer)
	fc.bw.Reset(fc.rw)
	ex := newExchange(true)
	var span trace.Span
	defer func() {
		fc.bw.Reset(nil)
		fastWriters.Put(fc.bw)
		fc.bw = nil
		p.finishInbound(ex, span)
		ex.release()
	}()

	// The header work of serveInbound and ReverseProxy, in their order.
	in := h.header
	var errs []error
	ex.in, errs = headers.ReadInbound(in, p.hopt, headers.Source{Trusted: p.trustedSource(fc.remote)})
	if errs != nil {
		p.headerErrors("inbound", errs)
	}
	if ex.in.Refused.Any() {
		p.refused(sideInbound, &ex.in.Refused, ex.in.Untrusted, fc.remote)
	}
	if p.opt.Flags != nil {
		r := &http.Request{Method: h.method, Header: in, Host: h.host, RemoteAddr: fc.remote, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, RequestURI: h.target}
		ex.in.Flags = p.opt.Flags.Pin(r, ex.in.Flags)
	}
	_, span, traceID := p.startTrace(p.base, h.method, ex)
	if ex.in.Name != "" || len(ex.in.Flags) > 0 {
		release := p.corr.BeginAt(traceID, ex.in.Entry(), ex.start)
		defer release()
	}
	out := outboundHeader(in, h, fc.remote)
	ex.in.Apply(out, ex.child)
	delete(out, headers.CtxOps)

	hasBody := h.chunked || h.contentLength > 0
	var body *fastBody
	if hasBody {
		body = &fastBody{br: fc.br, remain: h.contentLength, chunked: h.chunked, conn: fc.c, timeout: p.opt.BodyTimeout}
		if h.chunked {
			body.cr = httputil.NewChunkedReader(fc.br)
		}
	}
	res, up, err := f.roundTrip(fc, h, out, body)
	if err != nil {
		// A body the client broke explains the failure better than the app does.
		if body != nil {
			if reason, berr := body.outcome(); berr != nil {
				f.answerBodyError(fc, ex, reason, berr)
				p.countClose(reason, fc.remote, h, berr)
				fc.linger = true
				return false
			}
		}
		reason := reasonNone
		if body != nil {
			reason, _ = body.outcome()
		}
		f.answerUpstreamError(fc, ex, err, h.close || reason != reasonNone)
		if reason != reasonNone {
			// The rest of the body would be read as the next request.
			p.countClose(reason, fc.remote, h, nil)
			fc.linger = true
			return false
		}
		return !h.close
	}
	// The response, streamed.
	keep, reusable := f.relay(fc, ex, h, res, up)
	if body != nil && body.done != nil {
		select {
		case <-body.done:
		default:
			if body.readAll() {
				// The last bytes are on their way to the app; a write the app does
				// not take within a second is given up.
				t := time.AfterFunc(time.Second, func() { up.c.Close() })
				<-body.done
				if !t.Stop() {
					reusable = false
				}
			} else {
				// The app answered before the client sent the whole body: the
				// exchange is over, as on the net/http path (body_unread).
				body.abandon()
				up.c.Close()
				fc.c.SetReadDeadline(time.Now())
				<-body.done
				reusable = false
			}
		}
		fc.c.SetReadDeadline(time.Time{})
	}
	if body != nil {
		reason, berr := body.outcome()
		if reason != reasonNone {
			p.countClose(reason, fc.remote, h, berr)
			keep, reusable = false, false
			fc.linger = true
		}
		if body.trailers {
			p.countClose(reasonUnverified, fc.remote, h, nil)
			keep = false
		}
	}
	if reusable {
		f.pool.put(up)
	} else {
		up.c.Close()
	}
	return keep && !h.close
}

// countClose counts and logs a client connection closed after the response, as
// finishFraming does on the net/http path.
func (p *Proxy) countClose(reason closeReason, remote string, h *fastHead, err error) {
	p.stats.closes[sideInbound][reason].Add(1)
	if p.logFraming.allow() {
		args := []any{"side", sideNames[sideInbound], "reason", reasonNames[reason], "client", remote, "method", h.method, "target", h.target}
		if err != nil {
			args = append(args, "error", err)
		}
		p.log.Warn("client connection closed after the response: "+reasonText[reason], args...)
	}
}

// outboundHeader builds the header the app gets from the client's in, as
// ReverseProxy with rewriteInbound does: hop-by-hop fields and those named in
// Connection removed, "Te: trailers" kept, Forwarded removed, X-Forwarded-For
// extended with the client, X-Forwarded-Host and -Proto set. in is the parser's own and
// is reused as the outbound header once ReadInbound has read it.
func outboundHeader(in http.Header, h *fastHead, remote string) http.Header {
	out := in
	teTrailers := httpguts.HeaderValuesContainsToken(in["Te"], "trailers")
	for _, v := range in["Connection"] {
		for sf := range strings.SplitSeq(v, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				delete(out, textproto.CanonicalMIMEHeaderKey(sf))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(out, k)
	}
	if teTrailers {
		out["Te"] = []string{"trailers"}
	}
	delete(out, "Forwarded")
	delete(out, "X-Forwarded-Host")
	delete(out, "X-Forwarded-Proto")
	// rewriteInbound keeps the client's X-Forwarded-For, which SetXForwarded extends.
	if ip, _, err := net.SplitHostPort(remote); err == nil {
		if prior := out["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		out["X-Forwarded-For"] = []string{ip}
	} else {
		delete(out, "X-Forwarded-For")
	}
	out["X-Forwarded-Host"] = []string{h.host}
	out["X-Forwarded-Proto"] = []string{"http"}
	return out
}

// hopHeaders are ReverseProxy's hop-by-hop fields, removed in both directions.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// reqExclude are the fields writeRequestHead writes itself, as the Transport does.
var reqExclude = map[string]bool{"Host": true, "User-Agent": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// writeRequestHead writes the request head the Transport would: request line, Host,
// User-Agent when not empty, the framing, then the other fields sorted by name.
func writeRequestHead(w *bufio.Writer, h *fastHead, out http.Header) {
	w.WriteString(h.method)
	w.WriteByte(' ')
	w.WriteString(h.target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(h.host)
	w.WriteString("\r\n")
	if ua := out["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		w.WriteString("User-Agent: ")
		w.WriteString(ua[0])
		w.WriteString("\r\n")
	}
	switch {
	case h.chunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	case h.contentLength > 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(h.contentLength, 10))
		w.WriteString("\r\n")
	case h.method == http.MethodPost || h.method == http.MethodPut || h.method == http.MethodPatch:
		// The Transport sends a zero length for a bodiless request of these methods.
		w.WriteString("Content-Length: 0\r\n")
	}
	writeSorted(w, out, reqExclude)
	w.WriteString("\r\n")
}

// writeSorted writes the fields of hd but those in exclude, sorted by name, as
// http.Header.Write does.
func writeSorted(w *bufio.Writer, hd http.Header, exclude map[string]bool) {
	var keysBuf [32]string
	keys := keysBuf[:0]
	for k := range hd {
		if !exclude[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range hd[k] {
			w.WriteString(k)
			w.WriteString(": ")
			// As http.Header.Write: a value never breaks the head.
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			}
			w.WriteString(strings.TrimSpace(v))
			w.WriteString("\r\n")
		}
	}
}

// upConn is a connection to the app.
type upConn struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	reused bool
}

// upstreamPool keeps idle keep-alive connections to the app, newest first, up to max.
type upstreamPool struct {
	addr   string
	dialer *net.Dialer
	max    int

	mu     sync.Mutex
	idle   []*upConn
	closed bool
}

// get takes the newest idle connection, or dials one. With check, it first makes sure
// the app has not closed the connection (a syscall): the caller's request could not be
// sent again on another.
func (u *upstreamPool) get(ctx context.Context, check bool) (*upConn, error) {
	for {
		u.mu.Lock()
		n := len(u.idle)
		if n == 0 {
			u.mu.Unlock()
			break
		}
		uc := u.idle[n-1]
		u.idle[n-1] = nil
		u.idle = u.idle[:n-1]
		u.mu.Unlock()
		// A connection the app closed while it sat in the pool (its idle timeout)
		// would fail the request written to it; it is found here, so that a request
		// that cannot be retried is not lost on it. A retryable one (no body, an
		// idempotent method: most requests) skips the syscall and is retried by
		// roundTrip if the connection turns out closed.
		if !check || !peerClosed(uc.c) {
			uc.reused = true
			return uc, nil
		}
		uc.c.Close()
	}
	c, err := u.dialer.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, err
	}
	rw := newRawIO(c)
	return &upConn{c: c, br: bufio.NewReaderSize(rw, fastBufSize), bw: bufio.NewWriterSize(rw, fastBufSize)}, nil
}

func (u *upstreamPool) put(uc *upConn) {
	u.mu.Lock()
	if u.closed || len(u.idle) >= u.max || uc.br.Buffered() > 0 {
		u.mu.Unlock()
		uc.c.Close()
		return
	}
	u.idle = append(u.idle, uc)
	u.mu.Unlock()
}

func (u *upstreamPool) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle, u.closed = nil, true
	u.mu.Unlock()
	for _, uc := range idle {
		uc.c.Close()
	}
}

// peerClosed reports whether the app has closed c (or sent bytes nobody asked for):
// a non-blocking peek at the socket.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	rc.Read(func(fd uintptr) bool {
		closed = peekClosed(fd)
		return true
	})
	return closed
}

// roundTrip writes the request to an app connection and reads the response head.
// sent reports whether the request head reached a connection. A connection from the
// pool that fails before any byte of a response is retried once on a new one when no
// body byte was consumed from the client, as the Transport retries.
func (f *fastPath) roundTrip(fc *fastConn, h *fastHead, out http.Header, body *fastBody) (res *http.Response, up *upConn, err error) {
	p := f.p
	for attempt := 0; ; attempt++ {
		up, err = f.pool.get(p.base, attempt > 0 || body != nil || !idempotent(h.method))
		if err != nil {
			return nil, nil, err
		}
		// closeAll ends an exchange that outlives the drain through its app connection.
		fc.up.Store(up)
		if f.cut.Load() {
			up.c.Close()
		}
		writeRequestHead(up.bw, h, out)
		// A body already in the client buffer goes with the head, in one write; a
		// body still on its way is copied by a goroutine of its own.
		inline := body != nil && !body.chunked && body.remain <= int64(body.br.Buffered())
		if inline {
			if _, err = io.Copy(up.bw, body); err != nil && err != io.EOF {
				up.c.Close()
				return nil, nil, err
			}
		}
		err = up.bw.Flush()
		if err == nil {
			if body != nil && !inline {
				body.start(up)
			}
			if p.opt.ResponseHeaderTimeout > 0 {
				up.c.SetReadDeadline(time.Now().Add(p.opt.ResponseHeaderTimeout))
			}
			// The first byte apart: a connection that ends before it is stale, and
			// only then is a retry safe.
			if _, err = up.br.Peek(1); err == nil {
				res, err = readResponse(up.br, h.method)
			}
			if err == nil {
				up.c.SetReadDeadline(time.Time{})
				return res, up, nil
			}
		}
		up.c.Close()
		if body != nil && body.done != nil {
			// The exchange failed; a copy still waiting for the client ends now.
			body.abandon()
			fc.c.SetReadDeadline(time.Now())
			body.wait()
		}
		// As the Transport: a request without a body and with an idempotent method
		// is sent again once, on a new connection, when a kept-alive one failed
		// before any byte of a response. A body was consumed from the client and
		// cannot be replayed (peerClosed spares most such requests the stale
		// connection in the first place).
		retry := up.reused && attempt == 0 && body == nil && idempotent(h.method) && isStale(err)
		if !retry {
			return nil, nil, err
		}
	}
}

// isStale reports whether err is what a kept-alive connection the app closed gives.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// relay writes res (and the interim answers before it) to the client, streaming its
// body, and returns up to the pool when it is reusable. It reports whether the client
// connection may go on.
func (f *fastPath) relay(fc *fastConn, ex *exchange, h *fastHead, res *http.Response, up *upConn) (keep, reusable bool) {
	p := f.p
	for res.StatusCode >= 100 && res.StatusCode < 200 && res.StatusCode != http.StatusSwitchingProtocols {
		removeHopByHop(res.Header)
		delete(res.Header, "Content-Length") // as net/http's server writes a 1xx
		writeStatusLine(fc.bw, res.StatusCode)
		writeSorted(fc.bw, res.Header, nil)
		fc.bw.WriteString("\r\n")
		if err := fc.bw.Flush(); err != nil {
			ex.status = statusClientGone
			return false, false
		}
		var err error
		if res, err = readResponse(up.br, h.method); err != nil {
			f.answerUpstreamError(fc, ex, err, true)
			return false, false
		}
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The fast path never asks for an upgrade: a 101 is the app's error.
		f.answerUpstreamError(fc, ex, errors.New("the app answered 101 Switching Protocols to a request that asked for no upgrade"), true)
		return false, false
	}
	removeHopByHop(res.Header)
	p.inboundResponse(ex, res)
	// The fields net/http's server leaves out of an answer that has no body by its status
	// (RFC 9110 §8.6, §15.4.5).
	switch res.StatusCode {
	case http.StatusNotModified:
		delete(res.Header, "Content-Type")
		delete(res.Header, "Content-Length")
	case http.StatusNoContent:
		delete(res.Header, "Content-Length")
	}
	bodyless := h.method == http.MethodHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified
	chunked := !bodyless && res.ContentLength < 0
	closing := h.close || f.draining.Load()
	// net/http's server names the type of a body whose answer has none, from its first
	// bytes (ResponseWriter.Write); the client gets the same here. It waits for the
	// first bytes of the body, as the server does.
	var first []byte
	var firstErr error
	if _, typed := res.Header["Content-Type"]; !typed && !bodyless && res.StatusCode >= 200 && res.Header.Get("Content-Encoding") == "" {
		first = copyBuffers.Get()
		defer copyBuffers.Put(first)
		var n int
		n, firstErr = io.ReadAtLeast(res.Body, first[:fastBufSize], 1)
		first = first[:n]
		if n > 0 {
			res.Header["Content-Type"] = []string{http.DetectContentType(first)}
		}
	}
	writeStatusLine(fc.bw, res.StatusCode)
	if len(res.Trailer) > 0 {
		keys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		res.Header["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	writeSorted(fc.bw, res.Header, respExclude)
	if _, ok := res.Header["Date"]; !ok {
		fc.bw.WriteString("Date: ")
		fc.bw.WriteString(httpDate())
		fc.bw.WriteString("\r\n")
	}
	if chunked {
		fc.bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if closing {
		fc.bw.WriteString("Connection: close\r\n")
	}
	fc.bw.WriteString("\r\n")

	var copyErr, writeErr error
	if bodyless {
		writeErr = fc.bw.Flush()
	} else {
		copyErr, writeErr = copyBody(fc.bw, res.Body, up.br, chunked, first, firstErr)
		if copyErr == nil && writeErr == nil && chunked {
			fc.bw.WriteString("0\r\n")
			writeSorted(fc.bw, res.Trailer, nil)
			fc.bw.WriteString("\r\n")
			writeErr = fc.bw.Flush()
		}
	}
	switch {
	case copyErr != nil:
		// The app broke its body midway: the client's response is cut as the
		// ReverseProxy cuts it (ErrAbortHandler), and the request counts as failed.
		ex.failed = true
		return false, false
	case writeErr != nil:
		ex.status = statusClientGone
		return false, false
	}
	// The body was read to its end (a bodiless answer has none on the wire, whatever
	// its Content-Length says); unless the app closes or ended the body by closing,
	// the connection is ready for the next request.
	reusable = !res.Close && (bodyless || res.ContentLength >= 0 || isChunkedResponse(res))
	return !closing, reusable
}

// respExclude are the response fields the fast path writes itself.
var respExclude = map[string]bool{"Transfer-Encoding": true, "Connection": true}

func isChunkedResponse(res *http.Response) bool {
	return len(res.TransferEncoding) > 0 && res.TransferEncoding[0] == "chunked"
}

// removeHopByHop is ReverseProxy's removeHopByHopHeaders.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for sf := range strings.SplitSeq(v, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(sf))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

func writeStatusLine(w *bufio.Writer, code int) {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(code))
	w.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		w.WriteString(text)
	} else {
		w.WriteString("status code ")
		w.WriteString(strconv.Itoa(code))
	}
	w.WriteString("\r\n")
}

// copyBody streams src to w, chunk-framed when chunked, flushing whenever the app has
// nothing more buffered: a streamed response reaches the client as it comes, and a
// quick one in as few writes as possible.
// first, when not nil, are the body's first bytes, read already with firstErr.
func copyBody(w *bufio.Writer, src io.Reader, upBuf *bufio.Reader, chunked bool, first []byte, firstErr error) (readErr, writeErr error) {
	bp := fastCopies.Get().(*[fastBufSize]byte)
	defer fastCopies.Put(bp)
	buf := bp[:]
	for {
		var n int
		var err error
		if first != nil {
			n = copy(buf, first)
			err, first = firstErr, nil
			if err == nil && n == 0 {
				continue
			}
		} else {
			n, err = src.Read(buf)
		}
		if n > 0 {
			if chunked {
				w.WriteString(strconv.FormatInt(int64(n), 16))
				w.WriteString("\r\n")
			}
			w.Write(buf[:n])
			if chunked {
				w.WriteString("\r\n")
			}
			if upBuf.Buffered() == 0 {
				if werr := w.Flush(); werr != nil {
					return nil, werr
				}
			}
		}
		if err == io.EOF {
			if chunked {
				return nil, nil // the caller writes the last chunk and the trailers
			}
			return nil, w.Flush()
		}
		if err != nil {
			w.Flush()
			return err, nil
		}
	}
}

// inboundResponse is modifyInbound's work on a response: status, upgrade, ctx-ops.
func (p *Proxy) inboundResponse(ex *exchange, res *http.Response) {
	ex.status = res.StatusCode
	ex.upgraded = res.StatusCode == http.StatusSwitchingProtocols
	list, err := headers.ResponseOps(res.Header)
	if err != nil {
		p.headerErrors("app response", []error{err})
	}
	ex.respOps = list
}

// answerUpstreamError answers 502 or 504 as upstreamError does.
func (f *fastPath) answerUpstreamError(fc *fastConn, ex *exchange, err error, closing bool) {
	p := f.p
	if p.base.Err() != nil {
		ex.status = statusClientGone
		return
	}
	status, msg := describeUpstreamError(err, p.opt.App, true, p.opt)
	ex.status, ex.failed = status, true
	p.stats.upstream.Add(1)
	if p.logUp.allow() {
		p.log.Warn("upstream request failed", "inbound", true, "target", p.opt.App, "status", status, "error", err)
	}
	writePlain(fc.bw, status, msg, closing)
}

// answerBodyError answers a request whose body failed, as the net/http path's
// answerBodyError does, and closes the connection after.
func (f *fastPath) answerBodyError(fc *fastConn, ex *exchange, reason closeReason, err error) {
	switch {
	case reason == reasonBodyTimeout:
		ex.status = http.StatusRequestTimeout
		writePlain(fc.bw, ex.status, fmt.Sprintf("ctxprop: the request body stalled: no data for %s (inbound.body_timeout); the request was cancelled and the connection is closed\n", f.p.opt.BodyTimeout), true)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		ex.status = statusClientGone
	default:
		ex.status = http.StatusBadRequest
		writePlain(fc.bw, ex.status, fmt.Sprintf("ctxprop: the request body could not be read: %v; the request was cancelled and the connection is closed\n", err), true)
	}
}

func writePlain(w *bufio.Writer, status int, msg string, closing bool) {
	writeStatusLine(w, status)
	w.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: ")
	w.WriteString(httpDate())
	w.WriteString("\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(msg)))
	if closing {
		w.WriteString("\r\nConnection: close")
	}
	w.WriteString("\r\n\r\n")
	w.WriteString(msg)
	w.Flush()
}

// httpDate is the Date field's value, formatted at most once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.unix == now {
		return d.text
	}
	d := &cachedDate{unix: now, text: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

type cachedDate struct {
	unix int64
	text string
}

var dateCache atomic.Pointer[cachedDate]

// fastBody is a request body on the fast path: read from the client's buffer, framed
// as the client framed it, each read bounded by the body timeout.
type fastBody struct {
	br      *bufio.Reader
	conn    net.Conn
	timeout time.Duration
	remain  int64 // Content-Length bytes left
	chunked bool
	cr      io.Reader // httputil's chunked reader, the one net/http's server uses

	trailers bool // the chunked body ended with trailer fields (dropped, as net/http drops undeclared ones)

	mu   sync.Mutex
	err  error // io.EOF once read cleanly to its end
	done chan struct{}
}

func (b *fastBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	err := b.err
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if b.timeout > 0 && b.conn != nil && b.br.Buffered() == 0 {
		b.conn.SetReadDeadline(time.Now().Add(b.timeout))
	}
	var n int
	if b.chunked {
		n, err = b.cr.Read(p)
		if err == io.EOF {
			if terr := b.endChunked(); terr != nil {
				err = terr
			}
		}
	} else {
		n, err = readFixed(b.br, p, &b.remain)
	}
	if err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// endChunked reads what follows the last chunk: CRLF, or trailer fields, which
// net/http reads the same way and which end the framing the scanner can vouch for. The
// fields are dropped, as net/http drops undeclared ones.
func (b *fastBody) endChunked() error {
	hdr, err := readChunkedEnd(b.br)
	if err != nil {
		return err
	}
	b.trailers = hdr != nil
	return nil
}

// readFixed reads a Content-Length body of which *remain bytes are left: io.EOF with
// the last byte, io.ErrUnexpectedEOF if the connection ends before it.
func readFixed(br *bufio.Reader, p []byte, remain *int64) (n int, err error) {
	if *remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > *remain {
		p = p[:*remain]
	}
	n, err = br.Read(p)
	*remain -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && *remain == 0 {
		err = io.EOF
	}
	return n, err
}

// readChunkedEnd reads what follows a chunked body's last chunk, as net/http does: a
// CRLF (no trailers: nil, nil), or trailer fields up to an empty line, bounded.
func readChunkedEnd(br *bufio.Reader) (textproto.MIMEHeader, error) {
	crlf, err := br.Peek(2)
	if len(crlf) == 2 && crlf[0] == '\r' && crlf[1] == '\n' {
		br.Discard(2)
		return nil, nil
	}
	if len(crlf) < 2 {
		if err == nil || err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if !seeDoubleCRLF(br) {
		return nil, errors.New("http: suspiciously long trailer after chunked body")
	}
	return textproto.NewReader(br).ReadMIMEHeader()
}

// start copies the rest of the body to up on a goroutine of its own.
func (b *fastBody) start(up *upConn) {
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		b.copyTo(up)
	}()
}

// copyTo writes the body to the app, framed as the Transport frames it: Content-Length
// bytes as they are, a chunked body re-chunked as it is read, flushed whenever the
// client has nothing more buffered. On a body error the app connection is closed, which
// ends the exchange.
func (b *fastBody) copyTo(up *upConn) {
	bp := fastCopies.Get().(*[fastBufSize]byte)
	defer fastCopies.Put(bp)
	buf := bp[:]
	w := up.bw
	for {
		n, err := b.Read(buf)
		if n > 0 {
			if b.chunked {
				w.WriteString(strconv.FormatInt(int64(n), 16))
				w.WriteString("\r\n")
			}
			w.Write(buf[:n])
			if b.chunked {
				w.WriteString("\r\n")
			}
			if b.br.Buffered() == 0 || err != nil {
				if werr := w.Flush(); werr != nil {
					b.fail(werr)
					return
				}
			}
		}
		if err == io.EOF {
			if b.chunked {
				w.WriteString("0\r\n\r\n")
			}
			if werr := w.Flush(); werr != nil {
				b.fail(werr)
			}
			return
		}
		if err != nil {
			up.c.Close()
			return
		}
	}
}

// fail records that the app side of the copy failed: the body was not delivered.
func (b *fastBody) fail(err error) {
	b.mu.Lock()
	if b.err == nil || b.err == io.EOF {
		b.err = fmt.Errorf("%w: %w", errUpstreamWrite, err)
	}
	b.mu.Unlock()
}

var errUpstreamWrite = errors.New("writing the request body to the app")

// wait waits for the copy goroutine, if any.
func (b *fastBody) wait() {
	if b.done != nil {
		<-b.done
		b.conn.SetReadDeadline(time.Time{})
	}
}

// readAll reports whether the body was read from the client to its end.
func (b *fastBody) readAll() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err == io.EOF
}

// abandon ends the body early: the exchange is over before the client sent all of it.
func (b *fastBody) abandon() {
	b.mu.Lock()
	if b.err == nil {
		b.err = errAbandoned
	}
	b.mu.Unlock()
}

var errAbandoned = errors.New("the response ended before the request body")

// outcome says how the body ended, as bodyWatch.outcome.
func (b *fastBody) outcome() (closeReason, error) {
	b.mu.Lock()
	err := b.err
	b.mu.Unlock()
	if errors.Is(err, errUpstreamWrite) || err == errAbandoned {
		return reasonBodyUnread, nil // the app stopped reading: not the client's fault
	}
	return bodyOutcome(err)
}
