package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
)

// Proxy is the sidecar's data path: the inbound reverse proxy to the app and the
// outbound forward proxy for the app. Create it with New, start it with Open, stop it
// with Close. Its methods are safe for concurrent use.
type Proxy struct {
	opt    Options
	log    hclog.Logger
	tracer trace.Tracer // nil: tracing off
	hopt   headers.Options
	corr   *headers.Correlator

	in, out         *httputil.ReverseProxy
	inT, outT       *router
	dialer          *net.Dialer
	inSrv, outSrv   *http.Server
	inDrain, outDrn tracker // hijacked exchanges, which http.Server.Shutdown does not wait for

	// outRemote serves outbound clients from outside the pod; its dialer refuses
	// loopback targets (see refuseLoopbackDial) and its pools are its own.
	outRemote    *httputil.ReverseProxy
	outRemoteT   *router
	remoteDialer *net.Dialer

	// base is the parent of every request context. Close cancels it when the drain
	// deadline passes, which ends WebSockets and tunnels still open.
	base       context.Context
	cancelBase context.CancelFunc

	// The transparent side (transparent.go): the raw listeners, whose accept loops
	// sniff each connection and hand the HTTP ones to transSrv through transQ, and the
	// inbound listener's queue, where its accept loop hands every connection it serves
	// as HTTP.
	transSrv *http.Server
	fast     *fastPath // the inbound listener's HTTP/1.1 fast path (fastpath.go); nil when off
	transQ   *connQueue
	inQ      *connQueue
	transLns []net.Listener
	trans    transparentCounters
	conns    sync.WaitGroup // goroutines of sniffed and spliced connections

	mu       sync.Mutex
	inLn     net.Listener
	outLn    net.Listener
	outPort  string // the outbound listener's port; set by Open before serving, read-only after
	opened   bool
	serving  sync.WaitGroup
	closing  sync.Once
	closeErr error

	tel        telemetry // per-context telemetry summed between Open and Close
	stopTel    context.CancelFunc
	flushing   sync.WaitGroup // telemetryLoop
	stats      counters
	reqs       requestMetrics // by status class and latency, for Collector
	logHeader  throttle
	logStore   throttle
	logUp      throttle
	logTrust   throttle
	logFraming throttle
	logRefused throttle

	logTransparent throttle   // refused redirected connections
	podAddrs       localAddrs // where redirected inbound connections may go
	logAccept      throttle   // accept errors (out of file descriptors)
}

// New checks opt and builds a Proxy. It binds nothing and starts no goroutine.
func New(opt Options) (*Proxy, error) {
	if err := opt.Validate(); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	opt = opt.withDefaults()
	p := &Proxy{
		opt: opt,
		log: opt.Logger.Named("proxy"),
		hopt: headers.Options{
			Tracing:         opt.Trace != TracePassthrough,
			TracestateKey:   opt.TracestateKey,
			TrustInboundOps: opt.TrustInboundOps,
			Signer:          opt.Signer,
			ContextHeader:   http.CanonicalHeaderKey(opt.ContextHeader),
			ContextBaggage:  opt.ContextBaggage,
		},
		corr: headers.NewCorrelator(opt.CorrelationSize, opt.CorrelationTimeout),
		dialer: &net.Dialer{
			Timeout:   opt.DialTimeout,
			KeepAlive: 30 * time.Second,
		},
		remoteDialer: &net.Dialer{
			Timeout:        opt.DialTimeout,
			KeepAlive:      30 * time.Second,
			ControlContext: refuseLoopbackDial,
		},
	}
	if opt.TracerProvider != nil {
		p.tracer = opt.TracerProvider.Tracer("github.com/ctxprop/ctxprop/proxy")
	}
	if opt.Flags != nil {
		p.hopt.Pinnable = opt.Flags.Pinnable
	}
	p.base, p.cancelBase = context.WithCancel(context.Background())
	errLog := p.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	p.inT = newRouter(opt, p.dialer, 0)
	p.outT = newRouter(opt, p.dialer, opt.IdleTimeout)
	p.outRemoteT = newRouter(opt, p.remoteDialer, opt.IdleTimeout)
	p.in = &httputil.ReverseProxy{
		Rewrite:        p.rewriteInbound,
		Transport:      p.inT,
		ModifyResponse: p.modifyInbound,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       errLog,
		BufferPool:     copyBuffers,
	}
	p.out = &httputil.ReverseProxy{
		Rewrite:        p.rewriteOutbound,
		Transport:      p.outT,
		ModifyResponse: p.modifyOutbound,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       errLog,
		BufferPool:     copyBuffers,
	}
	p.outRemote = &httputil.ReverseProxy{
		Rewrite:        p.rewriteOutbound,
		Transport:      p.outRemoteT,
		ModifyResponse: p.modifyOutbound,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       errLog,
		BufferPool:     copyBuffers,
	}
	if opt.InboundAddress != "" {
		p.inSrv = p.newServer(http.HandlerFunc(p.serveInbound), errLog)
	}
	if opt.InboundAddress != "" && !opt.DisableFastPath {
		p.fast = newFastPath(p)
	}
	if opt.OutboundAddress != "" {
		p.outSrv = p.newServer(http.HandlerFunc(p.serveOutbound), errLog)
	}
	if opt.TransparentAddress != "" {
		p.transSrv = p.newServer(http.HandlerFunc(p.serveTransparent), errLog)
	}
	return p, nil
}

