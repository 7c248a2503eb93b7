package proxy

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
	"github.com/ctxprop/ctxprop/ops"
)

// exchange is the state of one proxied request, shared by the handler and the
// ReverseProxy hooks through the request context.
type exchange struct {
	start    time.Time
	inbound  bool
	child    trace.SpanContext // the proxy's span; zero with tracing off
	in       headers.Inbound   // inbound side
	out      headers.Outbound  // outbound side
	status   int               // status sent to the client; 0 until known
	failed   bool              // transport error: no complete response from upstream
	upgraded bool              // 101 Switching Protocols
	respOps  []ops.Op          // the app's ctx-ops from its response (inbound)
	dst      netip.AddrPort    // a redirected connection's original destination; zero otherwise
	body     *bodyWatch        // the request body on its way upstream; nil without one
	buf      [8]ops.Op         // backing array of the one Store.Apply call: room for the telemetry
}

type exchangeKey struct{}

// exchanges recycles exchange values: with the op buffer inline, one is over a
// kilobyte, and allocating one per request was the largest single allocation of
// the proxy's own on the request path (bench/proxy).
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// newExchange takes an exchange from the pool, started now.
func newExchange(inbound bool) *exchange {
	ex := exchanges.Get().(*exchange)
	ex.start, ex.inbound = time.Now(), inbound
	return ex
}

// release returns ex to the pool. Call it once the handler is done with ex: the
// ReverseProxy hooks that read it (Rewrite, ModifyResponse, ErrorHandler) all run
// inside ServeHTTP, and nothing keeps ex after the handler returns (the request
// context that still points to it is only searched for other keys).
func (ex *exchange) release() {
	*ex = exchange{}
	exchanges.Put(ex)
}

func exchangeOf(r *http.Request) *exchange {
	ex, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return ex
}

// statusClientGone is recorded, never sent, when the client left before the answer
// (nginx's 499). It is not an error of the app.
const statusClientGone = 499

func (p *Proxy) serveInbound(w http.ResponseWriter, r *http.Request) {
	p.stats.inbound.Add(1)
	framing := takeVerdict(w, r)
	if refuseAmbiguousSwitch(w, r, framing) {
		p.finishFraming(w, r, sideInbound, framing, nil, false)
		return
	}
	if r.Method == http.MethodConnect {
		p.finishFraming(w, r, sideInbound, framing, nil, false)
		http.Error(w, "ctxprop inbound proxy: CONNECT is not served here; tunnels go through the outbound proxy", http.StatusMethodNotAllowed)
		return
	}
	ex := newExchange(true)
	var errs []error
	ex.in, errs = headers.ReadInbound(r.Header, p.hopt, headers.Source{Trusted: p.trustedSource(r.RemoteAddr)})
	if errs != nil {
		p.headerErrors("inbound", errs)
	}
	if ex.in.Refused.Any() {
		p.refused(sideInbound, &ex.in.Refused, ex.in.Untrusted, r.RemoteAddr)
	}
	if p.opt.Flags != nil {
		ex.in.Flags = p.opt.Flags.Pin(r, ex.in.Flags)
	}

	ctx, span, traceID := p.startTrace(r.Context(), r.Method, ex)
	if ex.in.Name != "" || len(ex.in.Flags) > 0 {
		release := p.corr.BeginAt(traceID, ex.in.Entry(), ex.start)
		defer release()
	}
	if isUpgrade(r) {
		p.inDrain.enter()
		defer p.inDrain.leave()
	}
	fullDuplex(w, r)
	ex.body = watchBody(w, r, p.opt.BodyTimeout)
	defer func() {
		p.finishFraming(w, r, sideInbound, framing, ex.body, ex.upgraded)
		// ReverseProxy aborts with a panic when a streamed body breaks midway;
		// that request still counts, as failed.
		if v := recover(); v != nil {
			ex.failed = true
			p.finishInbound(ex, span)
			ex.release()
			panic(v)
		}
		p.finishInbound(ex, span)
		ex.release()
	}()
	out := r.WithContext(context.WithValue(ctx, exchangeKey{}, ex))
	if ex.body != nil {
		out.Body = ex.body
	}
	p.in.ServeHTTP(w, out)
}

