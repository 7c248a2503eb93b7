package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// The W3C Trace Context test suite (github.com/w3c/trace-context, test/test.py, run at
// its default STRICT_LEVEL 2) sends a service requests with trace headers and asks it
// to call the suite back; it checks the headers of the call-backs. w3cCases restate its
// cases and what each checks, one case per request the suite sends. They run through
// real sockets in two set-ups: the sidecar in front of and behind an app (client →
// inbound proxy → app → outbound proxy → recorder) and the outbound proxy alone
// (client as the app → outbound proxy → recorder).
//
// Where the suite still enforces Level 1's tracestate key grammar (tenant ≤ 241 @
// vendor ≤ 14, one '@'), the cases follow the current Level 2 text instead, whose key
// is ( lcalpha / DIGIT ) 0*255 keychar with '@' a keychar: see level2 below.

const (
	w3cTraceID  = "12345678901234567890123456789012"
	w3cParentID = "1234567890123456"
)

// w3cCase is one request of the suite.
type w3cCase struct {
	name  string
	calls int         // call-backs the service is asked for; 0 means 1
	in    [][2]string // header lines, in order, names as the suite writes them
	// valid says the request carries one valid traceparent: passthrough forwards
	// it and its tracestate lines as they are.
	valid bool
	// check holds the suite's assertions on the call-backs, for the modes that take
	// part in the trace (participate, export).
	check func(t *testing.T, got []callback)
	// level2 marks a case where the suite's expectation is Level 1's and check is the
	// current specification's.
	level2 bool
}

// callback is what the recorder received: the traceparent as the suite reads it and
// the tracestate as a list.
type callback struct {
	mode    string // the trace mode the call-back went through
	h       http.Header
	version string
	traceID string
	parent  string
	flags   string
	state   *w3cState
}

func tp(traceID string, flags string) [2]string {
	return [2]string{"traceparent", "00-" + traceID + "-" + w3cParentID + "-" + flags}
}

func sameTrace(t *testing.T, got []callback) {
	t.Helper()
	for _, c := range got {
		if c.traceID != w3cTraceID {
			t.Errorf("trace-id %s, want the caller's %s", c.traceID, w3cTraceID)
		}
		if c.parent == w3cParentID {
			t.Errorf("parent-id %s is the caller's: this hop did not take part", c.parent)
		}
	}
}

func newTrace(t *testing.T, got []callback) {
	t.Helper()
	for _, c := range got {
		if c.traceID == w3cTraceID || c.traceID == "123456789012345678901234567890123"[1:] {
			t.Errorf("trace-id %s was taken from an invalid traceparent; want a new trace", c.traceID)
		}
	}
}

func anyValid(*testing.T, []callback) {} // a valid traceparent is all the suite asks

func stateHas(kv ...string) func(*testing.T, []callback) {
	return func(t *testing.T, got []callback) {
		t.Helper()
		for _, c := range got {
			for i := 0; i < len(kv); i += 2 {
				if v, ok := c.state.get(kv[i]); !ok || v != kv[i+1] {
					t.Errorf("tracestate %q: %s = %q (present %v), want %q", c.state, kv[i], v, ok, kv[i+1])
				}
			}
		}
	}
}

func stateLacks(keys ...string) func(*testing.T, []callback) {
	return func(t *testing.T, got []callback) {
		t.Helper()
		for _, c := range got {
			for _, k := range keys {
				if _, ok := c.state.get(k); ok {
					t.Errorf("tracestate %q has %q, which the suite expects dropped", c.state, k)
				}
			}
		}
	}
}

func stateLen(n int) func(*testing.T, []callback) {
	return func(t *testing.T, got []callback) {
		t.Helper()
		for _, c := range got {
			if got := len(c.state.keys); got != n {
				t.Errorf("tracestate %q has %d members, want %d", c.state, got, n)
			}
		}
	}
}

func all(checks ...func(*testing.T, []callback)) func(*testing.T, []callback) {
	return func(t *testing.T, got []callback) {
		t.Helper()
		for _, c := range checks {
			c(t, got)
		}
	}
}

