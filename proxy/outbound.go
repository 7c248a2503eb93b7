package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
)

// msgOriginForm answers a request in origin-form ("GET /path") on the outbound
// listener, which only a misconfigured client sends.
const msgOriginForm = "ctxprop outbound proxy: this port is the app's forward proxy and takes absolute-form requests (GET http://host/path); " +
	"got an origin-form request. Set HTTP_PROXY=http://<this address> in the app and call services by their own address.\n"

func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	p.stats.outbound.Add(1)
	framing := takeVerdict(w, r)
	if refuseAmbiguousSwitch(w, r, framing) {
		p.finishFraming(w, r, sideOutbound, framing, nil, false)
		return
	}
	remote := !fromLoopback(r)
	if r.Method == http.MethodConnect {
		switched := p.tunnel(w, r, remote)
		p.finishFraming(w, r, sideOutbound, framing, nil, switched)
		return
	}
	// HTTP/1.1 clients name the target in the request line (absolute-form); h2c
	// clients in :authority, which Go puts in r.Host.
	if r.URL.Host == "" && (r.ProtoMajor != 2 || r.Host == "") {
		p.finishFraming(w, r, sideOutbound, framing, nil, false)
		http.Error(w, msgOriginForm, http.StatusBadRequest)
		return
	}
	if target := r.URL.Host; p.isSelf(target) || (target == "" && p.isSelf(r.Host)) {
		p.finishFraming(w, r, sideOutbound, framing, nil, false)
		http.Error(w, "ctxprop outbound proxy: the request is addressed to this proxy itself and would loop; "+
			"send it to the service's address (the proxy is set in HTTP_PROXY, not in the URL)", http.StatusLoopDetected)
		return
	}
	p.forwardOutbound(w, r, framing, remote, netip.AddrPort{})
}

// forwardOutbound does the header work of an outbound request and sends it on: to dst
// when it is valid (a redirected connection's original destination), else to the host
// the request names. remote says the client is not on loopback.
func (p *Proxy) forwardOutbound(w http.ResponseWriter, r *http.Request, framing closeReason, remote bool, dst netip.AddrPort) {
	ex := newExchange(false)
	defer ex.release() // deferred first, so it runs after every other deferred use of ex
	ex.dst = dst
	defer func() { p.reqs.observe(ex, time.Since(ex.start)) }()
	var errs []error
	ex.out, errs = headers.ReadOutbound(r.Header, p.hopt, p.corr)
	if errs != nil {
		p.headerErrors("outbound", errs)
	}
	if ex.out.Refused.Any() {
		p.refused(sideOutbound, &ex.out.Refused, nil, r.RemoteAddr)
	}
	if len(ex.out.Ops) > 0 {
		switch {
		case ex.out.Name == "":
			p.stats.droppedOps.Add(1)
			if p.logStore.allow() {
				p.log.Warn("ctx-ops dropped: the app's request has no context (baggage ctx.name, or a traceparent of an inbound request in flight)", "direction", "outbound")
			}
		case p.opt.Store != nil:
			p.apply(ex.out.Name, ex.out.Ops)
		}
	}

	ctx := r.Context()
	var span trace.Span
	if p.opt.Trace == TraceParticipate {
		ex.child = headers.NewChild(ex.out.Parent, p.opt.SampleRatio)
	}
	if p.tracer != nil {
		if ex.out.Parent.IsValid() {
			ctx = trace.ContextWithSpanContext(ctx, withOtelState(ex.out.Parent, ex.out.TraceState))
		}
		ctx, span = p.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("http.request.method", r.Method)))
		ex.child = span.SpanContext()
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", ex.status))
			if ex.failed || ex.status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(ex.status))
			}
			span.End()
		}()
	}
	if isUpgrade(r) {
		p.outDrn.enter()
		defer p.outDrn.leave()
	}
	fullDuplex(w, r)
	ex.body = watchBody(w, r, 0)
	defer func() {
		p.finishFraming(w, r, sideOutbound, framing, ex.body, ex.status == http.StatusSwitchingProtocols)
	}()
	out := r.WithContext(context.WithValue(ctx, exchangeKey{}, ex))
	if ex.body != nil {
		out.Body = ex.body
	}
	// A client from outside the pod gets a transport of its own, whose dialer refuses
	// loopback targets: a dial-time check would not see the pooled connections that
	// the app's own requests left to the same addresses.
	if remote {
		p.outRemote.ServeHTTP(w, out)
		return
	}
	p.out.ServeHTTP(w, out)
}

func (p *Proxy) rewriteOutbound(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In)
	if ex.dst.IsValid() {
		// A redirected connection goes where its client connected, whatever its Host
		// or :authority says (they go on unchanged): the client chose the address,
		// the header is only its word.
		pr.Out.URL.Scheme = "http"
		pr.Out.URL.Host = ex.dst.String()
		pr.Out.Host = pr.In.Host
	} else if pr.Out.URL.Host == "" { // h2c: the target is :authority
		pr.Out.URL.Scheme = "http"
		pr.Out.URL.Host = pr.In.Host
	}
	// A forward proxy is transparent: the Forwarded headers the app set go on as
	// they are (Rewrite starts without them).
	for _, k := range [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = v
		}
	}
	ex.out.Apply(pr.Out.Header, ex.child)
	// ctx-ops are for this pod's sidecar only (SPEC §4); headers.Outbound.Apply
	// removes them too, this keeps the guarantee in the proxy.
	pr.Out.Header.Del(headers.CtxOps)
}

