package headers

import (
	"errors"
	"net/http"
	"strconv"
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

// TestParseTracestate covers W3C Trace Context Level 2 §3.3.2: the key grammar of
// Level 2 (any '@' after the first character, 256 characters in all), the value
// grammar, combining lines, OWS and empty members, the 32-member limit, and what is
// dropped: the whole list for a member that does not parse or a 33rd member, only the
// members of a duplicated key.
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
		want  string // the list kept, re-encoded
		err   bool
	}{
		{name: "absent"},
		{name: "empty line", lines: []string{""}},
		{name: "spec example", lines: []string{"congo=t61rcWkgMzE"}, want: "congo=t61rcWkgMzE"},
		{name: "spec example two members", lines: []string{"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}, want: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
		{name: "multi-tenant key", lines: []string{"fw529a3039@dt=FIgPZq"}, want: "fw529a3039@dt=FIgPZq"},
		{name: "tenant starting with a digit", lines: []string{"1tenant@sys=v"}, want: "1tenant@sys=v"},
		{name: "simple key starting with a digit", lines: []string{"1a=v"}, want: "1a=v"},
		{name: "key ending in @", lines: []string{"foo@=1,bar=2"}, want: "foo@=1,bar=2"},
		{name: "key with @@", lines: []string{"foo@@bar=1,bar=2"}, want: "foo@@bar=1,bar=2"},
		{name: "key with two @", lines: []string{"foo@bar@baz=1,bar=2"}, want: "foo@bar@baz=1,bar=2"},
		{name: "242 characters before @", lines: []string{"foo=1", "t" + strings.Repeat("x", 241) + "@v=1"}, want: "foo=1,t" + strings.Repeat("x", 241) + "@v=1"},
		{name: "15 characters after @", lines: []string{"foo=1", "t@" + strings.Repeat("v", 15) + "=1"}, want: "foo=1,t@" + strings.Repeat("v", 15) + "=1"},
		{name: "system-id starting with a digit", lines: []string{"t@1s=v"}, want: "t@1s=v"},
		{name: "lines combined in order", lines: []string{"rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"}, want: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
		{name: "OWS and empty members", lines: []string{" , rojo=1 ,\t,congo=2 ,"}, want: "rojo=1,congo=2"},
		{name: "empty line among lines", lines: []string{"", "foo=1", ""}, want: "foo=1"},
		{name: "value keeps its leading space", lines: []string{"a= b"}, want: "a= b"},
		{name: "key special characters", lines: []string{"a_-*/@b=v"}, want: "a_-*/@b=v"},
		{name: "key 256 characters", lines: []string{"a" + strings.Repeat("b", 255) + "=v"}, want: "a" + strings.Repeat("b", 255) + "=v"},
		{name: "value 256 characters", lines: []string{"a=" + strings.Repeat("v", 256)}, want: "a=" + strings.Repeat("v", 256)},
		{name: "value with inner space", lines: []string{"a=b c"}, want: "a=b c"},
		{name: "32 members", lines: []string{members(32)}, want: members(32)},
		{name: "32 members and empty ones", lines: []string{members(32) + ",,", " "}, want: members(32)},
		{name: "33 members", lines: []string{members(33)}, err: true},
		{name: "33 members over two lines", lines: []string{members(20), strings.ReplaceAll(members(13), "k", "j")}, err: true},
		{name: "duplicate key: its members dropped, the rest kept", lines: []string{"a=1,b=2,a=3"}, want: "b=2", err: true},
		{name: "duplicate key and value", lines: []string{"foo=1,foo=1"}, err: true},
		{name: "duplicate key across lines", lines: []string{"a=1", "a=2"}, err: true},
		{name: "two duplicated keys", lines: []string{"a=1,b=1,c=1,b=2,a=2"}, want: "c=1", err: true},
		{name: "key 257 characters", lines: []string{"foo=1", "a" + strings.Repeat("b", 256) + "=v"}, err: true},
		{name: "key uppercase", lines: []string{"Foo=v"}, err: true},
		{name: "key with a dot", lines: []string{"a.b=v"}, err: true},
		{name: "key with a space before =", lines: []string{"foo =1"}, err: true},
		{name: "key starting with @", lines: []string{"@foo=1,bar=2"}, err: true},
		{name: "key starting with _", lines: []string{"_foo=1"}, err: true},
		{name: "empty key", lines: []string{"=1"}, err: true},
		{name: "empty value", lines: []string{"a="}, err: true},
		{name: "empty value discards the list", lines: []string{"foo=,bar=3"}, err: true},
		{name: "no equals", lines: []string{"a"}, err: true},
		{name: "value with equals", lines: []string{"foo=bar=baz"}, err: true},
		{name: "value 257 characters", lines: []string{"a=" + strings.Repeat("v", 257)}, err: true},
		{name: "value with tab", lines: []string{"a=b\tc"}, err: true},
		{name: "value not ASCII", lines: []string{"a=café"}, err: true},
		{name: "one bad member discards all", lines: []string{"rojo=1", "Bad=2"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := ParseTracestate(tt.lines)
			if got, want := err != nil, tt.err; got != want {
				t.Fatalf("ParseTracestate(%q) error = %v, want error %v", tt.lines, err, want)
			}
			if err != nil && !errors.Is(err, ErrTracestate) {
				t.Errorf("error %v does not wrap ErrTracestate", err)
			}
			if got, want := ts.String(), tt.want; got != want {
				t.Errorf("tracestate = %q, want %q", got, want)
			}
			if got, want := ts.Len(), countMembers(tt.want); got != want {
				t.Errorf("Len() = %d, want %d", got, want)
			}
		})
	}
}

func countMembers(list string) int {
	if list == "" {
		return 0
	}
	return strings.Count(list, ",") + 1
}

// TestTraceState_With covers the mutation of Level 2 §3.5 for our own entry: new
// entry at the left, the old member of the key removed, the order of the others kept,
// and the right-most member dropped when the list would pass 32 members.
func TestTraceState_With(t *testing.T) {
	full := make([]string, MaxTracestateMembers)
	for i := range full {
		full[i] = "k" + strconv.Itoa(i) + "=v"
	}
	tests := []struct {
		name, list, key, value, want string
		err                          bool
	}{
		{name: "into the empty list", key: "ctxprop", value: "00f067aa0ba902b7", want: "ctxprop=00f067aa0ba902b7"},
		{name: "to the left", list: "rojo=1,congo=2", key: "ctxprop", value: "a", want: "ctxprop=a,rojo=1,congo=2"},
		{name: "old member of the key removed", list: "rojo=1,ctxprop=old,congo=2", key: "ctxprop", value: "new", want: "ctxprop=new,rojo=1,congo=2"},
		{name: "already left-most", list: "ctxprop=old,rojo=1", key: "ctxprop", value: "new", want: "ctxprop=new,rojo=1"},
		{name: "full list loses its right-most member", list: strings.Join(full, ","), key: "ctxprop", value: "a", want: "ctxprop=a," + strings.Join(full[:31], ",")},
		{name: "full list with the key keeps the others", list: strings.Join(full[:31], ",") + ",ctxprop=old", key: "ctxprop", value: "a", want: "ctxprop=a," + strings.Join(full[:31], ",")},
		{name: "invalid key", list: "rojo=1", key: "Ctxprop", value: "a", want: "rojo=1", err: true},
		{name: "invalid value", list: "rojo=1", key: "ctxprop", value: "a,b", want: "rojo=1", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := ParseTracestate([]string{tt.list})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ts.With(tt.key, tt.value)
			if (err != nil) != tt.err || err != nil && !errors.Is(err, ErrTracestate) {
				t.Fatalf("With error = %v, want error %v wrapping ErrTracestate", err, tt.err)
			}
			if got.String() != tt.want {
				t.Errorf("With(%q, %q) = %q, want %q", tt.key, tt.value, got.String(), tt.want)
			}
			if got, want := got.Len(), countMembers(tt.want); got != want {
				t.Errorf("Len() = %d, want %d", got, want)
			}
			if !tt.err {
				if v, ok := got.Get(tt.key); !ok || v != tt.value {
					t.Errorf("Get(%q) = %q, %v, want %q", tt.key, v, ok, tt.value)
				}
			}
		})
	}
}

func TestWriteTraceparent(t *testing.T) {
	ts, err := ParseTracestate([]string{"rojo=1,congo=2"})
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex(specTraceID)
	sid, _ := trace.SpanIDFromHex(specSpanID)
	tests := []struct {
		name   string
		sc     trace.SpanContext
		ts     TraceState
		before http.Header
		wantTP []string
		wantTS []string
	}{
		{
			name: "flags sampled and random, tracestate",
			sc:   trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: 0x03}), ts: ts,
			wantTP: []string{"00-" + specTraceID + "-" + specSpanID + "-03"}, wantTS: []string{"rojo=1,congo=2"},
		},
		{
			name:   "reserved flags written as zero, old tracestate removed",
			sc:     trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: 0xfd}),
			before: http.Header{Tracestate: {"old=1", "older=2"}},
			wantTP: []string{"00-" + specTraceID + "-" + specSpanID + "-01"},
		},
		{
			name:   "invalid span context removes both",
			before: http.Header{Traceparent: {specTP}, Tracestate: {"a=1"}},
		},
		{
			name:   "two old lines replaced by one",
			sc:     trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
			before: http.Header{Traceparent: {"x", "y"}},
			wantTP: []string{"00-" + specTraceID + "-" + specSpanID + "-00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.before
			if h == nil {
				h = http.Header{}
			}
			WriteTraceparent(h, tt.sc, tt.ts)
			if got, want := strings.Join(h[Traceparent], "|"), strings.Join(tt.wantTP, "|"); got != want {
				t.Errorf("traceparent = %q, want %q", got, want)
			}
			if got, want := strings.Join(h[Tracestate], "|"), strings.Join(tt.wantTS, "|"); got != want {
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
