package headers

import (
	"errors"
	"net/http"

	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/ops"
)

// Header names in canonical form, as keys of http.Header.
const (
	Traceparent = "Traceparent"
	Tracestate  = "Tracestate"
	Baggage     = "Baggage"
	CtxOps      = "Ctx-Ops"
	// FlagPrefix starts the headers that carry pinned flags to the local app
	// (SPEC §4): "Ctx-Flag-<name>: <value>".
	FlagPrefix = "Ctx-Flag-"
)

// Baggage member keys reserved by ctxprop (SPEC §4). Every key starting with "ctx."
// is ours; other members pass through untouched.
const (
	NameKey       = "ctx.name"  // the context name
	FlagKeyPrefix = "ctx.flag." // followed by a flag name; the value pinned for the chain
)

// Limits of W3C Baggage, enforced over all baggage lines of a request together.
const (
	MaxBaggageMembers = 64
	MaxBaggageBytes   = 8192
)

// MaxNameLen is the longest valid context name in bytes (SPEC §3).
const MaxNameLen = 200

// The problems this package reports, wrapped in *Error. Test with errors.Is.
var (
	ErrTraceparent  = errors.New("invalid traceparent")
	ErrTracestate   = errors.New("invalid tracestate")
	ErrBaggage      = errors.New("invalid baggage")
	ErrBaggageFull  = errors.New("baggage full")
	ErrName         = errors.New("invalid context name")
	ErrFlag         = errors.New("invalid pinned flag")
	ErrOps          = errors.New("invalid ctx-ops")
	ErrUntrustedOps = errors.New("ctx-ops from another pod dropped")
)

// Error is one problem with one header. The request it came from still goes through;
// the offending part was dropped. Header is the lowercase wire name ("traceparent",
// "tracestate", "baggage", "ctx-ops") and is meant as a metric label.
type Error struct {
	Header string
	Err    error // wraps one of the Err* values above
}

func (e *Error) Error() string { return e.Header + ": " + e.Err.Error() }

// Unwrap lets errors.Is see the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// Options are the proxy settings that change header handling. The zero value is
// tracing off and inbound ctx-ops not trusted.
type Options struct {
	// Tracing says the proxy starts a span per request and passes its SpanContext to
	// Apply, which then forwards the span's traceparent (same trace-id, new
	// parent-id, flags kept) and tracestate. When false, a valid traceparent and
	// its tracestate go through byte for byte; an invalid one is removed with its
	// tracestate (garbage is never forwarded).
	Tracing bool
	// TrustInboundOps keeps ctx-ops on requests from other pods (config
	// trust_inbound_ops) and returns them in Inbound.Ops. When false, they are
	// dropped and reported with ErrUntrustedOps.
	TrustInboundOps bool
}

// Flag is a flag value pinned for a request chain (SPEC §6), carried in baggage as
// "ctx.flag.<Name>=<Value>" and given to the app as "Ctx-Flag-<Name>: <Value>".
type Flag struct {
	Name  string
	Value string // decoded (not percent-encoded)
}

// Inbound is what a request from another pod says, as read by ReadInbound.
type Inbound struct {
	// Parent is the remote parent to start the request's span from; the zero
	// SpanContext (not valid) when the request has no valid traceparent, in which
	// case the proxy starts a new trace.
	Parent trace.SpanContext
	// Name is the context name from baggage ctx.name; "" when absent or invalid.
	Name string
	// Flags are the pinned flags from baggage ctx.flag.*, in baggage order; nil
	// when none.
	Flags []Flag
	// Ops are the request's ctx-ops when Options.TrustInboundOps is set; nil
	// otherwise.
	Ops []ops.Op

	opt Options
}

// ReadInbound reads the headers of a request received from another pod. It does not
// modify in. The errors are the problems found, each an *Error; nil when none.
func ReadInbound(in http.Header, opt Options) (Inbound, []error) {
	return Inbound{}, nil
}

// Apply rewrites out, the headers of the request sent to the local app (a copy of
// the received ones). It removes ctx-ops (trusted ops are applied by the sidecar
// and must not reach the app, which could forward them and have them applied
// twice) and any Ctx-Flag-* header from the network, adds a Ctx-Flag-<name> header
// per pinned flag, drops invalid ctx.* baggage members, and writes the trace
// headers: child's traceparent and tracestate when tracing is on and child is
// valid; otherwise the received ones when valid, none when not.
//
// child is the SpanContext of the span the proxy started for this request. The app
// sees child's trace-id (or, tracing off, the received one): that is the key to
// give Correlator.Begin.
func (in *Inbound) Apply(out http.Header, child trace.SpanContext) {}

// Entry is what the Correlator remembers of an inbound request.
func (in *Inbound) Entry() Entry { return Entry{} }

// Outbound is what a request from the local app to another pod says, as read by
// ReadOutbound.
type Outbound struct {
	// Parent is the app's traceparent, the parent of the proxy's span; the zero
	// SpanContext when the app sent none or an invalid one.
	Parent trace.SpanContext
	// Name is the context name of the request: the app's baggage ctx.name, or the
	// correlated inbound request's when the app's baggage has none; "" when neither.
	Name string
	// Flags are the pinned flags, the app's own and the correlated ones it lacks.
	Flags []Flag
	// Ops are the app's ctx-ops, to apply to the context Name.
	Ops []ops.Op
	// Correlated says ctx.* members from the Correlator are added to the baggage.
	Correlated bool

	opt     Options
	baggage string // the baggage line to send when rewritten; see Apply
	rewrite bool
}

// ReadOutbound reads the headers of a request from the local app. When c is not nil
// and the app's traceparent has a trace-id of an in-flight inbound request, the
// ctx.* members the app's baggage lacks are taken from it (an app that forwards
// only traceparent keeps its context; SPEC §4). Members that would push baggage past
// MaxBaggageMembers or MaxBaggageBytes are not added and are reported with
// ErrBaggageFull. It does not modify in.
func ReadOutbound(in http.Header, opt Options, c *Correlator) (Outbound, []error) {
	return Outbound{}, nil
}

// Apply rewrites out, the headers of the request sent to the other pod (a copy of
// the app's). It removes ctx-ops and Ctx-Flag-* (both are local to the pod), drops
// invalid ctx.* baggage members, adds the correlated ones, and writes the trace
// headers as Inbound.Apply does.
func (o *Outbound) Apply(out http.Header, child trace.SpanContext) {}

// ResponseOps removes ctx-ops from h, the headers of a response from the local app,
// and returns the ops parsed (all ctx-ops lines form one list). A malformed list is
// dropped whole, so the ops of one response apply all or none, and reported as an
// *Error wrapping ErrOps.
func ResponseOps(h http.Header) ([]ops.Op, error) { return nil, nil }

// WriteTraceparent sets h's traceparent (version 00) and tracestate from sc. When sc
// is not valid it removes both; when sc's tracestate is empty it removes tracestate.
// Only the flags defined by W3C Trace Context Level 2 (sampled, random) are written.
func WriteTraceparent(h http.Header, sc trace.SpanContext) {}
