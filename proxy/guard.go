package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The per-request half of the framing defence (framing.go has the per-connection half):
// what the handler does with a verdict, and how it watches the request body.
//
// The handler enables full duplex (fullDuplex) so that a body can stream while the
// response does. net/http then leaves the request body alone when the response starts,
// and so no longer closes the connection after a body that failed to parse; the bytes
// after the failure would be read as the next request. The handler makes that decision
// itself: a request whose body did not end cleanly, or whose framing was ambiguous, ends
// its connection after the response.

// watchBody wraps r's body for the exchange, or returns nil when r has none. timeout > 0
// bounds the wait for each read (inbound.body_timeout).
func watchBody(w http.ResponseWriter, r *http.Request, timeout time.Duration) *bodyWatch {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil
	}
	if r.ProtoMajor != 1 && timeout <= 0 {
		return nil // HTTP/2 frames its bodies: only the timeout needs the watch
	}
	b := &bodyWatch{ReadCloser: r.Body, timeout: timeout, h2: r.ProtoMajor == 2}
	if timeout > 0 {
		b.rc = http.NewResponseController(w)
	}
	return b
}

// bodyWatch is a request body on its way upstream. The Transport reads it on a goroutine
// of its own, possibly after the handler has returned, while the handler goroutine owns
// the ResponseWriter: the handler reads the outcome under mu, and disarms the deadline
// refresh before it returns, after which the ResponseController must not be used.
type bodyWatch struct {
	io.ReadCloser
	timeout time.Duration
	h2      bool

	mu       sync.Mutex
	rc       *http.ResponseController // nil: no timeout
	disarmed bool
	err      error // how the body ended: io.EOF when cleanly; nil while it has not
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	if b.timeout > 0 {
		b.arm()
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end(err)
	}
	return n, err
}

// arm gives the coming read b.timeout: the body timeout is the time allowed between two
// successful reads (nginx's client_body_timeout), not a bound on the whole body, which
// may stream for as long as the exchange lasts.
func (b *bodyWatch) arm() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc != nil && !b.disarmed && b.err == nil {
		if err := b.rc.SetReadDeadline(time.Now().Add(b.timeout)); err != nil {
			b.rc = nil // the ResponseWriter has no deadlines: no timeout, as before
		}
	}
}

func (b *bodyWatch) end(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return
	}
	b.err = err
	// An HTTP/2 deadline is a timer of the stream that would fire later; an HTTP/1
	// one is cleared by net/http when it starts its background read after the body.
	if err == io.EOF && b.h2 && b.rc != nil && !b.disarmed {
		b.rc.SetReadDeadline(time.Time{})
	}
}

// disarm stops the deadline refresh; the handler calls it before it returns.
func (b *bodyWatch) disarm() {
	b.mu.Lock()
	b.disarmed = true
	b.mu.Unlock()
}

// outcome says how the body ended so far: reasonNone when read cleanly to its end,
// reasonBodyUnread while it has not ended, or the failure with its error.
func (b *bodyWatch) outcome() (closeReason, error) {
	b.mu.Lock()
	err := b.err
	b.mu.Unlock()
	return bodyOutcome(err)
}

// bodyOutcome maps how a request body's reads ended (err: nil while not ended, io.EOF at
// its end) to the reason the connection closes for, and the error to log.
func bodyOutcome(err error) (closeReason, error) {
	switch {
	case err == io.EOF:
		return reasonNone, nil
	case err == nil:
		return reasonBodyUnread, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return reasonBodyTimeout, err
	default:
		return reasonBodyError, err
	}
}

// takeVerdict takes the framing verdict on r's header block. An ambiguous request is
// still served, with "Connection: close" on its answer.
func takeVerdict(w http.ResponseWriter, r *http.Request) closeReason {
	if r.ProtoMajor != 1 {
		return reasonNone
	}
	fc := framedConnOf(r)
	if fc == nil {
		return reasonNone // the handler is mounted on a server of someone else's
	}
	reason := fc.take(r)
	if reason != reasonNone {
		w.Header().Set("Connection", "close")
	}
	return reason
}

