package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Transparent interception (SPEC §5, issue 13). Redirection rules (sidecar intercept)
// send the app's outbound TCP to the transparent listener and inbound TCP for the app's
// ports to the inbound listener. Either way the connection arrives with the address its
// client meant, which the kernel's connection tracking keeps (SO_ORIGINAL_DST), and
// bytes that may or may not be HTTP:
//
//   - the proxy reads the first bytes, with Options.SniffTimeout as deadline;
//   - HTTP/1.x in origin-form and prior-knowledge h2c (gRPC) go to an http.Server of
//     their own, whose handler does the header work of the explicit proxy and sends
//     the request to the original destination, never to the host its Host header or
//     :authority names: those are the client's words, the destination is the kernel's;
//   - anything else (TLS, a database protocol, a CONNECT to a proxy outside the pod,
//     a server-first protocol whose client says nothing in time) is spliced to the
//     original destination byte for byte, half-closes included.
//
// The sidecar's own connections are not redirected (the rules exempt its uid), so a
// connection the proxy dials reaches its destination. A connection to the transparent
// listener that no rule redirected has itself as its original destination and is
// refused: forwarding it would loop.

// errNoOriginalDst: the connection has no connection tracking entry; nothing redirected it.
var errNoOriginalDst = errors.New("no original destination")

// Transparent metrics: what was sniffed, by protocol label.
const (
	protoHTTP1 = iota
	protoH2C
	protoTLS
	protoOpaque
	numProtos
)

var protoNames = [numProtos]string{"http1", "h2c", "tls", "opaque"}

// Refusals of the transparent listener, by reason label.
const (
	refuseLimit = iota
	refuseNotRedirected
	refuseNotLocal
	numTransRefusals
)

var transRefusalNames = [numTransRefusals]string{"connection_limit", "not_redirected", "not_local"}

type transparentCounters struct {
	conns        [numSides][numProtos]atomic.Uint64
	sniffTimeout [numSides]atomic.Uint64
	dialErrors   [numSides]atomic.Uint64
	refused      [numTransRefusals]atomic.Uint64
	open         atomic.Int64 // connections the transparent listener holds now
}

// h2Preface is what a prior-knowledge HTTP/2 client sends first (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxSniff bounds the bytes read before a connection is classified: a request line
// longer than this with a method the proxy does not know is taken for opaque bytes.
const maxSniff = 8 << 10

// knownMethods are the methods of RFC 9110 and WebDAV's common ones: seeing one and an
// origin-form target is enough to call the bytes HTTP/1.
var knownMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "OPTIONS": true,
	"TRACE": true, "PATCH": true, "PROPFIND": true, "PROPPATCH": true, "MKCOL": true,
	"COPY": true, "MOVE": true, "LOCK": true, "UNLOCK": true, "REPORT": true, "SEARCH": true,
}

// classify says what the first bytes b of a connection are: decided is false while more
// bytes are needed. A CONNECT or an absolute-form request is addressed to a proxy at the
// original destination, which must get it as it is, so it is opaque here.
func classify(b []byte) (proto int, decided bool) {
	if len(b) == 0 {
		return protoOpaque, false
	}
	if b[0] == 0x16 { // a TLS handshake record (RFC 8446 §5.1)
		return protoTLS, true
	}
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		return protoH2C, n == len(h2Preface)
	}
	i := 0
	for i < len(b) && isTokenChar(b[i]) {
		i++
	}
	switch {
	case i == len(b):
		return protoOpaque, i >= 32 // a method longer than that is no method
	case i == 0 || b[i] != ' ':
		return protoOpaque, true
	case i+1 == len(b):
		return protoOpaque, false
	case b[i+1] != '/' && b[i+1] != '*':
		return protoOpaque, true // authority-form (CONNECT) or absolute-form: for a proxy there
	}
	if knownMethods[string(b[:i])] {
		return protoHTTP1, true
	}
	// Another method: HTTP only if the request line ends in an HTTP/1 version.
	end := bytes.IndexByte(b, '\n')
	if end < 0 {
		return protoOpaque, len(b) >= maxSniff
	}
	line := bytes.TrimSuffix(b[:end], []byte("\r"))
	if bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasSuffix(line, []byte(" HTTP/1.0")) {
		return protoHTTP1, true
	}
	return protoOpaque, true
}

func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// sniff reads the first bytes of c until classify decides, the client stops sending
// for timeout, or it ends. timedOut reports the deadline: the client may speak only
// after the server (SMTP, MySQL), or is slow.
func sniff(c net.Conn, timeout time.Duration) (head []byte, proto int, timedOut bool, err error) {
	buf := make([]byte, 0, 512)
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, protoOpaque, false, err
	}
	defer c.SetReadDeadline(time.Time{})
	for {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), maxSniff))
			copy(grown, buf)
			buf = grown
		}
		n, rerr := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		p, decided := classify(buf)
		if decided || len(buf) >= maxSniff {
			return buf, p, false, nil
		}
		if rerr != nil {
			var ne net.Error
			if errors.As(rerr, &ne) && ne.Timeout() {
				return buf, protoOpaque, true, nil
			}
			// The client ended (or half-closed) before it said enough: what it sent
			// goes on as it is.
			return buf, protoOpaque, false, nil
		}
	}
}

