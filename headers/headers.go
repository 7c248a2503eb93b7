package headers

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

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
	ErrUntrusted    = errors.New("context from outside the fleet removed")
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
// tracing off, inbound ctx-ops not trusted, no context from other pods trusted, and no
// flag pinnable.
type Options struct {
	// Tracing says the proxy takes part in the trace (tracing.mode "participate" or
	// "export"): it makes a child of each request's parent (NewChild, or a span) and
	// passes it to Apply, which forwards the child's traceparent (same trace-id, new
	// parent-id, flags kept; a new trace when there was no valid parent) and the
	// tracestate as ParseTracestate read it. When false ("passthrough"), a valid
	// traceparent and its tracestate go through byte for byte; an invalid one is
	// removed with its tracestate (garbage is never forwarded).
	Tracing bool
	// TracestateKey, when not "" and Tracing is set, is the tracestate key under which
	// each hop records its position: Apply puts "<key>=<the child's parent-id>" at the
	// left of tracestate and removes the key's older member (config
	// tracing.tracestate_key). It must be a valid tracestate key.
	TracestateKey string
	// TrustInboundOps keeps ctx-ops on requests from other pods (config
	// trust_inbound_ops) and returns them in Inbound.Ops. When false, they are
	// dropped and reported with ErrUntrustedOps.
	TrustInboundOps bool

	// Signer vouches for the context members that leave through the outbound proxy
	// (Outbound.Apply adds a ctx-sig) and checks those that arrive from other pods
	// (ReadInbound keeps them only when their ctx-sig verifies). Nil means nothing is
	// signed, and members from other pods are kept only from a trusted source.
	Signer *Signer
	// Pinnable reports whether a flag may be pinned for a request chain (flags.pinned,
	// SPEC §4a): ctx.flag.* members of other flags are removed on both paths, whoever
	// sent them. Nil means no flag is pinnable. It is called on the request path: it
	// must be fast and safe for concurrent use.
	Pinnable func(name string) bool
	// ContextHeader, for a sidecar at the edge of the fleet, names a request header
	// whose value starts a context when a request from outside brings none the sidecar
	// trusts (config inbound.context_header). Canonical form; "" means none.
	ContextHeader string
	// ContextBaggage is the same for a baggage member (inbound.context_baggage), such
	// as "workflow.id"; "ctx.name" takes the ctx.name of any caller. "" means none.
	ContextBaggage string
	// Now returns the time signatures are made and checked at; nil means time.Now.
	Now func() time.Time
}

// Refusal says why context members of a request were removed (SPEC §4a); the proxy
// counts the members removed by reason.
type Refusal uint8

// The reasons, in the order of RefusalNames.
const (
	// Unsigned: from another pod, not from a trusted source, and without a ctx-sig
	// (or with one this sidecar cannot check: it has no key).
	Unsigned Refusal = iota
	// BadSignature: the ctx-sig is malformed or does not match the members and the
	// trace-id under any key of this sidecar.
	BadSignature
	// StaleSignature: the ctx-sig was made more than MaxSignatureSkew from now.
	StaleSignature
	// NotPinnable: a ctx.flag.* member of a flag not in flags.pinned.
	NotPinnable
	NumRefusals
)

// RefusalNames are the metric labels of the Refusal values.
var RefusalNames = [NumRefusals]string{"unsigned", "bad_signature", "stale_signature", "not_pinnable"}

// Refused counts, by Refusal, the ctx.* members removed from one request.
type Refused [NumRefusals]uint8

// Any reports whether a member was removed.
func (r *Refused) Any() bool { return *r != Refused{} }

func (r *Refused) add(why Refusal, n int) {
	r[why] = uint8(min(int(r[why])+n, 255))
}

