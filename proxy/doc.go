// Package proxy is the data path of the ctxprop sidecar (SPEC §5): an inbound reverse
// proxy from other pods to the local app, and an outbound forward proxy (the app's
// HTTP_PROXY) from the app to other pods.
//
// With redirection rules in the pod (sidecar intercept), the app's outbound TCP arrives
// at a transparent listener (Options.TransparentAddress) and inbound TCP for the app's
// ports at the inbound listener, each connection with the destination its client meant
// (SO_ORIGINAL_DST). HTTP/1.x and h2c get the same header work as through the explicit
// proxy and go to that destination; anything else is spliced there untouched
// (transparent.go).
//
// Both directions carry HTTP/1.1 and h2c (prior-knowledge HTTP/2 without TLS, as gRPC
// uses it), trailers, WebSocket and other Upgrade exchanges, and streaming bodies
// without buffering them. The upstream protocol mirrors the downstream one: an h2c
// request goes on as h2c, an HTTP/1.1 request as HTTP/1.1. The outbound listener
// takes absolute-form requests ("GET http://svc:8080/x HTTP/1.1", what clients send
// to an HTTP_PROXY), passes CONNECT tunnels through without looking inside, and takes
// h2c requests to the host named by their :authority.
//
// On each request the proxy reads and rewrites the context headers through package
// headers (traceparent, tracestate, baggage, ctx-ops, ctx-flag-*), makes the request a
// hop of its trace (Options.Trace: a new parent-id, or an exported span), and hands two
// kinds of writes to a Store:
//
//   - the ctx-ops of the local app (on its outbound requests and on its responses to
//     inbound requests), and of inbound requests when Options.TrustInboundOps is set;
//     ctx-ops never leave the pod;
//   - telemetry, once per inbound request whose context is known, as counters of
//     that context (see TelemetryKeys): requests, errors, a latency sum and
//     cumulative latency buckets.
//
// An inbound request with ops makes one Store.Apply call after its response is done;
// its telemetry is summed in memory with that of the other requests of its context and
// written once per Options.TelemetryWindow, one Apply per context, followed by a
// Committer's Commit (issue 14: a store write per request was most of the proxy's own
// CPU). Close writes the last window after the drain. Each outbound request with ops
// makes one Apply before it is sent. Apply must not wait for fsync (SPEC §3: proxy
// writes are committed within a bounded window).
//
// Lifecycle: New checks the options and builds everything without starting a
// goroutine; Open binds the listeners and serves; Close drains in-flight requests,
// WebSockets and tunnels until its context ends, then cuts what is left. The sidecar
// calls Close on SIGTERM.
//
// When the app cannot be reached the inbound side answers 502 (refused, reset) or
// 504 (timeout) with a plain-text body naming the app's address and what to check.
//
// Both listeners defend against request smuggling (SPEC §4a): a connection ends after
// the answer to a request whose framing a front end could read another way (Content-
// Length with Transfer-Encoding, Transfer-Encoding on HTTP/1.0, bare LF, obs-fold) or
// whose body did not end cleanly; framing.go and guard.go say how. The inbound side
// bounds the wait for request body data (Options.BodyTimeout). The outbound side binds a
// non-loopback address only with Options.OutboundNonLoopback, and never lets a client
// from outside the pod reach a loopback address through it.
package proxy
