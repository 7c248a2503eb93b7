package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
)

// upstreamError is the ReverseProxy ErrorHandler of both sides: it answers 502 or 504
// with a plain-text body that says what failed and what to check.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r)
	// A body that failed explains the failed round trip, and is the client's doing: the
	// app is not at fault. net/http also cancels the request's context when a read from
	// the client fails, which the test below would take for a client gone.
	if p.answerBodyError(w, r, ex) {
		return
	}
	if errors.Is(err, errLoopbackTarget) {
		p.refuseLoopbackTarget(w, r, ex, err)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client left (or Close cut the request): nobody to answer.
		if ex != nil {
			ex.status = statusClientGone
		}
		return
	}
	inbound := ex != nil && ex.inbound
	target := r.URL.Host
	if inbound {
		target = p.opt.App
	}
	redirected := ex != nil && ex.dst.IsValid()
	if redirected {
		target = ex.dst.String()
	}
	status, msg := describeUpstreamError(err, target, inbound, p.opt)
	if redirected && inbound && errors.Is(err, syscall.ECONNREFUSED) {
		msg = fmt.Sprintf("ctxprop: the app at %s refused the connection: this request was redirected to the sidecar and goes on to the port it was sent to, "+
			"on the pod's address; an app that listens on loopback only (127.0.0.1) is not reachable from other pods, with or without the sidecar: "+
			"listen on 0.0.0.0 or the pod IP.\n", target)
	}
	if ex != nil {
		ex.status, ex.failed = status, true
	}
	p.stats.upstream.Add(1)
	if p.logUp.allow() {
		p.log.Warn("upstream request failed", "inbound", inbound, "target", target, "status", status, "error", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg)
}

// describeUpstreamError maps a failed round trip to the status and the body the
// client gets. inbound says the target is the local app.
func describeUpstreamError(err error, target string, inbound bool, opt Options) (int, string) {
	who := target
	if inbound {
		who = "the app at " + target
	}
	var ne net.Error
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		if inbound {
			return http.StatusBadGateway, fmt.Sprintf("ctxprop: %s refused the connection: check that the app is running and listening on %s, "+
				"and that inbound.app in the sidecar config names its port.\n", who, target)
		}
		return http.StatusBadGateway, fmt.Sprintf("ctxprop: %s refused the connection: check that the service is up and the port is right.\n", who)
	case errors.As(err, &dns):
		return http.StatusBadGateway, fmt.Sprintf("ctxprop: cannot resolve %s: %v; check the host name.\n", who, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return http.StatusGatewayTimeout, fmt.Sprintf("ctxprop: connecting to %s timed out after %s: check that it is reachable.\n", who, opt.DialTimeout)
		}
		if opt.ResponseHeaderTimeout <= 0 {
			return http.StatusGatewayTimeout, fmt.Sprintf("ctxprop: %s did not answer in time: it may be overloaded or stuck.\n", who)
		}
		return http.StatusGatewayTimeout, fmt.Sprintf("ctxprop: %s did not answer within %s: it may be overloaded or stuck; "+
			"raise the proxy's response header timeout if such slow answers are expected.\n", who, opt.ResponseHeaderTimeout)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadGateway, fmt.Sprintf("ctxprop: %s closed the connection before answering: check its logs for a crash or a connection limit.\n", who)
	default:
		return http.StatusBadGateway, fmt.Sprintf("ctxprop: forwarding to %s failed: %v\n", who, err)
	}
}