func w3cCases() []w3cCase {
	tpLine := "00-" + w3cTraceID + "-" + w3cParentID + "-01"
	tp00 := tp(w3cTraceID, "00")
	bars := func(from, to int) string {
		var m []string
		for i := from; i <= to; i++ {
			m = append(m, fmt.Sprintf("bar%02d=%02d", i, i))
		}
		return strings.Join(m, ",")
	}
	keyPlain := "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
	keyVendor := keyPlain + "@a-z0-9_-*/"
	var value []byte
	for c := byte(0x20); c <= 0x7e; c++ {
		if c != ',' && c != '=' {
			value = append(value, c)
		}
	}
	distinctParents := func(n int) func(*testing.T, []callback) {
		return func(t *testing.T, got []callback) {
			t.Helper()
			seen := map[string]bool{}
			for _, c := range got {
				seen[c.parent] = true
			}
			if len(seen) != n {
				t.Errorf("%d distinct parent-ids over %d call-backs, want %d", len(seen), len(got), n)
			}
		}
	}
	return []w3cCase{
		{name: "both_traceparent_and_tracestate_missing", check: anyValid},
		{name: "traceparent_included_tracestate_missing", in: [][2]string{tp(w3cTraceID, "01")}, valid: true, check: sameTrace},
		{name: "traceparent_duplicated", in: [][2]string{tp(w3cTraceID[:31]+"1", "01"), tp(w3cTraceID, "01")}, check: newTrace},
		{name: "traceparent_header_name/trace-parent", in: [][2]string{{"trace-parent", tpLine}}, check: newTrace},
		{name: "traceparent_header_name/trace.parent", in: [][2]string{{"trace.parent", tpLine}}, check: newTrace},
		{name: "traceparent_header_name_valid_casing/TraceParent", in: [][2]string{{"TraceParent", tpLine}}, valid: true, check: sameTrace},
		{name: "traceparent_header_name_valid_casing/TrAcEpArEnT", in: [][2]string{{"TrAcEpArEnT", tpLine}}, valid: true, check: sameTrace},
		{name: "traceparent_header_name_valid_casing/TRACEPARENT", in: [][2]string{{"TRACEPARENT", tpLine}}, valid: true, check: sameTrace},
		{name: "traceparent_version_0x00/trailing_dot", in: [][2]string{{"traceparent", tpLine + "."}}, check: newTrace},
		{name: "traceparent_version_0x00/extra_fields", in: [][2]string{{"traceparent", tpLine + "-what-the-future-will-be-like"}}, check: newTrace},
		{name: "traceparent_version_0xcc/plain", in: [][2]string{{"traceparent", "cc-" + w3cTraceID + "-" + w3cParentID + "-01"}}, valid: true, check: sameTrace},
		{name: "traceparent_version_0xcc/extra_fields", in: [][2]string{{"traceparent", "cc-" + w3cTraceID + "-" + w3cParentID + "-01-what-the-future-will-be-like"}}, valid: true, check: sameTrace},
		{name: "traceparent_version_0xcc/dot", in: [][2]string{{"traceparent", "cc-" + w3cTraceID + "-" + w3cParentID + "-01.what-the-future-will-be-like"}}, check: newTrace},
		{name: "traceparent_version_0xff", in: [][2]string{{"traceparent", "ff-" + w3cTraceID + "-" + w3cParentID + "-01"}}, check: newTrace},
		{name: "traceparent_version_illegal_characters/.0", in: [][2]string{{"traceparent", ".0-" + w3cTraceID + "-" + w3cParentID + "-01"}}, check: newTrace},
		{name: "traceparent_version_illegal_characters/0.", in: [][2]string{{"traceparent", "0.-" + w3cTraceID + "-" + w3cParentID + "-01"}}, check: newTrace},
		{name: "traceparent_version_too_long/000", in: [][2]string{{"traceparent", "000-" + w3cTraceID + "-" + w3cParentID + "-01"}}, check: newTrace},
		{name: "traceparent_version_too_long/0000", in: [][2]string{{"traceparent", "0000-" + w3cTraceID + "-" + w3cParentID + "-01"}}, check: newTrace},
		{name: "traceparent_version_too_short", in: [][2]string{{"traceparent", "0-" + w3cTraceID + "-" + w3cParentID + "-01"}}, check: newTrace},
		{name: "traceparent_trace_id_all_zero", in: [][2]string{tp(strings.Repeat("0", 32), "01")}, check: anyValid},
		{name: "traceparent_trace_id_illegal_characters/first", in: [][2]string{tp("."+w3cTraceID[1:], "01")}, check: newTrace},
		{name: "traceparent_trace_id_illegal_characters/last", in: [][2]string{tp(w3cTraceID[:31]+".", "01")}, check: newTrace},
		{name: "traceparent_trace_id_too_long", in: [][2]string{tp(w3cTraceID+"3", "01")}, check: newTrace},
		{name: "traceparent_trace_id_too_short", in: [][2]string{tp(w3cTraceID[:31], "01")}, check: newTrace},
		{name: "traceparent_parent_id_all_zero", in: [][2]string{{"traceparent", "00-" + w3cTraceID + "-0000000000000000-01"}}, check: newTrace},
		{name: "traceparent_parent_id_illegal_characters/first", in: [][2]string{{"traceparent", "00-" + w3cTraceID + "-.234567890123456-01"}}, check: newTrace},
		{name: "traceparent_parent_id_illegal_characters/last", in: [][2]string{{"traceparent", "00-" + w3cTraceID + "-123456789012345.-01"}}, check: newTrace},
		{name: "traceparent_parent_id_too_long", in: [][2]string{{"traceparent", "00-" + w3cTraceID + "-12345678901234567-01"}}, check: newTrace},
		{name: "traceparent_parent_id_too_short", in: [][2]string{{"traceparent", "00-" + w3cTraceID + "-123456789012345-01"}}, check: newTrace},
		{name: "traceparent_trace_flags_illegal_characters/.0", in: [][2]string{tp(w3cTraceID, ".0")}, check: newTrace},
		{name: "traceparent_trace_flags_illegal_characters/0.", in: [][2]string{tp(w3cTraceID, "0.")}, check: newTrace},
		{name: "traceparent_trace_flags_too_long", in: [][2]string{tp(w3cTraceID, "001")}, check: newTrace},
		{name: "traceparent_trace_flags_too_short", in: [][2]string{tp(w3cTraceID, "1")}, check: newTrace},
		{name: "traceparent_ows_handling/leading_space", in: [][2]string{{"traceparent", " " + tpLine}}, valid: true, check: sameTrace},
		{name: "traceparent_ows_handling/leading_tab", in: [][2]string{{"traceparent", "\t" + tpLine}}, valid: true, check: sameTrace},
		{name: "traceparent_ows_handling/trailing_space", in: [][2]string{{"traceparent", tpLine + " "}}, valid: true, check: sameTrace},
		{name: "traceparent_ows_handling/trailing_tab", in: [][2]string{{"traceparent", tpLine + "\t"}}, valid: true, check: sameTrace},
		{name: "traceparent_ows_handling/both", in: [][2]string{{"traceparent", "\t " + tpLine + " \t"}}, valid: true, check: sameTrace},
		{name: "tracestate_included_traceparent_missing/one", in: [][2]string{{"tracestate", "foo=1"}}, check: stateLen(0)},
		{name: "tracestate_included_traceparent_missing/two", in: [][2]string{{"tracestate", "foo=1,bar=2"}}, check: stateLen(0)},
		{name: "tracestate_included_traceparent_included", in: [][2]string{tp00, {"tracestate", "foo=1,bar=2"}}, valid: true, check: all(sameTrace, stateHas("foo", "1", "bar", "2"))},
		{name: "tracestate_header_name/trace-state", in: [][2]string{tp00, {"trace-state", "foo=1"}}, valid: true, check: stateLacks("foo")},
		{name: "tracestate_header_name/trace.state", in: [][2]string{tp00, {"trace.state", "foo=1"}}, valid: true, check: stateLacks("foo")},
		{name: "tracestate_header_name_valid_casing/TraceState", in: [][2]string{tp00, {"TraceState", "foo=1"}}, valid: true, check: stateHas("foo", "1")},
		{name: "tracestate_header_name_valid_casing/TrAcEsTaTe", in: [][2]string{tp00, {"TrAcEsTaTe", "foo=1"}}, valid: true, check: stateHas("foo", "1")},
		{name: "tracestate_header_name_valid_casing/TRACESTATE", in: [][2]string{tp00, {"TRACESTATE", "foo=1"}}, valid: true, check: stateHas("foo", "1")},
		{name: "tracestate_empty_header/empty", in: [][2]string{tp00, {"tracestate", ""}}, valid: true, check: all(sameTrace, func(t *testing.T, got []callback) {
			for _, c := range got {
				if v, ok := c.h["Tracestate"]; ok && strings.Join(v, ",") == "" {
					t.Errorf("an empty tracestate was sent: %q", v)
				}
			}
		})},
		{name: "tracestate_empty_header/then_empty", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", ""}}, valid: true, check: all(sameTrace, stateHas("foo", "1"))},
		{name: "tracestate_empty_header/empty_first", in: [][2]string{tp00, {"tracestate", ""}, {"tracestate", "foo=1"}}, valid: true, check: all(sameTrace, stateHas("foo", "1"))},
		{name: "tracestate_multiple_headers_different_keys", in: [][2]string{tp00, {"tracestate", "foo=1,bar=2"}, {"tracestate", "rojo=1,congo=2"}, {"tracestate", "baz=3"}}, valid: true,
			check: all(sameTrace, stateHas("foo", "1", "bar", "2", "rojo", "1", "congo", "2", "baz", "3"), func(t *testing.T, got []callback) {
				for _, c := range got {
					if got, want := strings.Join(c.state.keys, ","), "foo,bar,rojo,congo,baz"; got != want {
						t.Errorf("tracestate keys in order %s, want %s", got, want)
					}
				}
			})},
		{name: "tracestate_duplicated_keys/same_value", in: [][2]string{tp00, {"tracestate", "foo=1,foo=1"}}, valid: true, check: all(sameTrace, stateLacks("foo"))},
		{name: "tracestate_duplicated_keys/other_value", in: [][2]string{tp00, {"tracestate", "foo=1,foo=2"}}, valid: true, check: all(sameTrace, stateLacks("foo"))},
		{name: "tracestate_duplicated_keys/two_lines_same", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", "foo=1"}}, valid: true, check: all(sameTrace, stateLacks("foo"))},
		{name: "tracestate_duplicated_keys/two_lines_other", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", "foo=2"}}, valid: true, check: all(sameTrace, stateLacks("foo"))},
		{name: "tracestate_all_allowed_characters/plain_key", in: [][2]string{tp00, {"tracestate", keyPlain + "=" + string(value)}}, valid: true, check: stateHas(keyPlain, string(value))},
		{name: "tracestate_all_allowed_characters/vendor_key", in: [][2]string{tp00, {"tracestate", keyVendor + "=" + string(value)}}, valid: true, check: stateHas(keyVendor, string(value))},
		{name: "tracestate_ows_handling/spaces_and_tabs", in: [][2]string{tp00, {"tracestate", "foo=1 \t , \t bar=2, \t baz=3"}}, valid: true, check: stateHas("foo", "1", "bar", "2", "baz", "3")},
		{name: "tracestate_ows_handling/tabs_and_spaces", in: [][2]string{tp00, {"tracestate", "foo=1\t \t,\t \tbar=2,\t \tbaz=3"}}, valid: true, check: stateHas("foo", "1", "bar", "2", "baz", "3")},
		{name: "tracestate_ows_handling/leading_space", in: [][2]string{tp00, {"tracestate", " foo=1"}}, valid: true, check: all(sameTrace, stateHas("foo", "1"))},
		{name: "tracestate_ows_handling/leading_tab", in: [][2]string{tp00, {"tracestate", "\tfoo=1"}}, valid: true, check: all(sameTrace, stateHas("foo", "1"))},
		{name: "tracestate_ows_handling/trailing_space", in: [][2]string{tp00, {"tracestate", "foo=1 "}}, valid: true, check: all(sameTrace, stateHas("foo", "1"))},
		{name: "tracestate_ows_handling/trailing_tab", in: [][2]string{tp00, {"tracestate", "foo=1\t"}}, valid: true, check: all(sameTrace, stateHas("foo", "1"))},
		{name: "tracestate_ows_handling/both", in: [][2]string{tp00, {"tracestate", "\t foo=1 \t"}}, valid: true, check: all(sameTrace, stateHas("foo", "1"))},
		{name: "tracestate_key_illegal_characters/space", in: [][2]string{tp00, {"tracestate", "foo =1"}}, valid: true, check: stateLacks("foo ", "foo")},
		{name: "tracestate_key_illegal_characters/uppercase", in: [][2]string{tp00, {"tracestate", "FOO=1"}}, valid: true, check: stateLacks("FOO")},
		{name: "tracestate_key_illegal_characters/dot", in: [][2]string{tp00, {"tracestate", "foo.bar=1"}}, valid: true, check: stateLacks("foo.bar")},
		{name: "tracestate_key_illegal_vendor_format/foo@", in: [][2]string{tp00, {"tracestate", "foo@=1,bar=2"}}, valid: true, level2: true, check: stateHas("foo@", "1", "bar", "2")},
		{name: "tracestate_key_illegal_vendor_format/@foo", in: [][2]string{tp00, {"tracestate", "@foo=1,bar=2"}}, valid: true, check: stateLacks("bar")},
		{name: "tracestate_key_illegal_vendor_format/foo@@bar", in: [][2]string{tp00, {"tracestate", "foo@@bar=1,bar=2"}}, valid: true, level2: true, check: stateHas("foo@@bar", "1", "bar", "2")},
		{name: "tracestate_key_illegal_vendor_format/foo@bar@baz", in: [][2]string{tp00, {"tracestate", "foo@bar@baz=1,bar=2"}}, valid: true, level2: true, check: stateHas("foo@bar@baz", "1", "bar", "2")},
		{name: "tracestate_member_count_limit/32", in: [][2]string{tp00, {"tracestate", bars(1, 10)}, {"tracestate", bars(11, 20)}, {"tracestate", bars(21, 30)}, {"tracestate", bars(31, 32)}}, valid: true,
			check: all(stateHas("bar01", "01"), stateLen(32))},
		{name: "tracestate_member_count_limit/33", in: [][2]string{tp00, {"tracestate", bars(1, 10)}, {"tracestate", bars(11, 20)}, {"tracestate", bars(21, 30)}, {"tracestate", bars(31, 33)}}, valid: true,
			check: stateLacks("bar01")},
		{name: "tracestate_key_length_limit/256", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", strings.Repeat("z", 256) + "=1"}}, valid: true, check: stateHas("foo", "1")},
		{name: "tracestate_key_length_limit/257", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", strings.Repeat("z", 257) + "=1"}}, valid: true, check: stateLacks("foo")},
		{name: "tracestate_key_length_limit/241@14", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", strings.Repeat("t", 241) + "@" + strings.Repeat("v", 14) + "=1"}}, valid: true, check: stateHas("foo", "1")},
		{name: "tracestate_key_length_limit/242@1", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", strings.Repeat("t", 242) + "@v=1"}}, valid: true, level2: true,
			check: stateHas("foo", "1", strings.Repeat("t", 242)+"@v", "1")},
		{name: "tracestate_key_length_limit/1@15", in: [][2]string{tp00, {"tracestate", "foo=1"}, {"tracestate", "t@" + strings.Repeat("v", 15) + "=1"}}, valid: true, level2: true,
			check: stateHas("foo", "1", "t@"+strings.Repeat("v", 15), "1")},
		{name: "tracestate_value_illegal_characters/equals", in: [][2]string{tp00, {"tracestate", "foo=bar=baz"}}, valid: true, check: stateLacks("foo")},
		{name: "tracestate_value_illegal_characters/empty", in: [][2]string{tp00, {"tracestate", "foo=,bar=3"}}, valid: true, check: stateLacks("foo", "bar")},
		{name: "multiple_requests_with_valid_traceparent", calls: 3, in: [][2]string{tp(w3cTraceID, "01")}, valid: true, check: all(sameTrace, distinctParents(3))},
		{name: "multiple_requests_without_traceparent", calls: 3, check: distinctParents(3)},
		{name: "multiple_requests_with_illegal_traceparent", calls: 3, in: [][2]string{tp(strings.Repeat("0", 32), "01")}, check: all(distinctParents(3), func(t *testing.T, got []callback) {
			for _, c := range got {
				if c.traceID == strings.Repeat("0", 32) {
					t.Error("all-zero trace-id forwarded")
				}
			}
		})},

		// Beyond the suite: what the current specification asks where the suite is
		// silent, and where this sidecar chose among what it allows.
		{name: "level2/duplicated_key_drops_its_members_only", in: [][2]string{tp00, {"tracestate", "foo=1,bar=2,foo=3"}}, valid: true, level2: true,
			check: all(sameTrace, stateLacks("foo"), stateHas("bar", "2"), stateLen(1))},
		{name: "level2/sampled_with_tracestate", in: [][2]string{tp(w3cTraceID, "01"), {"tracestate", "foo=1,bar=2"}}, valid: true,
			check: all(sameTrace, stateHas("foo", "1", "bar", "2"))},
		{name: "level2/new_trace_is_sampled_and_random", check: func(t *testing.T, got []callback) {
			for _, c := range got {
				// Export's flags are the OpenTelemetry SDK's, which sets no random flag.
				if want := map[bool]string{true: "03", false: "01"}[c.mode == "participate"]; c.version != "00" || c.flags != want {
					t.Errorf("new trace sent as version %s flags %s; want 00 and %s (sampled at sample ratio 1, random trace-id)", c.version, c.flags, want)
				}
			}
		}},
		{name: "level2/flags_kept_reserved_zeroed", in: [][2]string{tp(w3cTraceID, "ff")}, valid: true, check: all(sameTrace, func(t *testing.T, got []callback) {
			for _, c := range got {
				if c.flags != "03" {
					t.Errorf("flags ff forwarded as %s, want 03 (sampled, random; reserved bits zero)", c.flags)
				}
			}
		})},
		{name: "level2/future_version_downgraded", in: [][2]string{{"traceparent", "cc-" + w3cTraceID + "-" + w3cParentID + "-00-future"}, {"tracestate", "foo=1"}}, valid: true,
			check: all(sameTrace, stateHas("foo", "1"), func(t *testing.T, got []callback) {
				for _, c := range got {
					if c.version != "00" || c.flags != "00" {
						t.Errorf("version cc forwarded as version %s flags %s, want 00 and 00", c.version, c.flags)
					}
				}
			})},
	}
}

// w3cState is a received tracestate as the suite reads it: members in order, OWS
// and empty members skipped, the first of a key kept; a member that does not match
// Level 2's grammar fails the test (the sidecar must never send one).
type w3cState struct {
	keys   []string
	values map[string]string
}

var w3cMember = regexp.MustCompile(`^([a-z0-9][a-z0-9_\-*/@]{0,255})=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])$`)

func parseW3CState(t *testing.T, lines []string) *w3cState {
	t.Helper()
	s := &w3cState{values: map[string]string{}}
	for _, line := range lines {
		for _, m := range regexp.MustCompile(`[ \t]*,[ \t]*`).Split(line, -1) {
			m = strings.Trim(m, " \t")
			if m == "" {
				continue
			}
			sub := w3cMember.FindStringSubmatch(m)
			if sub == nil {
				t.Fatalf("sent tracestate member %q is not of the grammar", m)
			}
			if _, ok := s.values[sub[1]]; !ok {
				s.keys = append(s.keys, sub[1])
				s.values[sub[1]] = sub[2]
			}
		}
	}
	return s
}

func (s *w3cState) get(k string) (string, bool) { v, ok := s.values[k]; return v, ok }

func (s *w3cState) String() string {
	var b strings.Builder
	for i, k := range s.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + s.values[k])
	}
	return b.String()
}

var w3cTraceparent = regexp.MustCompile(`^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)

// readCallback reads the recorder's request as the suite does: exactly one
// traceparent, of version 00's form, with no all-zero id.
func readCallback(t *testing.T, mode string, h http.Header) callback {
	t.Helper()
	lines := h["Traceparent"]
	if len(lines) != 1 {
		t.Fatalf("call-back has %d traceparent lines %q; the suite expects exactly one", len(lines), lines)
	}
	m := w3cTraceparent.FindStringSubmatch(lines[0])
	if m == nil || m[1] == "ff" || m[2] == strings.Repeat("0", 32) || m[3] == strings.Repeat("0", 16) {
		t.Fatalf("call-back's traceparent %q is not valid", lines[0])
	}
	return callback{mode: mode, h: h, version: m[1], traceID: m[2], parent: m[3], flags: m[4], state: parseW3CState(t, h["Tracestate"])}
}

// w3cRecorder is the suite's call-back server: it keeps each request's headers by
// path.
type w3cRecorder struct {
	mu   sync.Mutex
	seen map[string]http.Header
	srv  *httptest.Server
}

func newW3CRecorder(t *testing.T) *w3cRecorder {
	r := &w3cRecorder{seen: map[string]http.Header{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen[req.URL.Path] = req.Header.Clone()
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *w3cRecorder) take(path string) (http.Header, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.seen[path]
	delete(r.seen, path)
	return h, ok
}

// w3cApp is the service behind the inbound proxy: for each request it calls the
// recorder the number of times X-Calls asks, through the outbound proxy, forwarding
// the traceparent and tracestate lines it received as an app that only propagates
// them does. It answers once every call-back is done.
func w3cApp(t *testing.T, outbound string) *httptest.Server {
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: outbound})}}
	t.Cleanup(client.CloseIdleConnections)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.Header.Get("X-Calls"))
		for i := range n {
			req, err := http.NewRequest(http.MethodGet, r.Header.Get("X-Callback")+"/"+strconv.Itoa(i), nil)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			for _, k := range []string{"Traceparent", "Tracestate"} {
				if v, ok := r.Header[k]; ok {
					req.Header[k] = v
				}
			}
			resp, err := client.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}))
	t.Cleanup(app.Close)
	return app
}

// sendRaw writes a request with exactly these header lines (names as given, in
// order, repeated names as separate lines) and reads the answer.
func sendRaw(t *testing.T, addr, target, host string, lines [][2]string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", target, host)
	for _, kv := range lines {
		fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
}

// w3cModes are the proxy options of each tracing.mode, and the recorder of the spans
// that export mode exports.
func w3cModes() (map[string]Options, *tracetest.SpanRecorder) {
	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())), sdktrace.WithSpanProcessor(recorder))
	return map[string]Options{
		"participate": {Trace: TraceParticipate, SampleRatio: 1},
		"export":      {Trace: TraceExport, TracerProvider: tp},
		"passthrough": {Trace: TracePassthrough},
	}, recorder
}

// TestW3CTraceContext runs the suite's level 2 cases through the chain and through
// the outbound proxy alone, in each trace mode. Participate and export must pass every
// case; passthrough must forward a valid traceparent and its tracestate lines
// unchanged and send neither otherwise.
func TestW3CTraceContext(t *testing.T) {
	rec := newW3CRecorder(t)
	modes, spans := w3cModes()
	for mode, opt := range modes {
		t.Run(mode, func(t *testing.T) {
			out := startProxy(t, opt)
			app := w3cApp(t, out.OutboundAddr().String())
			opt.App = hostOf(app.URL)
			in := startProxy(t, opt)
			for _, setup := range []string{"chain", "outbound"} {
				t.Run(setup, func(t *testing.T) {
					for i, c := range w3cCases() {
						t.Run(c.name, func(t *testing.T) {
							calls := max(c.calls, 1)
							base := fmt.Sprintf("/%s/%s/%d", mode, setup, i)
							if setup == "chain" {
								lines := append([][2]string{{"X-Calls", strconv.Itoa(calls)}, {"X-Callback", rec.srv.URL + base}}, c.in...)
								sendRaw(t, in.InboundAddr().String(), "/", "app.test", lines)
							} else {
								for n := range calls {
									target := rec.srv.URL + base + "/" + strconv.Itoa(n)
									sendRaw(t, out.OutboundAddr().String(), target, hostOf(rec.srv.URL), c.in)
								}
							}
							var got []callback
							for n := range calls {
								h, ok := rec.take(base + "/" + strconv.Itoa(n))
								if !ok {
									t.Fatalf("call-back %d did not reach the recorder", n)
								}
								if mode == "passthrough" {
									checkPassthrough(t, c, h)
									continue
								}
								got = append(got, readCallback(t, mode, h))
							}
							if mode != "passthrough" {
								c.check(t, got)
							}
						})
					}
				})
			}
		})
	}
	// Export mode exported the spans of sampled requests, with the caller's tracestate
	// where otel's Level 1 parser can hold it.
	var withState bool
	for _, s := range spans.Ended() {
		withState = withState || s.SpanContext().TraceState().String() == "foo=1,bar=2"
	}
	if n := len(spans.Ended()); n == 0 || !withState {
		t.Errorf("export mode ended %d spans, one with the tracestate foo=1,bar=2: %v", n, withState)
	}
}

// checkPassthrough: a valid traceparent goes on with its tracestate lines as sent
// (as HTTP reads them: OWS around a value is not part of it); otherwise neither.
func checkPassthrough(t *testing.T, c w3cCase, h http.Header) {
	t.Helper()
	var wantTP, wantTS []string
	if c.valid {
		for _, kv := range c.in {
			switch http.CanonicalHeaderKey(kv[0]) {
			case "Traceparent":
				wantTP = append(wantTP, strings.Trim(kv[1], " \t"))
			case "Tracestate":
				wantTS = append(wantTS, strings.Trim(kv[1], " \t"))
			}
		}
	}
	if got := h["Traceparent"]; strings.Join(got, "\n") != strings.Join(wantTP, "\n") || len(got) != len(wantTP) {
		t.Errorf("traceparent %q, want %q byte for byte", got, wantTP)
	}
	if got := h["Tracestate"]; strings.Join(got, "\n") != strings.Join(wantTS, "\n") || len(got) != len(wantTS) {
		t.Errorf("tracestate %q, want %q byte for byte", got, wantTS)
	}
}

// TestW3CTraceContext_TracestateKey: with tracing.tracestate_key each hop that takes
// part writes its parent-id under the key at the left of tracestate, replacing the
// entry of the hop before (the inbound proxy's, here) and any the caller sent.
func TestW3CTraceContext_TracestateKey(t *testing.T) {
	rec := newW3CRecorder(t)
	opt := Options{Trace: TraceParticipate, SampleRatio: 1, TracestateKey: "ctxprop@acme"}
	out := startProxy(t, opt)
	opt.App = hostOf(w3cApp(t, out.OutboundAddr().String()).URL)
	in := startProxy(t, opt)
	sendRaw(t, in.InboundAddr().String(), "/", "app.test", [][2]string{
		{"X-Calls", "1"}, {"X-Callback", rec.srv.URL + "/key"},
		tp(w3cTraceID, "01"), {"tracestate", "rojo=1,ctxprop@acme=caller,congo=2"},
	})
	h, ok := rec.take("/key/0")
	if !ok {
		t.Fatal("no call-back")
	}
	c := readCallback(t, "participate", h)
	if got, want := c.state.String(), "ctxprop@acme="+c.parent+",rojo=1,congo=2"; got != want {
		t.Errorf("tracestate %q, want %q", got, want)
	}
	if _, err := New(Options{Trace: TraceParticipate, TracestateKey: "Ctxprop"}); err == nil || !strings.Contains(err.Error(), "tracestate key") {
		t.Errorf("New with an invalid tracestate key: %v, want an error naming it", err)
	}
}

// TestParticipate_CorrelatesWithoutTraceparent: a request from outside that brings a
// context but no traceparent starts a trace at the inbound proxy, so the app's
// outbound call, which forwards only traceparent, finds the context by trace-id. In
// passthrough there is no trace-id to find it by.
func TestParticipate_CorrelatesWithoutTraceparent(t *testing.T) {
	for _, tc := range []struct {
		mode       TraceMode
		correlated bool
	}{{TraceParticipate, true}, {TracePassthrough, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			downstream := make(chan http.Header, 1)
			remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				downstream <- r.Header.Clone()
			}))
			defer remote.Close()
			var client *http.Client
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, remote.URL, nil)
				if v := r.Header.Get("Traceparent"); v != "" {
					req.Header.Set("Traceparent", v) // and nothing else
				}
				res, err := client.Do(req)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
				res.Body.Close()
			}))
			defer app.Close()
			p := startProxy(t, Options{App: hostOf(app.URL), TrustedSources: loopback, Trace: tc.mode, SampleRatio: 1})
			client = proxiedClient(t, p)

			res, body := get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{"Baggage": "ctx.name=checkout"})
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, body)
			}
			h := <-downstream
			if got := strings.Contains(h.Get("Baggage"), "ctx.name=checkout"); got != tc.correlated {
				t.Errorf("downstream baggage %q; context found by trace-id = %v, want %v", h.Get("Baggage"), got, tc.correlated)
			}
		})
	}
}
