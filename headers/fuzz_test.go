package headers

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// FuzzTraceparent checks the parser against the W3C rule where otel's propagator departs
// from it, against otel everywhere else (we accept what it accepts, and it accepts what
// we accept except where we are deliberately different), and that what we write
// re-parses to the same trace.
func FuzzTraceparent(f *testing.F) {
	for _, s := range []string{
		specTP,
		"00-" + specTraceID + "-" + specSpanID + "-03",
		"cc-" + specTraceID + "-" + specSpanID + "-01-future",
		"ff-" + specTraceID + "-" + specSpanID + "-01",
		"00-" + strings.ToUpper(specTraceID) + "-" + specSpanID + "-01",
		"00-00000000000000000000000000000000-" + specSpanID + "-01",
		specTP + "-x",
		specTP + "-",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scc, err := parseTraceparent([]string{s})
		otelSC := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(
			context.Background(), propagation.HeaderCarrier{Traceparent: {s}}))

		// W3C Trace Context §3.2 and §4.3: version 00 is exactly four fields, 55
		// characters; anything after the trace-flags makes it invalid, even a '-'
		// (only a later version may add fields after one). otel accepts
		// "00-…-01-", as its split on '-' leaves nothing after the flags, so the
		// rule itself is the oracle here.
		if v := strings.Trim(s, " \t"); len(v) > traceparentLen && strings.HasPrefix(v, "00") {
			if err == nil {
				t.Fatalf("we accept %q, a version-00 traceparent with more than four fields", s)
			}
			return
		}
		if otelSC.IsValid() && err != nil {
			t.Fatalf("otel accepts %q, we reject it: %v", s, err)
		}
		if err != nil || s == "" {
			return
		}
		trimmed := s == strings.Trim(s, " \t")
		reserved := s[:2] == "00" && s[53:55] > "03"
		if trimmed && !reserved {
			if !otelSC.IsValid() {
				t.Fatalf("we accept %q, otel rejects it", s)
			}
			if otelSC.TraceID() != scc.TraceID || otelSC.SpanID() != scc.SpanID || otelSC.TraceFlags() != scc.TraceFlags {
				t.Fatalf("%q: we read %v, otel reads %v", s, scc, otelSC)
			}
		}
		h := http.Header{}
		WriteTraceparent(h, trace.NewSpanContext(scc), TraceState{})
		again, err := parseTraceparent(h[Traceparent])
		if err != nil {
			t.Fatalf("written %q from %q does not re-parse: %v", h[Traceparent], s, err)
		}
		if again.TraceID != scc.TraceID || again.SpanID != scc.SpanID || again.TraceFlags != scc.TraceFlags {
			t.Fatalf("round trip of %q: %v, want %v", s, again, scc)
		}
	})
}

// tracestateMember is the member grammar of W3C Trace Context Level 2 §3.3.2.2,
// written out independently of the parser as the fuzzers' oracle.
var tracestateMember = regexp.MustCompile(`^[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$`)

// checkTraceState fails unless ts is a list we may send: at most 32 members, each of
// the Level 2 grammar, no key twice, and it parses to itself.
func checkTraceState(t *testing.T, ts TraceState) {
	t.Helper()
	enc := ts.String()
	if got, want := ts.Len(), countMembers(enc); got != want {
		t.Fatalf("%q: Len() = %d, has %d members", enc, got, want)
	}
	if ts.Len() > MaxTracestateMembers {
		t.Fatalf("%q: %d members", enc, ts.Len())
	}
	seen := map[string]bool{}
	for m := range strings.SplitSeq(enc, ",") {
		if enc == "" {
			break
		}
		if !tracestateMember.MatchString(m) {
			t.Fatalf("%q: member %q is not of the Level 2 grammar", enc, m)
		}
		k, _, _ := strings.Cut(m, "=")
		if seen[k] {
			t.Fatalf("%q: key %q twice", enc, k)
		}
		seen[k] = true
	}
	again, err := ParseTracestate([]string{enc})
	if err != nil || again != ts {
		t.Fatalf("%q re-parses to %q, %v", enc, again.String(), err)
	}
}

// FuzzTracestate checks ParseTracestate against otel's parser where the two agree
// (otel still has Level 1's key grammar, a subset of Level 2's, and drops a list
// with a duplicated key whole): whatever otel accepts we accept, unchanged. Whatever
// we keep is a list we may send (checkTraceState); a list dropped whole is reported.
func FuzzTracestate(f *testing.F) {
	f.Add("rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE")
	f.Add("fw529a3039@dt=FIgPZq, ,", "a=1")
	f.Add("a=1,a=2", "")
	f.Add("Bad=1", "x")
	f.Add("foo@=1,bar=2", "t@vvvvvvvvvvvvvvv=1")
	f.Add("foo=1,bar=1, foo=2", " baz= 3 ")
	f.Fuzz(func(t *testing.T, a, b string) {
		ts, err := ParseTracestate([]string{a, b})
		if err != nil && !errors.Is(err, ErrTracestate) {
			t.Fatalf("error %v does not wrap ErrTracestate", err)
		}
		checkTraceState(t, ts)
		if o, oerr := trace.ParseTraceState(a + "," + b); oerr == nil {
			if err != nil {
				t.Fatalf("otel accepts %q,%q; we report %v", a, b, err)
			}
			if got, want := ts.String(), o.String(); got != want {
				t.Fatalf("%q,%q: we read %q, otel %q", a, b, got, want)
			}
		}
	})
}

