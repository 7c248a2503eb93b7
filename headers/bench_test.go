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

// BenchmarkSigner measures one signature and one check of a typical context: a name
// and a pinned flag.
func BenchmarkSigner(b *testing.B) {
	tid := benchChild().TraceID()
	flags := []Flag{{"new-ui", "on"}}
	now := time.Now()
	b.Run("Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			benchSigner.Sign(tid, "checkout-7", flags, now)
		}
	})
	sig := []string{benchSigner.Sign(tid, "checkout-7", flags, now)}
	b.Run("Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := benchSigner.Verify(sig, tid, "checkout-7", flags, now); err != nil {
				b.Fatal(err)
			}
		}
	})
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

// benchSigner is a fleet key for the benchmarks of the trust check (SPEC §4a).
var benchSigner = mustSigner([]byte("fleet-secret-of-32-bytes-exactly"))

func pinNewUI(name string) bool { return name == "new-ui" }

// BenchmarkInbound measures the inbound header work. The "trusted source" cases read
// the members without any check, as every request was read before the trust boundary;
// the "signed" ones are a request from another sidecar of the fleet, whose ctx-sig is
// verified: their difference is the cost of the trust check.
func BenchmarkInbound(b *testing.B) {
	child := benchChild()
	ctxFlags := "userId=alice,ctx.name=checkout-7,ctx.flag.new-ui=on"
	sig := benchSigner.Sign(child.TraceID(), "checkout-7", []Flag{{"new-ui", "on"}}, time.Now())
	signed := Options{Tracing: true, Signer: benchSigner, Pinnable: pinNewUI}
	cases := []struct {
		name string
		in   http.Header
		opt  Options
		from Source
	}{
		{"traceparent only", hdr("traceparent", specTP, "accept", "*/*"), Options{Tracing: true}, trusted},
		{"context and flags, trusted source", hdr("traceparent", specTP, "tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
			"baggage", ctxFlags, "accept", "*/*"), Options{Tracing: true, Pinnable: pinNewUI}, trusted},
		{"context and flags, signed", hdr("traceparent", specTP, "tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
			"baggage", ctxFlags, "ctx-sig", sig, "accept", "*/*"), signed, Source{}},
		{"context and flags, tracing off, trusted source", hdr("traceparent", specTP, "tracestate", "rojo=00f067aa0ba902b7",
			"baggage", ctxFlags, "accept", "*/*"), Options{Pinnable: pinNewUI}, trusted},
		{"context and flags, tracing off, signed", hdr("traceparent", specTP, "tracestate", "rojo=00f067aa0ba902b7",
			"baggage", ctxFlags, "ctx-sig", sig, "accept", "*/*"), Options{Signer: benchSigner, Pinnable: pinNewUI}, Source{}},
		{"context and flags, unsigned, removed", hdr("traceparent", specTP, "baggage", ctxFlags, "accept", "*/*"), signed, Source{}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			benchApply(b, c.in, func(out http.Header) {
				in, _ := ReadInbound(c.in, c.opt, c.from)
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
		for _, v := range []struct {
			name string
			opt  Options
		}{
			{"unsigned", Options{Tracing: true, Pinnable: pinNewUI}},
			{"signed", Options{Tracing: true, Pinnable: pinNewUI, Signer: benchSigner}},
		} {
			b.Run(c.name+", "+v.name, func(b *testing.B) {
				benchApply(b, c.in, func(out http.Header) {
					o, _ := ReadOutbound(c.in, v.opt, corr)
					o.Apply(out, child)
				})
			})
		}
	}
}

// BenchmarkNewChild measures the participate mode's own work per hop: a new
// parent-id, or a new trace.
func BenchmarkNewChild(b *testing.B) {
	parent := benchChild()
	b.Run("continue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			NewChild(parent, 1)
		}
	})
	b.Run("new trace", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			NewChild(trace.SpanContext{}, 0.5)
		}
	})
}
