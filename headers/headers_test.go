package headers

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ctxprop/ctxprop/ops"
)

// startSpan starts the proxy's span the way the proxy does: from the parent read
// from the headers, through the real otel SDK.
func startSpan(t testing.TB, parent trace.SpanContext) trace.SpanContext {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	t.Cleanup(func() {
		if err := tp.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	_, span := tp.Tracer("test").Start(ctx, "proxy")
	defer span.End()
	return span.SpanContext()
}

// trusted is a request from a source the operator declared trusted, for tests of what
// the headers say rather than of whether they are believed.
var trusted = Source{Trusted: true}

// pinAll lets every flag be pinned.
func pinAll(string) bool { return true }

// hdr builds a header from name, value pairs, keeping repeated names as lines.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// errsWrap reports whether errs holds, in order, errors wrapping wants.
func checkErrs(t *testing.T, errs []error, wants ...error) {
	t.Helper()
	if got, want := len(errs), len(wants); got != want {
		t.Fatalf("got %d errors %v, want %d wrapping %v", got, errs, want, wants)
	}
	for i, err := range errs {
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("error %d (%v) is not a *Error", i, err)
		}
		if !errors.Is(err, wants[i]) {
			t.Errorf("error %d = %v, want it to wrap %v", i, err, wants[i])
		}
	}
}

func TestInbound_TracingOff(t *testing.T) {
	tests := []struct {
		name     string
		in       http.Header
		wantTP   []string
		wantTS   []string
		wantErrs []error
	}{
		{
			name:   "valid headers go through byte for byte, even an invalid tracestate",
			in:     hdr("traceparent", specTP, "tracestate", "rojo=1 ", "tracestate", "Bad=x,,"),
			wantTP: []string{specTP}, wantTS: []string{"rojo=1 ", "Bad=x,,"},
		},
		{
			name:   "future version goes through unchanged",
			in:     hdr("traceparent", "cc-"+specTraceID+"-"+specSpanID+"-01-future", "tracestate", "a=1"),
			wantTP: []string{"cc-" + specTraceID + "-" + specSpanID + "-01-future"}, wantTS: []string{"a=1"},
		},
		{
			name:     "invalid traceparent removed with its tracestate",
			in:       hdr("traceparent", strings.ToUpper(specTP), "tracestate", "a=1"),
			wantErrs: []error{ErrTraceparent},
		},
		{
			name:     "duplicated traceparent removed",
			in:       hdr("traceparent", specTP, "traceparent", specTP, "tracestate", "a=1"),
			wantErrs: []error{ErrTraceparent},
		},
		{
			name: "orphan tracestate removed",
			in:   hdr("tracestate", "a=1"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, errs := ReadInbound(tt.in, Options{}, trusted)
			checkErrs(t, errs, tt.wantErrs...)
			out := tt.in.Clone()
			in.Apply(out, trace.SpanContext{})
			if got, want := out[Traceparent], tt.wantTP; !reflect.DeepEqual(got, want) {
				t.Errorf("traceparent = %q, want %q", got, want)
			}
			if got, want := out[Tracestate], tt.wantTS; !reflect.DeepEqual(got, want) {
				t.Errorf("tracestate = %q, want %q", got, want)
			}
		})
	}
}

// TestInbound_TracingOn runs the proxy's span through the real SDK: the trace
// continues with the same trace-id, a new parent-id and the flags, random bit
// included; an invalid traceparent restarts the trace without tracestate.
func TestInbound_TracingOn(t *testing.T) {
	opt := Options{Tracing: true}
	tests := []struct {
		name      string
		in        http.Header
		continues bool
		flags     string
		wantTS    []string
		wantErrs  []error
	}{
		{
			name:      "continues, sampled and random, tracestate lines combined",
			in:        hdr("traceparent", "00-"+specTraceID+"-"+specSpanID+"-03", "tracestate", "rojo=00f067aa0ba902b7", "tracestate", "congo=t61rcWkgMzE"),
			continues: true, flags: "03", wantTS: []string{"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
		},
		{
			name:      "continues, not sampled",
			in:        hdr("traceparent", "00-"+specTraceID+"-"+specSpanID+"-00"),
			continues: true, flags: "00",
		},
		{
			name:      "future version continues as version 00",
			in:        hdr("traceparent", "01-"+specTraceID+"-"+specSpanID+"-01-later", "tracestate", "a=1"),
			continues: true, flags: "01", wantTS: []string{"a=1"},
		},
		{
			name:      "invalid tracestate dropped, trace continues",
			in:        hdr("traceparent", specTP, "tracestate", "a=1,a=2"),
			continues: true, flags: "01",
			wantErrs: []error{ErrTracestate},
		},
		{
			name:     "all-zero trace-id restarts without tracestate",
			in:       hdr("traceparent", "00-"+strings.Repeat("0", 32)+"-"+specSpanID+"-01", "tracestate", "a=1"),
			wantErrs: []error{ErrTraceparent},
		},
		{
			name:     "version 00 with extra field restarts",
			in:       hdr("traceparent", specTP+"-x", "tracestate", "a=1"),
			wantErrs: []error{ErrTraceparent},
		},
		{
			name: "absent starts a trace",
			in:   hdr(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, errs := ReadInbound(tt.in, opt, trusted)
			checkErrs(t, errs, tt.wantErrs...)
			child := startSpan(t, in.Parent)
			out := tt.in.Clone()
			in.Apply(out, child)

			if got, want := len(out[Traceparent]), 1; got != want {
				t.Fatalf("%d traceparent lines, want %d", got, want)
			}
			tp := out[Traceparent][0]
			scc, err := parseTraceparent(out[Traceparent])
			if err != nil {
				t.Fatalf("forwarded traceparent %q is invalid: %v", tp, err)
			}
			if got, want := scc.TraceID.String() == specTraceID, tt.continues; got != want {
				t.Errorf("traceparent %q: same trace-id = %v, want %v", tp, got, want)
			}
			if scc.SpanID.String() == specSpanID {
				t.Errorf("traceparent %q keeps the caller's parent-id", tp)
			}
			if got, want := scc.SpanID, child.SpanID(); got != want {
				t.Errorf("parent-id = %s, want the proxy span's %s", got, want)
			}
			if tt.continues {
				if got, want := tp[53:], tt.flags; got != want {
					t.Errorf("flags = %s, want %s", got, want)
				}
			}
			if got, want := out[Tracestate], tt.wantTS; !reflect.DeepEqual(got, want) {
				t.Errorf("tracestate = %q, want %q", got, want)
			}
		})
	}
}

func TestInbound_Baggage(t *testing.T) {
	tests := []struct {
		name        string
		in          http.Header
		wantName    string
		wantFlags   []Flag
		wantBaggage []string
		wantHeaders http.Header // Ctx-Flag-* headers to the app
		wantErrs    []error
	}{
		{
			name:        "name and flags read, baggage untouched",
			in:          hdr("baggage", "userId=alice, ctx.name=orders-42;p=1", "baggage", "ctx.flag.color=dark%20red,ctx.flag.beta=true"),
			wantName:    "orders-42",
			wantFlags:   []Flag{{"beta", "true"}, {"color", "dark red"}},
			wantBaggage: []string{"userId=alice, ctx.name=orders-42;p=1", "ctx.flag.color=dark%20red,ctx.flag.beta=true"},
			wantHeaders: http.Header{"Ctx-Flag-Beta": {"true"}, "Ctx-Flag-Color": {"dark red"}},
		},
		{
			name:        "no ctx members: nothing parsed, nothing changed",
			in:          hdr("baggage", "a=1,%%%bad"),
			wantBaggage: []string{"a=1,%%%bad"},
		},
		{
			name:        "invalid name dropped, other members kept as they were",
			in:          hdr("baggage", "a=%C3%A9 ,ctx.name=has%2Fslash", "baggage", "b=2;prop"),
			wantBaggage: []string{"a=%C3%A9,b=2;prop"},
			wantErrs:    []error{ErrName},
		},
		{
			name:        "name too long dropped",
			in:          hdr("baggage", "ctx.name="+strings.Repeat("n", MaxNameLen+1)),
			wantErrs:    []error{ErrName},
			wantBaggage: nil,
		},
		{
			name:        "name of 200 bytes kept",
			in:          hdr("baggage", "ctx.name="+strings.Repeat("n", MaxNameLen)),
			wantName:    strings.Repeat("n", MaxNameLen),
			wantBaggage: []string{"ctx.name=" + strings.Repeat("n", MaxNameLen)},
		},
		{
			name:        "flag value with CRLF dropped",
			in:          hdr("baggage", "ctx.flag.evil=x%0D%0AX-Injected:%201,ctx.flag.ok=1"),
			wantFlags:   []Flag{{"ok", "1"}},
			wantBaggage: []string{"ctx.flag.ok=1"},
			wantHeaders: http.Header{"Ctx-Flag-Ok": {"1"}},
			wantErrs:    []error{ErrFlag},
		},
		{
			name:        "flag without a name dropped",
			in:          hdr("baggage", "ctx.flag.=1,z=2"),
			wantBaggage: []string{"z=2"},
			wantErrs:    []error{ErrFlag},
		},
		{
			name:        "invalid member reported when ours are present",
			in:          hdr("baggage", "ctx.name=ok,bad key=1"),
			wantName:    "ok",
			wantBaggage: []string{"ctx.name=ok,bad key=1"},
			wantErrs:    []error{ErrBaggage},
		},
		{
			name:        "flag headers from the network replaced",
			in:          hdr("baggage", "ctx.flag.color=blue", "Ctx-Flag-Color", "forged", "Ctx-Flag-Admin", "true"),
			wantFlags:   []Flag{{"color", "blue"}},
			wantBaggage: []string{"ctx.flag.color=blue"},
			wantHeaders: http.Header{"Ctx-Flag-Color": {"blue"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, errs := ReadInbound(tt.in, Options{Pinnable: pinAll}, trusted)
			checkErrs(t, errs, tt.wantErrs...)
			if got, want := in.Name, tt.wantName; got != want {
				t.Errorf("Name = %q, want %q", got, want)
			}
			if got, want := in.Flags, tt.wantFlags; !reflect.DeepEqual(got, want) {
				t.Errorf("Flags = %q, want %q", got, want)
			}
			out := tt.in.Clone()
			in.Apply(out, trace.SpanContext{})
			if got, want := out[Baggage], tt.wantBaggage; !reflect.DeepEqual(got, want) {
				t.Errorf("baggage = %q, want %q", got, want)
			}
			flagHeaders := http.Header{}
			for k, v := range out {
				if strings.HasPrefix(k, FlagPrefix) {
					flagHeaders[k] = v
				}
			}
			if want := tt.wantHeaders; !reflect.DeepEqual(flagHeaders, want) && (len(flagHeaders) > 0 || len(want) > 0) {
				t.Errorf("flag headers = %v, want %v", flagHeaders, want)
			}
			if got, want := in.Entry(), (Entry{Name: tt.wantName, Flags: tt.wantFlags}); !reflect.DeepEqual(got, want) {
				t.Errorf("Entry() = %+v, want %+v", got, want)
			}
		})
	}
}

func TestInbound_Ops(t *testing.T) {
	tests := []struct {
		name     string
		in       http.Header
		trust    bool
		wantOps  []ops.Op
		wantErrs []error
	}{
		{name: "untrusted dropped", in: hdr("ctx-ops", `incr;key="orders"`), wantErrs: []error{ErrUntrustedOps}},
		{
			name: "trusted kept, lines form one list", trust: true,
			in:      hdr("ctx-ops", `incr;key="orders";by=2`, "ctx-ops", `add;set="regions";member="eu"`),
			wantOps: []ops.Op{{Kind: ops.Incr, Key: "orders", By: 2}, {Kind: ops.Add, Set: "regions", Member: "eu"}},
		},
		{name: "trusted but malformed dropped whole", trust: true, in: hdr("ctx-ops", `incr;key="a", bogus`), wantErrs: []error{ErrOps}},
		{name: "none", trust: true, in: hdr()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, errs := ReadInbound(tt.in, Options{TrustInboundOps: tt.trust}, trusted)
			checkErrs(t, errs, tt.wantErrs...)
			if got, want := in.Ops, tt.wantOps; !reflect.DeepEqual(got, want) {
				t.Errorf("Ops = %+v, want %+v", got, want)
			}
			out := tt.in.Clone()
			in.Apply(out, trace.SpanContext{})
			if v, ok := out[CtxOps]; ok {
				t.Errorf("ctx-ops %q reached the app; the sidecar applies them, the app must not see them", v)
			}
		})
	}
}

func TestOutbound(t *testing.T) {
	const otherTrace = "0af7651916cd43dd8448eb211c80319c"
	tid, _ := trace.TraceIDFromHex(specTraceID)
	corr := NewCorrelator(16, 0)
	release := corr.Begin(tid, Entry{Name: "orders-42", Flags: []Flag{{"beta", "on"}, {"color", "dark red"}}})
	defer release()

	many := make([]string, MaxBaggageMembers)
	for i := range many {
		many[i] = "k" + strings.Repeat("x", i) + "=1"
	}
	big := "big=" + strings.Repeat("v", MaxBaggageBytes-len("big=")-len(",ctx.name=orders-42")+1)

	tests := []struct {
		name           string
		in             http.Header
		wantName       string
		wantFlags      []Flag
		wantCorrelated bool
		wantBaggage    []string
		wantOps        []ops.Op
		wantErrs       []error
	}{
		{
			name:     "only traceparent: correlated baggage injected",
			in:       hdr("traceparent", specTP),
			wantName: "orders-42", wantFlags: []Flag{{"beta", "on"}, {"color", "dark red"}}, wantCorrelated: true,
			wantBaggage: []string{"ctx.name=orders-42,ctx.flag.beta=on,ctx.flag.color=dark%20red"},
		},
		{
			name:     "app's own members win, missing ones added after the app's",
			in:       hdr("traceparent", specTP, "baggage", "user=al%2Cice", "baggage", "ctx.name=other,ctx.flag.color=blue"),
			wantName: "other", wantFlags: []Flag{{"beta", "on"}, {"color", "blue"}}, wantCorrelated: true,
			wantBaggage: []string{"user=al%2Cice,ctx.name=other,ctx.flag.color=blue,ctx.flag.beta=on"},
		},
		{
			name:     "app's complete baggage left untouched",
			in:       hdr("traceparent", specTP, "baggage", "ctx.name=x , ctx.flag.beta=1", "baggage", "ctx.flag.color=2"),
			wantName: "x", wantFlags: []Flag{{"beta", "1"}, {"color", "2"}},
			wantBaggage: []string{"ctx.name=x , ctx.flag.beta=1", "ctx.flag.color=2"},
		},
		{
			name:        "other trace-id: nothing injected",
			in:          hdr("traceparent", "00-"+otherTrace+"-"+specSpanID+"-01", "baggage", "a=1"),
			wantBaggage: []string{"a=1"},
		},
		{
			name:     "invalid traceparent: no correlation, trace restarts",
			in:       hdr("traceparent", "00-"+strings.ToUpper(specTraceID)+"-"+specSpanID+"-01"),
			wantErrs: []error{ErrTraceparent},
		},
		{
			name:        "64 members: ours reported, not added",
			in:          hdr("traceparent", specTP, "baggage", strings.Join(many, ",")),
			wantBaggage: []string{strings.Join(many, ",")},
			wantErrs:    []error{ErrBaggageFull, ErrBaggageFull, ErrBaggageFull},
		},
		{
			name:      "8192 bytes: the name does not fit, a shorter flag does",
			in:        hdr("traceparent", specTP, "baggage", big),
			wantFlags: []Flag{{"beta", "on"}}, wantCorrelated: true,
			wantBaggage: []string{big + ",ctx.flag.beta=on"},
			wantErrs:    []error{ErrBaggageFull, ErrBaggageFull},
		},
		{
			name:    "app's ctx-ops taken, flag headers stripped",
			in:      hdr("ctx-ops", `put;map="steps";key="pay";value="done";ttl=60`, "Ctx-Flag-Beta", "on"),
			wantOps: []ops.Op{{Kind: ops.Put, Map: "steps", Key: "pay", Value: []byte(`"done"`), TTL: 60e9}},
		},
		{
			name:     "malformed ctx-ops dropped",
			in:       hdr("ctx-ops", `incr;key=`),
			wantErrs: []error{ErrOps},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, errs := ReadOutbound(tt.in, Options{Pinnable: pinAll}, corr)
			checkErrs(t, errs, tt.wantErrs...)
			if got, want := o.Name, tt.wantName; got != want {
				t.Errorf("Name = %q, want %q", got, want)
			}
			if got, want := o.Flags, tt.wantFlags; !reflect.DeepEqual(got, want) {
				t.Errorf("Flags = %q, want %q", got, want)
			}
			if got, want := o.Correlated, tt.wantCorrelated; got != want {
				t.Errorf("Correlated = %v, want %v", got, want)
			}
			if got, want := o.Ops, tt.wantOps; !reflect.DeepEqual(got, want) {
				t.Errorf("Ops = %+v, want %+v", got, want)
			}
			out := tt.in.Clone()
			o.Apply(out, trace.SpanContext{})
			if got, want := out[Baggage], tt.wantBaggage; !reflect.DeepEqual(got, want) {
				t.Errorf("baggage = %q, want %q", got, want)
			}
			checkLeavesPod(t, out)
		})
	}
}

// checkLeavesPod checks the invariants of headers that leave the pod.
func checkLeavesPod(t *testing.T, out http.Header) {
	t.Helper()
	for k := range out {
		if strings.EqualFold(k, CtxOps) || strings.HasPrefix(strings.ToLower(k), "ctx-flag-") {
			t.Errorf("%s leaves the pod", k)
		}
	}
	if v := out[Baggage]; len(v) > 0 {
		line := strings.Join(v, ",")
		b, err := baggage.Parse(line)
		if len(line) > MaxBaggageBytes || b.Len() > MaxBaggageMembers {
			t.Errorf("baggage over the limits: %d bytes, %d members", len(line), b.Len())
		}
		_ = err // the app's own invalid members pass through when we do not rewrite
	}
}

// TestInbound_NoopTracer: a proxy whose tracer is a no-op gets the parent back as its
// span; the traceparent is then unchanged, so the tracestate must be too.
func TestInbound_NoopTracer(t *testing.T) {
	in := hdr("traceparent", specTP, "tracestate", "rojo=1 , congo=2", "tracestate", "a=3")
	r, errs := ReadInbound(in, Options{Tracing: true}, trusted)
	checkErrs(t, errs)
	_, span := noop.NewTracerProvider().Tracer("t").Start(trace.ContextWithRemoteSpanContext(context.Background(), r.Parent), "proxy")
	out := in.Clone()
	r.Apply(out, span.SpanContext())
	if got, want := out[Traceparent], in[Traceparent]; !reflect.DeepEqual(got, want) {
		t.Errorf("traceparent = %q, want %q", got, want)
	}
	if got, want := out[Tracestate], in[Tracestate]; !reflect.DeepEqual(got, want) {
		t.Errorf("tracestate = %q, want %q byte for byte", got, want)
	}
}

func TestOutbound_TracingOn(t *testing.T) {
	in := hdr("traceparent", "00-"+specTraceID+"-"+specSpanID+"-02", "tracestate", "rojo=1")
	o, errs := ReadOutbound(in, Options{Tracing: true}, nil)
	checkErrs(t, errs)
	child := startSpan(t, o.Parent)
	out := in.Clone()
	o.Apply(out, child)
	if got, want := out.Get(Traceparent), "00-"+specTraceID+"-"+child.SpanID().String()+"-02"; got != want {
		t.Errorf("traceparent = %q, want %q", got, want)
	}
	if got, want := out.Get(Tracestate), "rojo=1"; got != want {
		t.Errorf("tracestate = %q, want %q", got, want)
	}
}

func TestResponseOps(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Header
		wantOps []ops.Op
		wantErr error
	}{
		{name: "none", h: hdr("Content-Type", "text/plain")},
		{name: "taken", h: hdr("ctx-ops", `rem;set="s";member="x"`), wantOps: []ops.Op{{Kind: ops.Rem, Set: "s", Member: "x"}}},
		{name: "malformed", h: hdr("ctx-ops", `rem;set=1`), wantErr: ErrOps},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResponseOps(tt.h)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("ResponseOps error = %v, want %v", err, tt.wantErr)
			}
			if want := tt.wantOps; !reflect.DeepEqual(got, want) {
				t.Errorf("ops = %+v, want %+v", got, want)
			}
			if v, ok := tt.h[CtxOps]; ok {
				t.Errorf("ctx-ops %q left in the response", v)
			}
		})
	}
}