// FuzzTraceState_With checks the mutation for our own entry: with a valid key and
// value the entry is left-most and once, the others keep their order (the right-most
// dropped past 32), and the list is one we may send; otherwise nothing changes.
func FuzzTraceState_With(f *testing.F) {
	f.Add("rojo=1,congo=2", "ctxprop", "00f067aa0ba902b7")
	f.Add("rojo=1,ctxprop=2", "ctxprop", "x")
	f.Add(strings.Repeat("a=1,", 3), "a", "2")
	f.Add("", "Bad", "v")
	f.Fuzz(func(t *testing.T, list, key, value string) {
		ts, _ := ParseTracestate([]string{list})
		got, err := ts.With(key, value)
		if err != nil {
			if got != ts {
				t.Fatalf("With(%q, %q) failed (%v) and changed %q to %q", key, value, err, ts.String(), got.String())
			}
			return
		}
		checkTraceState(t, got)
		if !tracestateMember.MatchString(key + "=" + value) {
			t.Fatalf("With accepted %q=%q, not of the Level 2 grammar", key, value)
		}
		members := strings.Split(got.String(), ",")
		if members[0] != key+"="+value {
			t.Fatalf("%q: left-most is %q, want %q", got.String(), members[0], key+"="+value)
		}
		var others []string
		for m := range strings.SplitSeq(ts.String(), ",") {
			if k, _, _ := strings.Cut(m, "="); m != "" && k != key {
				others = append(others, m)
			}
		}
		if len(others) > MaxTracestateMembers-1 {
			others = others[:MaxTracestateMembers-1]
		}
		if got, want := strings.Join(members[1:], ","), strings.Join(others, ","); got != want {
			t.Fatalf("With(%q, %q) on %q left %q after our entry, want %q", key, value, ts.String(), got, want)
		}
	})
}

// FuzzBaggage runs the outbound path with correlation: the baggage sent on is
// within the limits and valid whenever we rewrote it, untouched otherwise, and
// reading it again gives the context we reported.
func FuzzBaggage(f *testing.F) {
	f.Add("user=alice,ctx.name=orders-1", "ctx.flag.color=red", "corr-1", "blue")
	f.Add("ctx.name=bad%2F", "", "corr-1", "x%0D%0Ay")
	f.Add("a=1,%%%", "ctx.flag.=1", "", "\r\n")
	f.Add(strings.Repeat("k=v,", 70), "ctx.name=x", "n", "v")
	f.Fuzz(func(t *testing.T, line1, line2, name, flagValue string) {
		tid, _ := trace.TraceIDFromHex(specTraceID)
		c := NewCorrelator(4, 0)
		defer c.Begin(tid, Entry{Name: name, Flags: []Flag{{"f", flagValue}}})()
		in := http.Header{Traceparent: {specTP}, Baggage: {line1, line2}}
		opt := Options{Pinnable: pinAll, Signer: fuzzSigner}
		o, _ := ReadOutbound(in, opt, c)
		out := in.Clone()
		o.Apply(out, trace.SpanContext{})

		if o.Name != "" && !ValidName(o.Name) {
			t.Fatalf("invalid Name %q reported", o.Name)
		}
		for _, fl := range o.Flags {
			if err := checkFlag(fl.Name, fl.Value); err != nil {
				t.Fatalf("invalid flag reported: %v", err)
			}
		}
		if !o.rewrite {
			if got := out[Baggage]; len(got) != 2 || got[0] != line1 || got[1] != line2 {
				t.Fatalf("baggage changed without a rewrite: %q", got)
			}
			return
		}
		sent := strings.Join(out[Baggage], ",")
		if len(out[Baggage]) > 1 {
			t.Fatalf("rewritten baggage has %d lines", len(out[Baggage]))
		}
		if len(sent) > MaxBaggageBytes {
			t.Fatalf("sent %d bytes of baggage", len(sent))
		}
		if sent != "" && strings.Count(sent, ",")+1 > MaxBaggageMembers {
			t.Fatalf("sent %d members", strings.Count(sent, ",")+1)
		}
		if _, err := baggage.Parse(sent); err != nil {
			t.Fatalf("sent invalid baggage %q: %v", sent, err)
		}
		// The next hop is another sidecar of the fleet: what we signed verifies.
		back, errs := ReadInbound(http.Header{Traceparent: out[Traceparent], Baggage: out[Baggage], CtxSig: out[CtxSig]}, opt, Source{})
		if len(errs) > 0 {
			t.Fatalf("the baggage we sent, %q, reads with errors: %v", sent, errs)
		}
		if back.Refused.Any() {
			t.Fatalf("the next hop refused members of %q (ctx-sig %q): %v %v", sent, out[CtxSig], back.Refused, back.Untrusted)
		}
		if back.Name != o.Name {
			t.Fatalf("the next hop reads name %q, we reported %q (sent %q)", back.Name, o.Name, sent)
		}
		if !flagsEqual(back.Flags, o.Flags) {
			t.Fatalf("the next hop reads flags %q, we reported %q (sent %q)", back.Flags, o.Flags, sent)
		}
	})
}