// interceptConn is a redirected connection handed to an http.Server: its first bytes,
// already read by sniff, come back first.
type interceptConn struct {
	net.Conn
	head    []byte
	dst     netip.AddrPort // the original destination
	release func()         // called once on Close; nil: nothing to release
	once    sync.Once
}

func (c *interceptConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection, which net/http does before it closes one
// after an error answer, so that the client reads the answer before the reset.
func (c *interceptConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *interceptConn) Close() error {
	c.once.Do(func() {
		if c.release != nil {
			c.release()
		}
	})
	return c.Conn.Close()
}

// connQueue is the net.Listener of an http.Server whose connections come from an accept
// loop of the proxy, which looked at them first.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// push hands c to the server, or closes it once the server has stopped.
func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

type origDstKey struct{}

// origDstOf returns the original destination of r's connection when a rule redirected it.
func origDstOf(r *http.Request) (netip.AddrPort, bool) {
	dst, ok := r.Context().Value(origDstKey{}).(netip.AddrPort)
	return dst, ok && dst.IsValid()
}

// redirected reports the original destination of c when a rule redirected it: a
// connection nothing rewrote has its own local address as original destination, or no
// connection tracking entry at all.
func redirected(c net.Conn) (netip.AddrPort, bool, error) {
	dst, err := originalDst(c)
	if errors.Is(err, errNoOriginalDst) {
		return netip.AddrPort{}, false, nil
	}
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	if dst.Addr().Unmap() == local.Addr().Unmap() && dst.Port() == local.Port() {
		return netip.AddrPort{}, false, nil
	}
	return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), true, nil
}

// acceptLoop accepts on ln until it closes and hands each connection to handle, which
// must not block for long.
func (p *Proxy) acceptLoop(ln net.Listener, name string, handle func(net.Conn)) {
	defer p.serving.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.base.Err() != nil {
				return
			}
			// Out of file descriptors or memory: wait a little, as http.Server does.
			if p.logAccept.allow() {
				p.log.Error("accept failed", "listener", name, "error", err, "retry_in", backoff)
			}
			select {
			case <-time.After(backoff):
			case <-p.base.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		handle(c)
	}
}

// acceptTransparent takes one connection of the transparent listener.
func (p *Proxy) acceptTransparent(c net.Conn) {
	t := &p.trans
	if n := t.open.Add(1); n > int64(p.opt.TransparentMaxConns) {
		t.open.Add(-1)
		t.refused[refuseLimit].Add(1)
		if p.logTransparent.allow() {
			p.log.Error("redirected connection refused: the transparent listener holds its limit of connections; raise outbound.transparent_max_connections",
				"limit", p.opt.TransparentMaxConns, "client", c.RemoteAddr().String())
		}
		resetClose(c)
		return
	}
	release := sync.OnceFunc(func() { t.open.Add(-1) })
	p.conns.Add(1)
	go func() {
		defer p.conns.Done()
		dst, ok, err := redirected(c)
		if err != nil || !ok {
			t.refused[refuseNotRedirected].Add(1)
			if p.logTransparent.allow() {
				msg := "connection refused: it was not redirected (its original destination is the transparent listener itself) and forwarding it would loop; " +
					"only traffic that sidecar intercept's rules redirect belongs here"
				args := []any{"client", c.RemoteAddr().String(), "address", c.LocalAddr().String()}
				if err != nil {
					args = append(args, "error", err)
				}
				p.log.Warn(msg, args...)
			}
			release()
			c.Close()
			return
		}
		p.intercept(c, dst, sideOutbound, p.transQ, release)
	}()
}

// acceptInbound takes one connection of the inbound listener: one made to the listener
// itself goes to the inbound server as before; a redirected one is sniffed first.
func (p *Proxy) acceptInbound(c net.Conn) {
	dst, ok, err := redirected(c)
	if err != nil && p.logTransparent.allow() {
		p.log.Warn("cannot read the original destination of an inbound connection; it goes to the app address", "client", c.RemoteAddr().String(), "error", err)
	}
	if !ok {
		if p.fast != nil {
			p.conns.Add(1)
			go func() {
				defer p.conns.Done()
				p.fast.serve(c)
			}()
			return
		}
		p.inQ.push(c)
		return
	}
	// PREROUTING's REDIRECT takes any destination, and a host on the pod's link can send
	// a packet for an address that is not the pod's, with the pod as its gateway:
	// forwarding it would make the pod a relay to wherever the sender likes, or, for a
	// loopback destination, reach the app's loopback-only ports. Only the pod's own,
	// non-loopback addresses are forwarded.
	if !p.podAddrs.has(dst.Addr()) {
		p.trans.refused[refuseNotLocal].Add(1)
		if p.logTransparent.allow() {
			p.log.Warn("refused a redirected inbound connection meant for an address that is not this pod's", "client", c.RemoteAddr().String(), "destination", dst.String())
		}
		resetClose(c)
		return
	}
	p.conns.Add(1)
	go func() {
		defer p.conns.Done()
		p.intercept(c, dst, sideInbound, p.inQ, nil)
	}()
}