// refuseAmbiguousSwitch answers 400 to a CONNECT or Upgrade request whose framing was
// ambiguous: after a protocol switch the connection carries no more HTTP, and what
// follows the ambiguous header would reach the other side as tunnelled bytes.
func refuseAmbiguousSwitch(w http.ResponseWriter, r *http.Request, reason closeReason) bool {
	if reason == reasonNone || (r.Method != http.MethodConnect && !isUpgrade(r)) {
		return false
	}
	http.Error(w, "ctxprop: refused: "+reasonText[reason]+"; send the request again with unambiguous framing (CRLF line endings, "+
		"no folded header lines, Content-Length or Transfer-Encoding but not both)", http.StatusBadRequest)
	return true
}

// finishFraming runs on the handler goroutine as the handler returns (also when it
// panics): it decides whether the connection closes after this response, counts and logs
// why, and tells net/http. reason is the verdict taken at the start; switched is true
// when the connection left HTTP (101, CONNECT), which leaves nothing to close.
func (p *Proxy) finishFraming(w http.ResponseWriter, r *http.Request, side int, reason closeReason, body *bodyWatch, switched bool) {
	if body != nil {
		body.disarm()
	}
	if switched {
		return
	}
	var bodyErr error
	if reason == reasonNone && body != nil {
		var br closeReason
		br, bodyErr = body.outcome()
		if r.ProtoMajor == 1 || br == reasonBodyTimeout {
			reason = br
		}
	}
	if reason == reasonNone && r.ProtoMajor == 1 {
		if fc := framedConnOf(r); fc != nil && !fc.following() {
			if r.Method == http.MethodConnect || isUpgrade(r) {
				// A refused switch: the bytes after it may be the tunnel's, not HTTP.
				closeAfterResponse(w)
				return
			}
			reason = reasonUnverified
		}
	}
	if reason == reasonNone {
		return
	}
	p.stats.closes[side][reason].Add(1)
	if p.logFraming.allow() {
		args := []any{"direction", sideNames[side], "reason", reasonNames[reason], "client", r.RemoteAddr, "method", r.Method, "target", r.RequestURI}
		if bodyErr != nil {
			args = append(args, "error", bodyErr)
		}
		msg := "client connection closed after the response: " + reasonText[reason]
		if r.ProtoMajor != 1 {
			msg = "request stream ended: " + reasonText[reason]
		}
		p.log.Warn(msg, args...)
	}
	if r.ProtoMajor == 1 {
		closeAfterResponse(w)
	}
}

// closeAfterResponse makes net/http close the connection once the response in progress
// is complete. Before the header is written, "Connection: close" would do; after it,
// with full duplex, the ResponseWriter offers one way, the one MaxBytesReader uses and
// documents: reading past its limit tells the ResponseWriter to close the connection
// after the response (and to close it gracefully, so that the client reads the answer).
// It must run on the handler goroutine, which owns w.
func closeAfterResponse(w http.ResponseWriter) {
	limited := http.MaxBytesReader(w, io.NopCloser(strings.NewReader("x")), 0)
	io.Copy(io.Discard, limited)
}

// answerBodyError answers a request whose body failed while it was forwarded: 408 when
// the client stalled, 400 when the body was malformed or cut, nothing when the client's
// connection broke. It returns false when the body did not fail.
func (p *Proxy) answerBodyError(w http.ResponseWriter, r *http.Request, ex *exchange) bool {
	if ex == nil || ex.body == nil {
		return false
	}
	reason, err := ex.body.outcome()
	if err == nil {
		return false
	}
	var status int
	var msg string
	switch {
	case reason == reasonBodyTimeout:
		status = http.StatusRequestTimeout
		msg = fmt.Sprintf("ctxprop: the request body stalled: no data for %s (inbound.body_timeout); the request was cancelled and the connection is closed\n", p.opt.BodyTimeout)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		ex.status = statusClientGone
		return true
	default:
		status = http.StatusBadRequest
		msg = fmt.Sprintf("ctxprop: the request body could not be read: %v; the request was cancelled and the connection is closed\n", err)
	}
	ex.status = status
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.ProtoMajor == 1 {
		h.Set("Connection", "close") // over HTTP/2 it would end every stream of the connection
	}
	w.WriteHeader(status)
	io.WriteString(w, msg)
	return true
}