func flagsEqual(a, b []Flag) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzInbound feeds arbitrary header lines through ReadInbound and Apply, tracing on
// and off, and checks what reaches the app: a valid traceparent or none, unchanged
// trace headers when the traceparent is unchanged, no ctx-ops, safe flag headers.
func FuzzInbound(f *testing.F) {
	f.Add(specTP, "", "rojo=1", "ctx.name=a,ctx.flag.x=1", `incr;key="k"`, "Ctx-Flag-X", false, false)
	f.Add(specTP+"-x", specTP, "a=1,a=2", "ctx.name=%2F", "incr;", "Traceparent", true, true)
	f.Add("01-"+specTraceID+"-"+specSpanID+"-01-z", "", "", "ctx.flag.y=%0A", "", "", true, false)
	f.Fuzz(func(t *testing.T, tp1, tp2, ts, bg, opsLine, extraKey string, tracing, trust bool) {
		in := http.Header{}
		for _, kv := range [][2]string{{Traceparent, tp1}, {Traceparent, tp2}, {Tracestate, ts}, {Baggage, bg}, {CtxOps, opsLine}} {
			if kv[1] != "" {
				in[kv[0]] = append(in[kv[0]], kv[1])
			}
		}
		if extraKey != "" {
			in[http.CanonicalHeaderKey(extraKey)] = append(in[http.CanonicalHeaderKey(extraKey)], "v")
		}
		opt := Options{Tracing: tracing, TrustInboundOps: trust, Pinnable: pinAll, Signer: fuzzSigner}
		r, errs := ReadInbound(in, opt, Source{Trusted: trust})
		for _, err := range errs {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %v is not a *Error", err)
			}
		}
		if r.Ops != nil && !trust {
			t.Fatal("untrusted ops returned")
		}
		var child trace.SpanContext
		if tracing {
			// A child as the SDK makes it: same trace (or a new one), new span.
			scc := trace.SpanContextConfig{TraceID: r.Parent.TraceID(), SpanID: trace.SpanID{1, 2, 3}, TraceFlags: r.Parent.TraceFlags(), TraceState: r.Parent.TraceState()}
			if !scc.TraceID.IsValid() {
				scc.TraceID = trace.TraceID{9}
			}
			child = trace.NewSpanContext(scc)
		}
		out := in.Clone()
		r.Apply(out, child)

		if v := out[Traceparent]; len(v) > 0 {
			if _, err := parseTraceparent(v); err != nil {
				t.Fatalf("forwarded invalid traceparent %q: %v", v, err)
			}
			if tracing {
				if _, err := ParseTracestate(out[Tracestate]); err != nil {
					t.Fatalf("forwarded invalid tracestate %q with a new traceparent: %v", out[Tracestate], err)
				}
			} else if strings.Join(v, "\n") != strings.Join(in[Traceparent], "\n") ||
				strings.Join(out[Tracestate], "\n") != strings.Join(in[Tracestate], "\n") {
				t.Fatalf("tracing off changed trace headers %q %q → %q %q", in[Traceparent], in[Tracestate], v, out[Tracestate])
			}
		} else if len(out[Tracestate]) > 0 {
			t.Fatalf("tracestate %q forwarded without a traceparent", out[Tracestate])
		}
		if _, ok := out[CtxOps]; ok {
			t.Fatal("ctx-ops reached the app")
		}
		for k, v := range out {
			if !strings.HasPrefix(k, FlagPrefix) {
				continue
			}
			name := strings.ToLower(strings.TrimPrefix(k, FlagPrefix))
			found := false
			for _, fl := range r.Flags {
				found = found || strings.ToLower(fl.Name) == name
			}
			if !found {
				t.Fatalf("flag header %s not from baggage", k)
			}
			for _, s := range v {
				if strings.ContainsAny(s, "\r\n\x00") {
					t.Fatalf("flag header %s: %q", k, s)
				}
			}
		}
		if r.Name != "" && !ValidName(r.Name) {
			t.Fatalf("invalid name %q", r.Name)
		}
		if _, ok := out[CtxSig]; ok {
			t.Fatal("ctx-sig reached the app")
		}
		if !trust && (r.Name != "" || len(r.Flags) > 0) {
			t.Fatalf("an untrusted source's unsigned context was kept: %q %v", r.Name, r.Flags)
		}
	})
}
