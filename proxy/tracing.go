package proxy

import (
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
)

// withOtelState gives parent the request's tracestate in otel's form, so that the
// exported span carries it. otel's parser still has Level 1's key grammar: a list it
// refuses (a Level 2 key) leaves the span without one; the wire keeps it whole, as
// headers writes the list it read.
func withOtelState(parent trace.SpanContext, ts headers.TraceState) trace.SpanContext {
	if ts.Len() == 0 {
		return parent
	}
	ots, err := trace.ParseTraceState(ts.String())
	if err != nil {
		return parent
	}
	return parent.WithTraceState(ots)
}
