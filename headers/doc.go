// Package headers holds the header semantics of the ctxprop proxy (SPEC §4): what the
// sidecar reads from and writes to traceparent, tracestate, baggage, ctx-ops and
// ctx-flag-* on the three paths it sees.
//
//   - Inbound: another pod → this sidecar → the local app. ReadInbound parses the
//     request as received; Inbound.Apply rewrites the copy sent to the app.
//   - Outbound: the local app → this sidecar → another pod. ReadOutbound parses the
//     app's request (taking its ctx-ops and, through a Correlator, the context of the
//     inbound request it serves); Outbound.Apply rewrites the copy sent on.
//   - Responses from the local app: ResponseOps takes the app's ctx-ops out.
//
// Everything here is a pure function of headers (plus the Correlator's table): no
// network, no logging, no spans. The proxy owns the spans: it starts the span for a
// request from Inbound.Parent or Outbound.Parent and hands the span's SpanContext to
// Apply, which writes the child's traceparent (WriteTraceparent).
//
// Header keys are read in canonical form (http.CanonicalHeaderKey), as net/http's
// servers and clients make them for HTTP/1.1 and HTTP/2 alike.
//
// Trust (SPEC §4a): the context members of an inbound request (ctx.name, ctx.flag.*) are
// believed only when the request comes from a source the operator trusts or carries a
// ctx-sig that a Signer of the same fleet made for exactly those members and that
// trace-id; otherwise ReadInbound removes them and says so in Inbound.Refused. The
// outbound side signs what it forwards. Only flags Options.Pinnable allows are pinned,
// on either side.
//
// Problems with headers never fail a request. They come back as *Error values, one
// per problem, which the proxy logs and counts by Error.Header; the offending part is
// dropped (an invalid traceparent restarts the trace, as W3C Trace Context requires)
// and the rest goes through.
//
// Trace Context follows W3C Trace Context Level 2 strictly, beyond what the otel
// propagator checks: duplicated traceparent lines are invalid, tracestate lines are
// combined, and tracestate has a parser of its own (ParseTracestate, TraceState)
// because otel's still enforces Level 1's key grammar: Level 2's keys (any '@' after
// the first character, 256 characters in all), its value grammar and 32-member limit,
// and what to drop for each fault. A sidecar that takes part without exporting makes
// its hop with NewChild. Baggage follows W3C Baggage through
// go.opentelemetry.io/otel/baggage with its limits (64 members, 8192 bytes); the
// members this package adds are checked against those limits before they are added.
package headers