// localAddrs knows the addresses of the network namespace's interfaces: the pod's.
// It reads them again, at most once a second, when asked about one it does not hold, so
// an address added after start is found.
type localAddrs struct {
	mu   sync.Mutex
	set  map[netip.Addr]bool
	read time.Time
	// list returns the interface addresses; net.InterfaceAddrs, or a test's.
	list func() ([]net.Addr, error)
}

// has reports whether a is an address of this pod that a redirected inbound connection
// may be forwarded to: an interface's, and neither loopback nor unspecified.
func (l *localAddrs) has(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsUnspecified() || !a.IsValid() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set[a] {
		return true
	}
	if now := time.Now(); now.Sub(l.read) >= time.Second {
		l.read = now
		list := l.list
		if list == nil {
			list = net.InterfaceAddrs
		}
		if addrs, err := list(); err == nil {
			l.set = make(map[netip.Addr]bool, len(addrs))
			for _, ad := range addrs {
				if n, ok := ad.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						l.set[ip.Unmap()] = true
					}
				}
			}
		}
	}
	return l.set[a]
}

// intercept sniffs a redirected connection and either hands it to q's HTTP server or
// splices it to dst. release, when not nil, runs once the connection is done.
func (p *Proxy) intercept(c net.Conn, dst netip.AddrPort, side int, q *connQueue, release func()) {
	t := &p.trans
	stop := context.AfterFunc(p.base, func() { c.Close() }) // Close does not wait out the sniff
	head, proto, timedOut, err := sniff(c, p.opt.SniffTimeout)
	if !stop() || err != nil {
		if release != nil {
			release()
		}
		c.Close()
		return
	}
	if timedOut {
		t.sniffTimeout[side].Add(1)
	}
	t.conns[side][proto].Add(1)
	if proto == protoHTTP1 || proto == protoH2C {
		q.push(&interceptConn{Conn: c, head: head, dst: dst, release: release})
		return
	}
	if release != nil {
		defer release()
	}
	p.spliceTo(c, head, dst, side)
}

// spliceTo connects to dst and copies bytes both ways until both directions end. When
// dst cannot be reached the client's connection is reset, as the refused or timed-out
// connection would have been without the redirect.
func (p *Proxy) spliceTo(c net.Conn, head []byte, dst netip.AddrPort, side int) {
	drain := &p.outDrn
	if side == sideInbound {
		drain = &p.inDrain
	}
	drain.enter()
	defer drain.leave()
	up, err := p.dialer.DialContext(p.base, "tcp", dst.String())
	if err != nil {
		p.trans.dialErrors[side].Add(1)
		if p.logUp.allow() {
			p.log.Warn("redirected connection: cannot reach its original destination", "direction", sideNames[side], "destination", dst.String(), "error", err)
		}
		resetClose(c)
		return
	}
	defer up.Close()
	defer c.Close()
	stop := context.AfterFunc(p.base, func() {
		c.Close()
		up.Close()
	})
	defer stop()
	if len(head) > 0 {
		if _, err := up.Write(head); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		splice(up, c)
	}()
	splice(c, up)
	<-done
}

// resetClose closes c with a TCP reset, so that its client sees a failed connection
// rather than an empty answer.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// serveTransparent is the handler of the HTTP connections of the transparent listener:
// the explicit outbound proxy's header work, sent to the original destination.
func (p *Proxy) serveTransparent(w http.ResponseWriter, r *http.Request) {
	p.stats.outbound.Add(1)
	framing := takeVerdict(w, r)
	if refuseAmbiguousSwitch(w, r, framing) {
		p.finishFraming(w, r, sideOutbound, framing, nil, false)
		return
	}
	dst, ok := origDstOf(r)
	if !ok || r.Method == http.MethodConnect {
		// A CONNECT after other requests on one connection: the first would have been
		// spliced to the proxy it was for; this one cannot be.
		p.finishFraming(w, r, sideOutbound, framing, nil, false)
		http.Error(w, "ctxprop transparent proxy: CONNECT in the middle of a connection is not passed on; open a new connection for the tunnel", http.StatusMethodNotAllowed)
		return
	}
	p.forwardOutbound(w, r, framing, false, dst)
}