// Flag is a flag value pinned for a request chain (SPEC §6), carried in baggage as
// "ctx.flag.<Name>=<Value>" and given to the app as "Ctx-Flag-<Name>: <Value>".
// Baggage keys are case-sensitive and header names are not: flags whose names differ
// only in case reach the app as one header, the value of the last in sorted order.
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
	// TraceState is the request's tracestate when Options.Tracing is set and Parent
	// is valid; empty otherwise (without tracing it is forwarded unread).
	TraceState TraceState
	// Name is the context name from baggage ctx.name; "" when absent or invalid.
	Name string
	// Flags are the pinned flags from baggage ctx.flag.*, in baggage order; nil
	// when none.
	Flags []Flag
	// Ops are the request's ctx-ops when Options.TrustInboundOps is set; nil
	// otherwise.
	Ops []ops.Op
	// Refused counts the ctx.* members removed because they were not trusted or
	// not pinnable, and Untrusted says why in words (nil when none was removed for
	// trust): for the proxy's metrics and log.
	Refused   Refused
	Untrusted error

	opt     Options
	baggage string // the baggage line to send when rewrite is set
	rewrite bool
}

// Source is what the proxy knows of where an inbound request came from.
type Source struct {
	// Trusted says the request came from a source the operator declared trusted
	// (inbound.trusted_sources): its context members are kept as sent.
	Trusted bool
}

// ReadInbound reads the headers of a request received from another pod, from.
// It does not modify in. The errors are the problems found, each an *Error; nil when
// none.
//
// The context members (ctx.name, ctx.flag.*) are kept only when the sidecar can trust
// them (SPEC §4a): the request came from a trusted source, or its ctx-sig verifies
// under Options.Signer for exactly these members and the traceparent's trace-id.
// Otherwise they are removed before the app sees them and counted in Refused; a
// context named by Options.ContextHeader or ContextBaggage is then taken instead.
// Flags that are not Pinnable are removed in any case.
func ReadInbound(in http.Header, opt Options, from Source) (Inbound, []error) {
	var errs []error
	r := Inbound{opt: opt}
	r.Parent, r.TraceState = readTrace(in, opt, &errs)
	b := readBaggage(in[Baggage], &errs)
	if (b.name != "" || len(b.flags) > 0) && !from.Trusted {
		if why, err := verifyMembers(in[CtxSig], r.Parent.TraceID(), &b, opt); err != nil {
			// An edge told to take the context from the ctx.name of any caller keeps
			// that member where it is; never the flags.
			if n := b.distrust(opt.ContextBaggage == NameKey); n > 0 {
				r.Refused.add(why, n)
				r.Untrusted = err
			}
		}
	}
	b.keepPinnable(opt.Pinnable, &r.Refused)
	r.Name, r.Flags = b.name, b.flags
	var add []addition
	if r.Name == "" {
		// The edge of the fleet: the context the operator said to take from outside,
		// given to the app as ctx.name like any other (an invalid or distrusted
		// ctx.name member is already in b.drop).
		if name := edgeName(in, opt, &errs); name != "" {
			r.Name = name
			add = append(add, addition{key: NameKey, value: name})
		}
	}
	if len(b.drop) > 0 || len(add) > 0 {
		r.baggage, r.rewrite = rewriteBaggage(in[Baggage], b.drop, add, &errs), true
	}
	if v := in[CtxOps]; len(v) > 0 {
		if opt.TrustInboundOps {
			r.Ops = readOps(v, &errs)
		} else {
			errs = append(errs, &Error{Header: "ctx-ops", Err: fmt.Errorf("%w: set trust_inbound_ops = true to accept ops from outside the pod", ErrUntrustedOps)})
		}
	}
	return r, errs
}

// verifyMembers checks the ctx-sig of an inbound request from an untrusted source
// against its members b; on failure it says why, for the metric and the log.
// The refusals of unsigned members, made once: every request from outside the fleet that
// carries ctx members gets one, and formatting it anew cost 1.5 % of the fast path's CPU
// (issue 14).
var (
	errNoFleetKey = fmt.Errorf("%w: this sidecar has no fleet key to check a ctx-sig with; set sync.key_file (the same on every sidecar), or list the caller in inbound.trusted_sources", ErrUntrusted)
	errNoSig      = fmt.Errorf("%w: no ctx-sig, so not from a sidecar of this fleet; a caller outside the fleet is trusted only when listed in inbound.trusted_sources, and an edge sidecar names the context with inbound.context_header or context_baggage", ErrUntrusted)
)