func (p *Proxy) newServer(h http.Handler, errLog *log.Logger) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true) // prior-knowledge h2c, as gRPC clients speak it
	return &http.Server{
		Handler:           h,
		Protocols:         &protos,
		ReadHeaderTimeout: p.opt.ReadHeaderTimeout,
		IdleTimeout:       p.opt.IdleTimeout,
		MaxHeaderBytes:    p.opt.MaxHeaderBytes,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return p.base },
		ConnContext:       connContext,
	}
}

// Inbound returns the handler of the inbound listener: it forwards requests from
// other pods to the app. It is usable without Open, for embedding in another server.
func (p *Proxy) Inbound() http.Handler { return http.HandlerFunc(p.serveInbound) }

// Outbound returns the handler of the outbound listener, the app's forward proxy.
func (p *Proxy) Outbound() http.Handler { return http.HandlerFunc(p.serveOutbound) }

// Open binds the listeners named in the options and serves them until Close.
func (p *Proxy) Open() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.opened {
		return errors.New("proxy: Open called twice")
	}
	if p.base.Err() != nil {
		return errors.New("proxy: Open after Close")
	}
	var lc net.ListenConfig
	if p.inSrv != nil {
		ln, err := lc.Listen(p.base, "tcp", p.opt.InboundAddress)
		if err != nil {
			return fmt.Errorf("proxy: inbound listener: %w; change inbound.address or stop what holds the port", err)
		}
		p.inLn = ln
	}
	if p.outSrv != nil {
		ln, err := lc.Listen(p.base, "tcp", p.opt.OutboundAddress)
		if err != nil {
			if p.inLn != nil {
				p.inLn.Close()
				p.inLn = nil
			}
			return fmt.Errorf("proxy: outbound listener: %w; change outbound.address or stop what holds the port", err)
		}
		p.outLn = ln
		_, p.outPort, _ = net.SplitHostPort(ln.Addr().String())
	}
	if p.transSrv != nil {
		lns, err := listenTransparent(p.base, p.opt.TransparentAddress, p.log)
		if err != nil {
			for _, ln := range []net.Listener{p.inLn, p.outLn} {
				if ln != nil {
					ln.Close()
				}
			}
			p.inLn, p.outLn = nil, nil
			return fmt.Errorf("proxy: transparent listener: %w; change outbound.transparent_address (\"\" for none) or stop what holds the port", err)
		}
		p.transLns = lns
	}
	p.opened = true
	if p.opt.Store != nil {
		var ctx context.Context
		ctx, p.stopTel = context.WithCancel(context.Background())
		p.tel.start()
		p.flushing.Add(1)
		go p.telemetryLoop(ctx)
	}
	if p.inLn != nil {
		// Every inbound connection passes the accept loop, which sends the redirected
		// ones to their original destination (transparent.go).
		p.inQ = newConnQueue(p.inLn.Addr())
		p.serve(p.inSrv, p.inQ, "inbound")
		p.serving.Add(1)
		go p.acceptLoop(p.inLn, "inbound", p.acceptInbound)
	}
	p.serve(p.outSrv, p.outLn, "outbound")
	if len(p.transLns) > 0 {
		p.transQ = newConnQueue(p.transLns[0].Addr())
		p.serve(p.transSrv, p.transQ, "transparent")
		for i, ln := range p.transLns {
			if i > 0 { // serve logged the first
				p.log.Info("listening", "listener", "transparent", "address", ln.Addr().String())
			}
			p.serving.Add(1)
			go p.acceptLoop(ln, "transparent", p.acceptTransparent)
		}
	}
	return nil
}

// listenTransparent binds addr and, when its host is 127.0.0.1, [::1] at the same port:
// ip6tables REDIRECT sends locally made IPv6 connections to ::1. A host without IPv6
// keeps the IPv4 listener alone.
func listenTransparent(ctx context.Context, addr string, log hclog.Logger) ([]net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	lns := []net.Listener{ln}
	if host, _, _ := net.SplitHostPort(addr); host == "127.0.0.1" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln6, err := lc.Listen(ctx, "tcp6", net.JoinHostPort("::1", port))
		if err != nil {
			log.Info("no IPv6 transparent listener: IPv6 connections redirected to ::1 will not arrive", "address", "[::1]:"+port, "error", err)
		} else {
			lns = append(lns, ln6)
		}
	}
	return lns, nil
}

