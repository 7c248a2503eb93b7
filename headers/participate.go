package headers

import (
	"encoding/binary"
	"math/rand/v2"

	"go.opentelemetry.io/otel/trace"
)

// NewChild returns the SpanContext of a hop that takes part in W3C Trace Context
// without recording anything (tracing.mode "participate"): the parent's trace-id and
// flags with a new parent-id when parent is valid, and otherwise a new trace.
//
// A new trace gets a random trace-id with the random flag set (Level 2 §3.2.2.5.2:
// its right-most 7 bytes are random) and the sampled flag for the fraction
// sampleRatio of traces, decided from those random bytes as OpenTelemetry's
// consistent probability sampling decides (its threshold on 56 bits of randomness), so
// that a downstream sampler of the same kind and a lower ratio keeps a subset.
// Marking new traces sampled is the spec's "fall back to probability sampling"
// option (§3.2.2.5.1): instrumented apps behind the sidecar that follow their parent
// keep recording what they recorded before it started traces for them.
//
// The ids come from math/rand/v2's generator, which the runtime seeds from the
// operating system per thread (ChaCha8): unpredictable and cheap enough to call per
// request.
func NewChild(parent trace.SpanContext, sampleRatio float64) trace.SpanContext {
	scc := trace.SpanContextConfig{SpanID: newSpanID()}
	if parent.IsValid() {
		scc.TraceID = parent.TraceID()
		scc.TraceFlags = parent.TraceFlags() & knownFlags
		return trace.NewSpanContext(scc)
	}
	for !scc.TraceID.IsValid() {
		binary.BigEndian.PutUint64(scc.TraceID[:8], rand.Uint64())
		binary.BigEndian.PutUint64(scc.TraceID[8:], rand.Uint64())
	}
	scc.TraceFlags = trace.FlagsRandom
	if sampled(scc.TraceID, sampleRatio) {
		scc.TraceFlags |= trace.FlagsSampled
	}
	return trace.NewSpanContext(scc)
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		binary.BigEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

// sampled reports whether a new trace of this id is in the fraction ratio. The
// right-most 7 bytes are the randomness Level 2 guarantees when the random flag is
// set; the trace is sampled when they reach the threshold (1-ratio) of their range.
func sampled(id trace.TraceID, ratio float64) bool {
	switch {
	case ratio >= 1:
		return true
	case ratio <= 0:
		return false
	}
	const span = 1 << 56
	r := binary.BigEndian.Uint64(id[8:]) & (span - 1)
	return r >= uint64((1-ratio)*span)
}