func verifyMembers(sig []string, traceID trace.TraceID, b *bag, opt Options) (Refusal, error) {
	switch {
	case opt.Signer == nil:
		return Unsigned, errNoFleetKey
	case len(sig) == 0:
		return Unsigned, errNoSig
	}
	err := opt.Signer.Verify(sig, traceID, b.name, b.flags, now(opt))
	switch {
	case err == nil:
		return 0, nil
	case errors.Is(err, ErrSigStale):
		return StaleSignature, fmt.Errorf("%w: %w", ErrUntrusted, err)
	default:
		return BadSignature, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
}

// edgeName returns the context named by the edge's configured baggage member or,
// without one, header; "" when there is none or it is not a valid context name. (A
// ctx.name member that context_baggage names was kept by ReadInbound already.)
func edgeName(in http.Header, opt Options, errs *[]error) string {
	var name, source string
	if key := opt.ContextBaggage; key != "" && key != NameKey {
		name, source = baggageMember(in[Baggage], key), "baggage member "+key
	}
	if h := opt.ContextHeader; name == "" && h != "" && len(in[h]) > 0 {
		name, source = in[h][0], h+" header"
	}
	if name == "" {
		return ""
	}
	if err := checkName(name); err != nil {
		*errs = append(*errs, &Error{Header: "baggage", Err: fmt.Errorf("%w (from the %s)", err, source)})
		return ""
	}
	return name
}

func now(opt Options) time.Time {
	if opt.Now != nil {
		return opt.Now()
	}
	return time.Now()
}

// Apply rewrites out, the headers of the request sent to the local app (a copy of
// the received ones). It removes ctx-ops (trusted ops are applied by the sidecar
// and must not reach the app, which could forward them and have them applied
// twice) and any Ctx-Flag-* header from the network, adds a Ctx-Flag-<name> header
// per pinned flag, drops invalid ctx.* baggage members, and writes the trace
// headers: child's traceparent and the tracestate read when the sidecar takes part
// and child is valid; otherwise the received ones when valid, none when not.
//
// child is the SpanContext of the span the proxy started for this request. The app
// sees child's trace-id (or, tracing off, the received one): that is the key to
// give Correlator.Begin.
func (in *Inbound) Apply(out http.Header, child trace.SpanContext) {
	stripLocal(out)
	for _, f := range in.Flags {
		out[http.CanonicalHeaderKey(FlagPrefix+f.Name)] = []string{f.Value}
	}
	if in.rewrite {
		setBaggage(out, in.baggage)
	}
	applyTrace(out, in.Parent, child, in.TraceState, in.opt)
}

// Entry is what the Correlator remembers of an inbound request.
func (in *Inbound) Entry() Entry { return Entry{Name: in.Name, Flags: in.Flags} }

// Outbound is what a request from the local app to another pod says, as read by
// ReadOutbound.
type Outbound struct {
	// Parent is the app's traceparent, the parent of the proxy's span; the zero
	// SpanContext when the app sent none or an invalid one.
	Parent trace.SpanContext
	// TraceState is the app's tracestate, as Inbound.TraceState.
	TraceState TraceState
	// Name is the context name of the request: the app's baggage ctx.name, or the
	// correlated inbound request's when the app's baggage has none; "" when neither.
	Name string
	// Flags are the pinned flags, the app's own and the correlated ones it lacks.
	Flags []Flag
	// Ops are the app's ctx-ops, to apply to the context Name.
	Ops []ops.Op
	// Correlated says ctx.* members from the Correlator are added to the baggage.
	Correlated bool
	// Refused counts the app's ctx.flag.* members removed because their flag is not
	// pinnable.
	Refused Refused

	opt     Options
	baggage string // the baggage line to send when rewrite is set
	rewrite bool
}

// ReadOutbound reads the headers of a request from the local app. When c is not nil
// and the app's traceparent has a trace-id of an in-flight inbound request, the
// ctx.* members the app's baggage lacks are taken from it (an app that forwards
// only traceparent keeps its context; SPEC §4). Members that would push baggage past
// MaxBaggageMembers or MaxBaggageBytes are not added and are reported with
// ErrBaggageFull. It does not modify in.
func ReadOutbound(in http.Header, opt Options, c *Correlator) (Outbound, []error) {
	var errs []error
	o := Outbound{opt: opt}
	o.Parent, o.TraceState = readTrace(in, opt, &errs)
	b := readBaggage(in[Baggage], &errs)
	// The app is trusted (it is the pod's own), but only pinnable flags are pinned.
	b.keepPinnable(opt.Pinnable, &o.Refused)
	o.Name, o.Flags = b.name, b.flags
	var add []addition
	if c != nil && o.Parent.IsValid() {
		if e, ok := c.Lookup(o.Parent.TraceID()); ok {
			// The app's own members win: it is local and may mean to switch context.
			// Entries normally come from ReadInbound, valid; checked again because
			// Begin takes any Entry and garbage must not leave the pod.
			if o.Name == "" && e.Name != "" {
				if err := checkName(e.Name); err != nil {
					errs = append(errs, &Error{Header: "baggage", Err: err})
				} else {
					add = append(add, addition{key: NameKey, value: e.Name})
				}
			}
			for _, f := range e.Flags {
				if slices.ContainsFunc(o.Flags, func(g Flag) bool { return g.Name == f.Name }) {
					continue
				}
				if opt.Pinnable == nil || !opt.Pinnable(f.Name) {
					continue // the entry was pinnable when it was read; config may differ
				}
				if err := checkFlag(f.Name, f.Value); err != nil {
					errs = append(errs, &Error{Header: "baggage", Err: err})
					continue
				}
				add = append(add, addition{key: FlagKeyPrefix + f.Name, value: f.Value})
			}
		}
	}
	if len(b.drop) > 0 || len(add) > 0 {
		o.baggage, o.rewrite = rewriteBaggage(in[Baggage], b.drop, add, &errs), true
		for _, a := range add {
			if !a.added {
				continue
			}
			o.Correlated = true
			if a.key == NameKey {
				o.Name = a.value
			} else {
				o.Flags = append(o.Flags, Flag{Name: strings.TrimPrefix(a.key, FlagKeyPrefix), Value: a.value})
			}
		}
		slices.SortFunc(o.Flags, func(x, y Flag) int { return strings.Compare(x.Name, y.Name) })
	}
	if v := in[CtxOps]; len(v) > 0 {
		o.Ops = readOps(v, &errs)
	}
	return o, errs
}

// Apply rewrites out, the headers of the request sent to the other pod (a copy of
// the app's). It removes ctx-ops, Ctx-Flag-* and ctx-sig (all local to the pod),
// drops invalid and unpinnable ctx.* baggage members, adds the correlated ones, writes
// the trace headers as Inbound.Apply does, and, with a Signer, signs the ctx.*
// members it forwards with the trace-id it forwards (ctx-sig).
func (o *Outbound) Apply(out http.Header, child trace.SpanContext) {
	stripLocal(out)
	if o.rewrite {
		setBaggage(out, o.baggage)
	}
	traceID := applyTrace(out, o.Parent, child, o.TraceState, o.opt)
	if o.opt.Signer != nil && (o.Name != "" || len(o.Flags) > 0) {
		out[CtxSig] = []string{o.opt.Signer.Sign(traceID, o.Name, o.Flags, now(o.opt))}
	}
}

// ResponseOps removes ctx-ops from h, the headers of a response from the local app,
// and returns the ops parsed (all ctx-ops lines form one list). A malformed list is
// dropped whole, so the ops of one response apply all or none, and reported as an
// *Error wrapping ErrOps.
func ResponseOps(h http.Header) ([]ops.Op, error) {
	v := h[CtxOps]
	if len(v) == 0 {
		return nil, nil
	}
	delete(h, CtxOps)
	got, err := ops.ParseHeaderValues(v)
	if err != nil {
		return nil, &Error{Header: "ctx-ops", Err: fmt.Errorf("%w: %w; the response's ops were dropped", ErrOps, err)}
	}
	return got, nil
}

// readTrace returns the parent to start a span from, the request's valid traceparent
// (the zero SpanContext otherwise), and, when tracing, its tracestate. Without
// tracing the tracestate is not read: it goes through byte for byte or not at all.
func readTrace(in http.Header, opt Options, errs *[]error) (trace.SpanContext, TraceState) {
	scc, err := parseTraceparent(in[Traceparent])
	if err != nil {
		*errs = append(*errs, &Error{Header: "traceparent", Err: fmt.Errorf("%w; the trace restarts and tracestate is dropped", err)})
		return trace.SpanContext{}, TraceState{}
	}
	if !scc.TraceID.IsValid() {
		return trace.SpanContext{}, TraceState{} // absent
	}
	var ts TraceState
	if opt.Tracing {
		if ts, err = ParseTracestate(in[Tracestate]); err != nil {
			*errs = append(*errs, &Error{Header: "tracestate", Err: err})
		}
	}
	return trace.NewSpanContext(scc), ts
}

// applyTrace writes the trace headers of a forwarded request and returns the trace-id
// of the traceparent forwarded (invalid when none). W3C Trace Context §3.5: a
// tracestate goes with its traceparent, so when the traceparent is left untouched so is
// the tracestate, and when the trace restarts the old tracestate goes.
func applyTrace(out http.Header, parent, child trace.SpanContext, ts TraceState, opt Options) trace.TraceID {
	switch {
	case opt.Tracing && child.IsValid() && !sameSpan(parent, child):
		if child.TraceID() != parent.TraceID() {
			ts = TraceState{} // a new trace: the old list described another one
		}
		if opt.TracestateKey != "" {
			// Checked by config; a bad key leaves the list as it is.
			ts, _ = ts.With(opt.TracestateKey, child.SpanID().String())
		}
		WriteTraceparent(out, child, ts)
		return child.TraceID()
	case parent.IsValid():
		// Byte for byte: tracing off, no span to continue from, or a "child" that
		// is the parent itself (a no-op tracer returns it), so the traceparent
		// is unchanged and the tracestate must be too.
		return parent.TraceID()
	default:
		// Invalid (never forwarded) or absent: an orphan tracestate belongs to no trace.
		delete(out, Traceparent)
		delete(out, Tracestate)
		return trace.TraceID{}
	}
}

func sameSpan(a, b trace.SpanContext) bool {
	return a.TraceID() == b.TraceID() && a.SpanID() == b.SpanID()
}

// readOps parses ctx-ops lines; a malformed list is dropped whole.
func readOps(v []string, errs *[]error) []ops.Op {
	got, err := ops.ParseHeaderValues(v)
	if err != nil {
		*errs = append(*errs, &Error{Header: "ctx-ops", Err: fmt.Errorf("%w: %w; the request's ops were dropped", ErrOps, err)})
		return nil
	}
	return got
}

// stripLocal removes the headers that live only between the sidecar and its app, or
// between two sidecars: ctx-ops (consumed by the sidecar), Ctx-Flag-* (set by the
// sidecar from baggage, so one from the network or the app is never trusted or
// forwarded) and ctx-sig (checked by the receiving sidecar, made anew by the sending
// one).
func stripLocal(h http.Header) {
	delete(h, CtxOps)
	delete(h, CtxSig)
	for k := range h {
		if len(k) >= len(FlagPrefix) && strings.EqualFold(k[:len(FlagPrefix)], FlagPrefix) {
			delete(h, k)
		}
	}
}

// setBaggage replaces the baggage lines of h by line, or removes them when it is empty.
func setBaggage(h http.Header, line string) {
	if line == "" {
		delete(h, Baggage)
		return
	}
	h[Baggage] = []string{line}
}
