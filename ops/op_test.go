package ops

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestKind_String(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		want string
	}{
		{Incr, "incr"}, {Put, "put"}, {Del, "del"}, {Add, "add"}, {Rem, "rem"},
		{0, "Kind(0)"}, {6, "Kind(6)"},
	} {
		if got := tc.kind.String(); got != tc.want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(tc.kind), got, tc.want)
		}
	}
}

func TestParseKind(t *testing.T) {
	for k := Incr; k <= Rem; k++ {
		got, err := ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", k.String(), got, err, k)
		}
	}
	for _, s := range []string{"", "INCR", "inc", "Kind(1)", "put "} {
		if k, err := ParseKind(s); err == nil {
			t.Errorf("ParseKind(%q) = %v, want an error", s, k)
		}
	}
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	for _, tc := range []struct {
		name string
		op   Op
		want string // substring of the error; empty for valid
	}{
		{"incr", Op{Kind: Incr, Key: "orders", By: -3, TTL: time.Hour}, ""},
		{"put", Op{Kind: Put, Map: "m", Key: "k", Value: json.RawMessage(`{"a":[1,null]}`)}, ""},
		{"put null", Op{Kind: Put, Map: "m", Key: "k", Value: json.RawMessage(`null`)}, ""},
		{"del", Op{Kind: Del, Map: "m", Key: "k"}, ""},
		{"add", Op{Kind: Add, Set: "s", Member: "a b ✓", TTL: time.Second}, ""},
		{"rem", Op{Kind: Rem, Set: "s", Member: "x"}, ""},
		{"name of 200 bytes", Op{Kind: Rem, Set: long, Member: long}, ""},
		{"max ttl", Op{Kind: Incr, Key: "k", By: 1, TTL: MaxTTL}, ""},

		{"zero kind", Op{Key: "k"}, "invalid op kind 0"},
		{"kind 6", Op{Kind: 6}, "invalid op kind 6"},
		{"incr without by", Op{Kind: Incr, Key: "k"}, `"by" is zero`},
		{"incr without key", Op{Kind: Incr, By: 1}, `"key" is empty`},
		{"incr with map", Op{Kind: Incr, Key: "k", By: 1, Map: "m"}, `incr does not take "map"`},
		{"del with ttl", Op{Kind: Del, Map: "m", Key: "k", TTL: time.Second}, `del does not take "ttl"`},
		{"rem with value", Op{Kind: Rem, Set: "s", Member: "x", Value: json.RawMessage(`1`)}, `rem does not take "value"`},
		{"put without value", Op{Kind: Put, Map: "m", Key: "k"}, `"value" is missing`},
		{"put bad json", Op{Kind: Put, Map: "m", Key: "k", Value: json.RawMessage(`{`)}, `"value" is not valid JSON`},
		{"put bad utf-8", Op{Kind: Put, Map: "m", Key: "k", Value: json.RawMessage("\"\xff\"")}, `not valid UTF-8`},
		{"name too long", Op{Kind: Add, Set: long + "x", Member: "m"}, `"set" is 201 bytes; want 1 to 200`},
		{"name bad utf-8", Op{Kind: Add, Set: "a\xffb", Member: "m"}, `"set" is not valid UTF-8`},
		{"control character", Op{Kind: Add, Set: "s", Member: "a\nb"}, `"member" holds control character U+000A at byte 1`},
		{"C1 control", Op{Kind: Del, Map: "m\u0085", Key: "k"}, `"map" holds control character U+0085`},
		{"negative ttl", Op{Kind: Add, Set: "s", Member: "m", TTL: -time.Second}, `"ttl" -1s is negative`},
		{"huge ttl", Op{Kind: Add, Set: "s", Member: "m", TTL: MaxTTL + 1}, `over the maximum`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.op)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate(%+v) = %v, want nil", tc.op, err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate(%+v) = nil, want an error containing %q", tc.op, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate(%+v) = %q, want it to contain %q", tc.op, err, tc.want)
			}
		})
	}
}
