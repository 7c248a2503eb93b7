package headers

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

const (
	specTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	specSpanID  = "00f067aa0ba902b7"
	specTP      = "00-" + specTraceID + "-" + specSpanID + "-01"
)

// TestParseTraceparent covers W3C Trace Context Level 2 §3.2 and the processing
// model of §4.3, case by case.
func TestParseTraceparent(t *testing.T) {
	zeros32, zeros16 := strings.Repeat("0", 32), strings.Repeat("0", 16)
	tests := []struct {
		name   string
		lines  []string
		ok     bool
		flags  trace.TraceFlags
		absent bool
	}{
		{name: "absent", lines: nil, ok: true, absent: true},
		{name: "spec example sampled", lines: []string{specTP}, ok: true, flags: trace.FlagsSampled},
		{name: "spec example not sampled", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-00"}, ok: true, flags: 0},
		{name: "random flag kept", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-02"}, ok: true, flags: trace.FlagsRandom},
		{name: "sampled and random", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-03"}, ok: true, flags: trace.FlagsSampled | trace.FlagsRandom},
		{name: "reserved flag bits ignored", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-ff"}, ok: true, flags: trace.FlagsSampled | trace.FlagsRandom},
		{name: "OWS around the value", lines: []string{" \t" + specTP + " "}, ok: true, flags: trace.FlagsSampled},
		{name: "future version, no extra field", lines: []string{"01-" + specTraceID + "-" + specSpanID + "-01"}, ok: true, flags: trace.FlagsSampled},
		{name: "future version, extra fields ignored", lines: []string{"cc-" + specTraceID + "-" + specSpanID + "-01-what-the-future-will-be-like"}, ok: true, flags: trace.FlagsSampled},
		{name: "future version fe", lines: []string{"fe-" + specTraceID + "-" + specSpanID + "-00-"}, ok: true},
		{name: "future version, flags not followed by dash", lines: []string{"01-" + specTraceID + "-" + specSpanID + "-01x"}},
		{name: "future version, flags followed by dot", lines: []string{"01-" + specTraceID + "-" + specSpanID + "-01.extra"}},
		{name: "future version, short trace-id", lines: []string{"01-" + specTraceID[1:] + "-" + specSpanID + "-01-xx"}},
		{name: "version ff forbidden", lines: []string{"ff-" + specTraceID + "-" + specSpanID + "-01"}},
		{name: "version 00 with extra field", lines: []string{specTP + "-extra"}},
		{name: "version 00 with trailing dash", lines: []string{specTP + "-"}},
		{name: "version 00 with trailing garbage", lines: []string{specTP + "x"}},
		{name: "version one digit", lines: []string{"0-" + specTraceID + "-" + specSpanID + "-01"}},
		{name: "version three digits", lines: []string{"000-" + specTraceID + "-" + specSpanID + "-01"}},
		{name: "version uppercase", lines: []string{"0A-" + specTraceID + "-" + specSpanID + "-01"}},
		{name: "version not hex", lines: []string{"0g-" + specTraceID + "-" + specSpanID + "-01"}},
		{name: "trace-id uppercase", lines: []string{"00-" + strings.ToUpper(specTraceID) + "-" + specSpanID + "-01"}},
		{name: "parent-id uppercase", lines: []string{"00-" + specTraceID + "-00F067AA0BA902B7-01"}},
		{name: "flags uppercase", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-0A"}},
		{name: "trace-id not hex", lines: []string{"00-" + specTraceID[:31] + "z-" + specSpanID + "-01"}},
		{name: "parent-id not hex", lines: []string{"00-" + specTraceID + "-" + specSpanID[:15] + ".-01"}},
		{name: "flags not hex", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-0x"}},
		{name: "trace-id too short", lines: []string{"00-" + specTraceID[1:] + "-" + specSpanID + "-01"}},
		{name: "trace-id too long", lines: []string{"00-" + specTraceID + "a-" + specSpanID + "-01"}},
		{name: "parent-id too short", lines: []string{"00-" + specTraceID + "-" + specSpanID[1:] + "-01"}},
		{name: "parent-id too long", lines: []string{"00-" + specTraceID + "-" + specSpanID + "a-01"}},
		{name: "flags one digit", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-1"}},
		{name: "flags three digits", lines: []string{"00-" + specTraceID + "-" + specSpanID + "-001"}},
		{name: "all-zero trace-id", lines: []string{"00-" + zeros32 + "-" + specSpanID + "-01"}},
		{name: "all-zero parent-id", lines: []string{"00-" + specTraceID + "-" + zeros16 + "-01"}},
		{name: "underscore delimiters", lines: []string{"00_" + specTraceID + "_" + specSpanID + "_01"}},
		{name: "space inside", lines: []string{"00 -" + specTraceID + "-" + specSpanID + "-01"}},
		{name: "empty value", lines: []string{""}},
		{name: "whitespace only", lines: []string{"  "}},
		{name: "duplicated header lines", lines: []string{specTP, specTP}},
		{name: "duplicated, one empty", lines: []string{specTP, ""}},
		{name: "two values in one line", lines: []string{specTP + "," + specTP}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scc, err := parseTraceparent(tt.lines)
			if got, want := err == nil, tt.ok; got != want {
				t.Fatalf("parseTraceparent(%q) error = %v, want ok=%v", tt.lines, err, want)
			}
			if !tt.ok {
				if !errors.Is(err, ErrTraceparent) {
					t.Errorf("error %v does not wrap ErrTraceparent", err)
				}
				return
			}
			if tt.absent {
				if scc.TraceID.IsValid() {
					t.Errorf("absent header gave trace-id %s", scc.TraceID)
				}
				return
			}
			if got, want := scc.TraceID.String(), specTraceID; got != want {
				t.Errorf("trace-id = %s, want %s", got, want)
			}
			if got, want := scc.SpanID.String(), specSpanID; got != want {
				t.Errorf("parent-id = %s, want %s", got, want)
			}
			if got, want := scc.TraceFlags, tt.flags; got != want {
				t.Errorf("flags = %02x, want %02x", byte(got), byte(want))
			}
			if !scc.Remote {
				t.Error("parsed parent is not marked remote")
			}
		})
	}
}

// TestParseTracestate covers W3C Trace Context Level 2 §3.3: key grammar (simple and
// multi-tenant), value grammar, combining lines, the 32-member limit and duplicates.
func TestParseTracestate(t *testing.T) {
	members := func(n int) string {
		m := make([]string, n)
		for i := range m {
			m[i] = "k" + strings.Repeat("x", i) + "=v"
		}
		return strings.Join(m, ",")
	}
	tests := []struct {
		name  string
		lines []string
		want  string // the re-encoded tracestate; "" with ok
		ok    bool
	}{
		{name: "absent", ok: true},
		{name: "empty line", lines: []string{""}, ok: true},
		{name: "spec example", lines: []string{"congo=t61rcWkgMzE"}, want: "congo=t61rcWkgMzE", ok: true},
		{name: "spec example two members", lines: []string{"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}, want: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", ok: true},
		{name: "multi-tenant key", lines: []string{"fw529a3039@dt=FIgPZq"}, want: "fw529a3039@dt=FIgPZq", ok: true},
		{name: "tenant starting with a digit", lines: []string{"1tenant@sys=v"}, want: "1tenant@sys=v", ok: true},
		{name: "lines combined in order", lines: []string{"rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"}, want: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", ok: true},
		{name: "OWS and empty members", lines: []string{" , rojo=1 ,\t,congo=2 ,"}, want: "rojo=1,congo=2", ok: true},
		{name: "key special characters", lines: []string{"a_-*/b=v"}, want: "a_-*/b=v", ok: true},
		{name: "key 256 characters", lines: []string{"a" + strings.Repeat("b", 255) + "=v"}, want: "a" + strings.Repeat("b", 255) + "=v", ok: true},
		{name: "value 256 characters", lines: []string{"a=" + strings.Repeat("v", 256)}, want: "a=" + strings.Repeat("v", 256), ok: true},
		{name: "value with inner space", lines: []string{"a=b c"}, want: "a=b c", ok: true},
		{name: "32 members", lines: []string{members(32)}, want: members(32), ok: true},
		{name: "33 members", lines: []string{members(33)}},
		{name: "33 members over two lines", lines: []string{members(20), strings.ReplaceAll(members(13), "k", "j")}},
		{name: "duplicate key", lines: []string{"a=1,b=2,a=3"}},
		{name: "duplicate key across lines", lines: []string{"a=1", "a=2"}},
		{name: "key 257 characters", lines: []string{"a" + strings.Repeat("b", 256) + "=v"}},
		{name: "key uppercase", lines: []string{"Foo=v"}},
		{name: "simple key starting with a digit", lines: []string{"1a=v"}},
		{name: "key with a dot", lines: []string{"a.b=v"}},
		{name: "system-id starting with a digit", lines: []string{"t@1s=v"}},
		{name: "system-id 15 characters", lines: []string{"t@s" + strings.Repeat("x", 14) + "=v"}},
		{name: "tenant-id 242 characters", lines: []string{"t" + strings.Repeat("x", 241) + "@s=v"}},
		{name: "two @", lines: []string{"a@b@c=v"}},
		{name: "empty tenant", lines: []string{"@s=v"}},
		{name: "empty value", lines: []string{"a="}},
		{name: "no equals", lines: []string{"a"}},
		{name: "value with equals", lines: []string{"a=b=c"}},
		{name: "value 257 characters", lines: []string{"a=" + strings.Repeat("v", 257)}},
		{name: "value with tab", lines: []string{"a=b\tc"}},
		{name: "value not ASCII", lines: []string{"a=café"}},
		{name: "one bad member discards all", lines: []string{"rojo=1", "Bad=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := parseTracestate(tt.lines)
			if got, want := err == nil, tt.ok; got != want {
				t.Fatalf("parseTracestate(%q) error = %v, want ok=%v", tt.lines, err, want)
			}
			if err != nil && !errors.Is(err, ErrTracestate) {
				t.Errorf("error %v does not wrap ErrTracestate", err)
			}
			if got, want := ts.String(), tt.want; got != want {
				t.Errorf("tracestate = %q, want %q", got, want)
			}
		})
	}
}

func TestWriteTraceparent(t *testing.T) {
	ts, err := trace.ParseTraceState("rojo=1,congo=2")
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex(specTraceID)
	sid, _ := trace.SpanIDFromHex(specSpanID)
	tests := []struct {
		name   string
		sc     trace.SpanContext
		before http.Header
		tp, ts []string
	}{
		{
			name: "flags sampled and random, tracestate",
			sc:   trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: 0x03, TraceState: ts}),
			tp:   []string{"00-" + specTraceID + "-" + specSpanID + "-03"}, ts: []string{"rojo=1,congo=2"},
		},
		{
			name:   "reserved flags written as zero, old tracestate removed",
			sc:     trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: 0xfd}),
			before: http.Header{Tracestate: {"old=1", "older=2"}},
			tp:     []string{"00-" + specTraceID + "-" + specSpanID + "-01"},
		},
		{
			name:   "invalid span context removes both",
			before: http.Header{Traceparent: {specTP}, Tracestate: {"a=1"}},
		},
		{
			name:   "two old lines replaced by one",
			sc:     trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
			before: http.Header{Traceparent: {"x", "y"}},
			tp:     []string{"00-" + specTraceID + "-" + specSpanID + "-00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.before
			if h == nil {
				h = http.Header{}
			}
			WriteTraceparent(h, tt.sc)
			if got, want := strings.Join(h[Traceparent], "|"), strings.Join(tt.tp, "|"); got != want {
				t.Errorf("traceparent = %q, want %q", got, want)
			}
			if got, want := strings.Join(h[Tracestate], "|"), strings.Join(tt.ts, "|"); got != want {
				t.Errorf("tracestate = %q, want %q", got, want)
			}
			if tt.sc.IsValid() {
				scc, err := parseTraceparent(h[Traceparent])
				if err != nil {
					t.Fatalf("written traceparent does not parse: %v", err)
				}
				if got, want := scc.TraceID, tid; got != want {
					t.Errorf("re-parsed trace-id = %s, want %s", got, want)
				}
			}
		})
	}
}