func (p *Proxy) rewriteInbound(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = p.opt.App
	if dst, ok := origDstOf(pr.In); ok {
		// Redirected to the inbound listener: the app gets the connection at the
		// address its client meant (pod IP and original port), as Istio >= 1.10 does,
		// so a port the app binds to loopback only stays out of reach from other pods.
		pr.Out.URL.Host = dst.String()
		ex.dst = dst
	}
	// The app sees the Host its caller asked for, and the chain of client
	// addresses with this hop's appended.
	if prior, ok := pr.In.Header["X-Forwarded-For"]; ok {
		pr.Out.Header["X-Forwarded-For"] = prior
	}
	pr.SetXForwarded()
	ex.in.Apply(pr.Out.Header, ex.child)
	// headers.Inbound.Apply removes ctx-ops too; this stays as the last word, since
	// ops that reached the app could be forwarded and applied twice.
	pr.Out.Header.Del(headers.CtxOps)
}

func (p *Proxy) modifyInbound(res *http.Response) error {
	ex := exchangeOf(res.Request)
	ex.status = res.StatusCode
	ex.upgraded = res.StatusCode == http.StatusSwitchingProtocols
	list, err := headers.ResponseOps(res.Header)
	if err != nil {
		p.headerErrors("app response", []error{err})
	}
	ex.respOps = list
	return nil
}

// finishInbound applies the request's ctx-ops, counts its telemetry (written with them
// when the proxy is not open) and ends its span.
// startTrace starts this hop's part of the trace, as tracing.mode says, for both data
// paths: in export mode a server span (the context returned carries it), in participate
// mode a new child of the incoming parent (ex.child), in passthrough nothing. It returns
// the trace-id that correlates the app's outbound calls with this request.
func (p *Proxy) startTrace(ctx context.Context, method string, ex *exchange) (context.Context, trace.Span, trace.TraceID) {
	var span trace.Span
	traceID := ex.in.Parent.TraceID()
	switch {
	case p.tracer != nil:
		if ex.in.Parent.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, withOtelState(ex.in.Parent, ex.in.TraceState))
		}
		ctx, span = p.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", method)))
		ex.child = span.SpanContext()
		traceID = ex.child.TraceID()
	case p.opt.Trace == TraceParticipate:
		ex.child = headers.NewChild(ex.in.Parent, p.opt.SampleRatio)
		traceID = ex.child.TraceID()
	}
	return ctx, span, traceID
}

func (p *Proxy) finishInbound(ex *exchange, span trace.Span) {
	elapsed := time.Since(ex.start)
	p.reqs.observe(ex, elapsed)
	name := ex.in.Name
	switch {
	case name == "":
		if len(ex.in.Ops) > 0 || len(ex.respOps) > 0 {
			p.stats.droppedOps.Add(1)
			if p.logStore.allow() {
				p.log.Warn("ctx-ops dropped: the request has no context (baggage ctx.name)", "direction", "inbound")
			}
		}
	case p.opt.Store != nil:
		list := ex.buf[:0]
		list = append(list, ex.in.Ops...)
		list = append(list, ex.respOps...)
		if !p.tel.add(name, ex.status, ex.failed, elapsed, ex.upgraded) {
			list = appendTelemetry(list, ex.status, ex.failed, elapsed, ex.upgraded)
		}
		if len(list) > 0 {
			p.apply(name, list)
		}
	}
	if span != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", ex.status))
		if ex.failed || ex.status >= 500 {
			span.SetStatus(codes.Error, "status "+strconv.Itoa(ex.status))
		}
		span.End()
	}
}

func (p *Proxy) apply(name string, list []ops.Op) {
	if err := p.opt.Store.Apply(name, list); err != nil {
		p.stats.store.Add(1)
		if p.logStore.allow() {
			p.log.Error("context writes lost: store refused them", "context", name, "ops", len(list), "error", err)
		}
	}
}

// isUpgrade reports whether r asks to switch protocols (WebSocket and others), in
// which case its connection will be hijacked.
func isUpgrade(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.Header.Get("Upgrade") != ""
}

// fullDuplex lets an HTTP/1.1 request body keep streaming upstream after the response
// has started, as it does over HTTP/2: without it net/http's server cuts the body at
// the first response write, which breaks bidirectional streams and early answers.
func fullDuplex(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		http.NewResponseController(w).EnableFullDuplex()
	}
}