// TransparentAddr returns the bound address of the transparent listener (its IPv4 one
// when it has two), nil before Open or without one.
func (p *Proxy) TransparentAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.transLns) == 0 {
		return nil
	}
	return p.transLns[0].Addr()
}

func (p *Proxy) serve(srv *http.Server, ln net.Listener, name string) {
	if ln == nil {
		return
	}
	p.log.Info("listening", "listener", name, "address", ln.Addr().String())
	p.serving.Add(1)
	go func() {
		defer p.serving.Done()
		// framingListener lets the handlers see how each request was framed on the wire.
		if err := srv.Serve(framingListener{ln}); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("listener stopped", "listener", name, "error", err)
		}
	}()
}

// InboundAddr returns the bound address of the inbound listener, nil before Open or
// without one.
func (p *Proxy) InboundAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inLn == nil {
		return nil
	}
	return p.inLn.Addr()
}

// OutboundAddr returns the bound address of the outbound listener, nil before Open
// or without one.
func (p *Proxy) OutboundAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.outLn == nil {
		return nil
	}
	return p.outLn.Addr()
}

// Close drains the proxy: it stops accepting, lets in-flight requests, WebSockets and
// tunnels finish until ctx ends, then cuts the rest. The inbound side drains first,
// while the outbound side still serves the calls its in-flight requests make. Close
// returns an error when the drain was cut short; it is safe to call twice and returns
// the first result again.
func (p *Proxy) Close(ctx context.Context) error {
	p.closing.Do(func() { p.closeErr = p.close(ctx) })
	return p.closeErr
}

func (p *Proxy) close(ctx context.Context) error {
	var errs []error
	drain := func(name string, srv *http.Server, hijacked *tracker) {
		if srv == nil {
			return
		}
		err := srv.Shutdown(ctx)
		if err == nil {
			err = hijacked.wait(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy: %s drain cut short: %w", name, err))
		}
	}
	// Each side's accept loops stop before its server drains: a connection accepted
	// later would find the server gone. The transparent listener accepts until the
	// inbound side has drained, since the requests in flight there make outbound calls.
	p.mu.Lock()
	inLn, transLns := p.inLn, p.transLns
	p.mu.Unlock()
	if inLn != nil {
		inLn.Close()
	}
	// The fast path first: a connection it hands to the inbound server meanwhile is
	// drained there.
	if p.fast != nil {
		if err := p.fast.shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("proxy: inbound drain cut short: %w", err))
		}
	}
	drain("inbound", p.inSrv, &p.inDrain)
	for _, ln := range transLns {
		ln.Close()
	}
	drain("outbound", p.outSrv, &p.outDrn)
	drain("transparent", p.transSrv, &p.outDrn)
	// Past the deadline: end what is left (requests, WebSockets, tunnels).
	p.cancelBase()
	if p.fast != nil {
		p.fast.closeAll()
	}
	for _, srv := range []*http.Server{p.inSrv, p.outSrv, p.transSrv} {
		if srv != nil {
			if err := srv.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	p.serving.Wait()
	p.conns.Wait()
	// After the drain, so the requests it let finish are in the last window; a request
	// of a hijacked connection that ends later writes its own telemetry.
	p.mu.Lock()
	stopTel := p.stopTel
	p.mu.Unlock()
	if stopTel != nil {
		stopTel()
		p.flushing.Wait()
		if err := p.flushTelemetry(ctx, true); err != nil {
			errs = append(errs, err)
		}
	}
	p.inT.closeIdle()
	p.outT.closeIdle()
	p.outRemoteT.closeIdle()
	return errors.Join(errs...)
}

// tracker counts exchanges in flight that http.Server.Shutdown cannot see because
// their connection was hijacked (WebSocket and Upgrade pass-through, CONNECT tunnels).
type tracker struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0 while someone waits
}

func (t *tracker) enter() {
	t.mu.Lock()
	t.n++
	t.mu.Unlock()
}

func (t *tracker) leave() {
	t.mu.Lock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// throttle lets a log line through at most once a second, so a flood of bad
// requests or a failing store cannot turn into a flood of logs.
type throttle struct{ next atomic.Int64 }

func (t *throttle) allow() bool {
	now := time.Now().UnixNano()
	next := t.next.Load()
	return now >= next && t.next.CompareAndSwap(next, now+int64(time.Second))
}

// copyBuffers lends ReverseProxy its body copy buffers; without a pool it allocates
// 32 KiB per request, most of a proxied request's garbage.
var copyBuffers httputil.BufferPool = &bufferPool{}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