func (p *Proxy) modifyOutbound(res *http.Response) error {
	ex := exchangeOf(res.Request)
	ex.status = res.StatusCode
	// ctx-ops are accepted from the local app only; another pod's are not ours
	// to apply nor the app's to see.
	res.Header.Del(headers.CtxOps)
	return nil
}

// isSelf reports whether hostport names the outbound listener, through loopback or
// the wildcard address: forwarding there would loop until resources run out.
func (p *Proxy) isSelf(hostport string) bool {
	if p.outPort == "" || hostport == "" {
		return false
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "80"
	}
	if port != p.outPort {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// tunnel serves CONNECT: it dials the target, answers 200 and copies bytes both ways
// without looking at them (TLS and anything else the app speaks inside). remote says the
// client is not on loopback. It returns true once it has taken the connection over.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, remote bool) bool {
	if r.ProtoMajor != 1 {
		http.Error(w, "ctxprop outbound proxy: CONNECT is served over HTTP/1.1 only", http.StatusHTTPVersionNotSupported)
		return false
	}
	target := r.Host
	if p.isSelf(target) {
		http.Error(w, "ctxprop outbound proxy: CONNECT to this proxy itself would loop", http.StatusLoopDetected)
		return false
	}
	if _, port, err := net.SplitHostPort(target); err != nil || port == "" {
		http.Error(w, "ctxprop outbound proxy: CONNECT needs host:port, got "+target, http.StatusBadRequest)
		return false
	}
	p.outDrn.enter()
	defer p.outDrn.leave()

	dialer := p.dialer
	if remote {
		dialer = p.remoteDialer
	}
	up, err := dialer.DialContext(r.Context(), "tcp", target)
	if errors.Is(err, errLoopbackTarget) {
		p.refuseLoopbackTarget(w, r, nil, err)
		return false
	}
	p.stats.tunnels.Add(1)
	if err != nil {
		status, msg := describeUpstreamError(err, target, false, p.opt)
		p.stats.upstream.Add(1)
		p.reqs.sides[sideOutbound].gatewayError(status)
		if p.logUp.allow() {
			p.log.Warn("tunnel failed", "target", target, "error", err)
		}
		http.Error(w, msg, status)
		return false
	}
	defer up.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "ctxprop outbound proxy: cannot take over the connection for CONNECT: "+err.Error(), http.StatusInternalServerError)
		return false
	}
	// The tunnel copies between the sockets themselves: on Linux io.Copy splices
	// between two *net.TCPConn without the bytes entering user space.
	if fc, ok := conn.(*framedConn); ok {
		conn = fc.Conn
	}
	defer conn.Close()
	// Close cuts the tunnel by cancelling the base context, which request contexts
	// derive from; a hijacked connection is invisible to http.Server.Shutdown.
	stop := context.AfterFunc(r.Context(), func() {
		conn.Close()
		up.Close()
	})
	defer stop()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return true
	}
	// Bytes the client sent after its CONNECT header may already sit in the
	// server's buffer.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return true
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		splice(up, conn)
	}()
	splice(conn, up)
	<-done
	return true
}

// splice copies src to dst until EOF or error, then half-closes dst so the peer sees
// the end while the other direction may go on. Between two TCP connections io.Copy
// uses splice(2) on Linux: the bytes never enter user space.
func splice(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
		return
	}
	// An error in one direction ends both.
	dst.Close()
	src.Close()
}

// loopbackTargetError is the dial error of the transport that serves clients from outside
// the pod (Options.OutboundNonLoopback) when a target resolves to a loopback or
// unspecified address: through the proxy such a client would reach the pod's own
// loopback services, the admin API among them.
type loopbackTargetError struct{ addr netip.Addr }

func (e *loopbackTargetError) Error() string {
	return "dialled address " + e.addr.String() + " is loopback or unspecified"
}

// errLoopbackTarget matches every *loopbackTargetError with errors.Is.
var errLoopbackTarget = &loopbackTargetError{}

func (e *loopbackTargetError) Is(target error) bool { return target == errLoopbackTarget }

// refuseLoopbackDial is the ControlContext of the dialer for clients from outside the
// pod. It runs for each address a host name resolved to, before connecting, so that no
// name ("localhost", a DNS record pointing at 127.0.0.1) gets around it.
func refuseLoopbackDial(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("cannot check the dialled address %q: %w", address, err)
	}
	if ip := ap.Addr().Unmap(); ip.IsLoopback() || ip.IsUnspecified() {
		return &loopbackTargetError{addr: ip}
	}
	return nil
}

// fromLoopback reports whether r's client is on this host's loopback, as the app is.
func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// refuseLoopbackTarget answers 403 to a client from outside the pod whose target
// resolved to a loopback or unspecified address.
func (p *Proxy) refuseLoopbackTarget(w http.ResponseWriter, r *http.Request, ex *exchange, err error) {
	target := r.URL.Host
	if r.Method == http.MethodConnect || target == "" {
		target = r.Host
	}
	addr := "a loopback or unspecified address"
	var le *loopbackTargetError
	if errors.As(err, &le) {
		addr = le.addr.String()
	}
	if ex != nil {
		ex.status = http.StatusForbidden
	}
	p.stats.loopbackRefused.Add(1)
	if p.logRefused.allow() {
		p.log.Warn("refused a loopback target to a client outside the pod", "client", r.RemoteAddr, "target", target, "address", addr)
	}
	http.Error(w, fmt.Sprintf("ctxprop outbound proxy: refused: %s resolves to %s, and clients from outside the pod (this one is %s) "+
		"may not reach the pod's loopback services through the proxy; outbound.allow_non_loopback opens the proxy to other hosts, never to loopback",
		target, addr, r.RemoteAddr), http.StatusForbidden)
}
