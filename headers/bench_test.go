package headers

import (
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

func benchChild() trace.SpanContext {
	tid, _ := trace.TraceIDFromHex(specTraceID)
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: 1})
}

// benchApply measures read + apply of one request. The copy of the header that
// httputil.ReverseProxy makes anyway is rebuilt in place each round, without
// allocating, so that the figures are the package's own.
func benchApply(b *testing.B, in http.Header, run func(out http.Header)) {
	out := make(http.Header, len(in)+4)
	backing := make(map[string][]string, len(in))
	for k, v := range in {
		backing[k] = make([]string, 0, len(v))
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(out)
		for k, v := range in {
			out[k] = append(backing[k][:0], v...)
		}
		run(out)
	}
}

func BenchmarkInbound(b *testing.B) {
	child := benchChild()
	cases := []struct {
		name string
		in   http.Header
		opt  Options
	}{
		{"traceparent only", hdr("traceparent", specTP, "accept", "*/*"), Options{Tracing: true}},
		{"context and flags", hdr("traceparent", specTP, "tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
			"baggage", "userId=alice,ctx.name=checkout-7,ctx.flag.new-ui=on", "accept", "*/*"), Options{Tracing: true}},
		{"context and flags, tracing off", hdr("traceparent", specTP, "tracestate", "rojo=00f067aa0ba902b7",
			"baggage", "userId=alice,ctx.name=checkout-7,ctx.flag.new-ui=on", "accept", "*/*"), Options{}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			benchApply(b, c.in, func(out http.Header) {
				in, _ := ReadInbound(c.in, c.opt)
				in.Apply(out, child)
			})
		})
	}
}

func BenchmarkOutbound(b *testing.B) {
	child := benchChild()
	corr := NewCorrelator(65536, time.Minute)
	defer corr.Begin(child.TraceID(), Entry{Name: "checkout-7", Flags: []Flag{{"new-ui", "on"}}})()
	cases := []struct {
		name string
		in   http.Header
	}{
		{"traceparent only, correlated", hdr("traceparent", specTP, "accept", "*/*")},
		{"baggage forwarded", hdr("traceparent", specTP, "baggage", "userId=alice,ctx.name=checkout-7,ctx.flag.new-ui=on", "accept", "*/*")},
		{"ctx-ops", hdr("traceparent", specTP, "baggage", "ctx.name=checkout-7", "ctx-ops", `incr;key="orders";by=2, add;set="regions";member="eu-west"`)},
		{"no trace", hdr("accept", "*/*")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			benchApply(b, c.in, func(out http.Header) {
				o, _ := ReadOutbound(c.in, Options{Tracing: true}, corr)
				o.Apply(out, child)
			})
		})
	}
}
