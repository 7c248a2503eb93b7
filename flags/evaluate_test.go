package flags

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func mustFlag(t testing.TB, key, def string) *Flag {
	t.Helper()
	f, err := ParseFlag(key, []byte(def))
	if err != nil {
		t.Fatalf("ParseFlag(%s): %v", key, err)
	}
	return f
}

var timeZero = time.Unix(0, 0)

const colors = `"variants": {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}`

func TestMurmur3(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
	}{
		{"", 0},
		{"hello", 0x248bfa47},
		{"test", 0xba6bd213},
		{"The quick brown fox jumps over the lazy dog", 0x2e4ff723},
	}
	for _, tt := range tests {
		if got := murmur3(tt.in); got != tt.want {
			t.Errorf("murmur3(%q) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

func TestFractional_StableAndDistributed(t *testing.T) {
	f := mustFlag(t, "rollout", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		"targeting": {"fractional": [["on", 30], ["off", 70]]}}`)
	counts := map[string]int{}
	const n = 20000
	for i := range n {
		ctx := map[string]any{"targetingKey": fmt.Sprintf("user-%d", i)}
		first := f.Evaluate(ctx, time.Now())
		for range 3 {
			if again := f.Evaluate(ctx, time.Now()); again.Variant != first.Variant {
				t.Fatalf("user-%d: %q then %q; a key must always get the same variant", i, first.Variant, again.Variant)
			}
		}
		counts[first.Variant]++
	}
	if got := float64(counts["on"]) / n; got < 0.28 || got > 0.32 {
		t.Errorf("share of on = %.3f, want 0.30±0.02 (%v)", got, counts)
	}
	// Weights default to 1 and need not sum to 100.
	g := mustFlag(t, "even", `{"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
		"targeting": {"fractional": [["a"], ["b"]]}}`)
	counts = map[string]int{}
	for i := range 10000 {
		counts[g.Evaluate(map[string]any{"targetingKey": fmt.Sprint(i)}, time.Now()).Variant]++
	}
	if counts["a"] < 4700 || counts["a"] > 5300 {
		t.Errorf("equal weights split %v, want about 5000 each", counts)
	}
}

func TestEvaluate_Semantics(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		def         string
		ctx         map[string]any
		wantVariant string
		wantValue   string
		wantReason  string
		wantCode    string
	}{
		{"static", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`, nil, "on", "true", ReasonStatic, ""},
		{"empty targeting is static", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{}}`, nil, "off", "false", ReasonStatic, ""},
		{"disabled", `{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`, nil, "", "", ReasonDisabled, ""},
		{"targeting null is default", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"==":[{"var":"tier"},"gold"]},"on",null]}}`,
			map[string]any{"tier": "silver"}, "off", "false", ReasonDefault, ""},
		{"targeting match", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"==":[{"var":"tier"},"gold"]},"on",null]}}`,
			map[string]any{"tier": "gold"}, "on", "true", ReasonTargetingMatch, ""},
		{"boolean result names a variant", `{"state":"ENABLED","variants":{"true":"yes","false":"no"},"defaultVariant":"false","targeting":{"==":[{"var":"n"},1]}}`,
			map[string]any{"n": 1.0}, "true", `"yes"`, ReasonTargetingMatch, ""},
		{"unknown variant is an error", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"cat":["o","x"]}}`,
			nil, "", "", "", CodeGeneral},
		{"fractional without targetingKey", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"fractional":[["on",50],["off",50]]}}`,
			map[string]any{"email": "a@b.c"}, "", "", "", CodeTargetingKeyMissing},
		{"targetingKey not a string", `{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}`,
			map[string]any{"targetingKey": 5.0}, "", "", "", CodeInvalidContext},
		{"ends_with", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"ends_with":[{"var":"email"},"@faas.com"]},"on","off"]}}`,
			map[string]any{"email": "rachel@faas.com"}, "on", "true", ReasonTargetingMatch, ""},
		{"starts_with", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"starts_with":[{"var":"id"},"abc"]},"on","off"]}}`,
			map[string]any{"id": "xabc"}, "off", "false", ReasonTargetingMatch, ""},
		{"starts_with on a number is null", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"starts_with":[{"var":"id"},"1"]},"on",null]}}`,
			map[string]any{"id": 12.0}, "off", "false", ReasonDefault, ""},
		{"sem_ver >=", `{"state":"ENABLED","variants":{"new":"n","old":"o"},"defaultVariant":"old","targeting":{"if":[{"sem_ver":[{"var":"version"},">=","1.2.0"]},"new","old"]}}`,
			map[string]any{"version": "1.10.0"}, "new", `"n"`, ReasonTargetingMatch, ""},
		{"sem_ver with v prefix and prerelease", `{"state":"ENABLED","variants":{"new":"n","old":"o"},"defaultVariant":"old","targeting":{"if":[{"sem_ver":[{"var":"version"},"<","v1.0.0"]},"new","old"]}}`,
			map[string]any{"version": "1.0.0-rc.1"}, "new", `"n"`, ReasonTargetingMatch, ""},
		{"sem_ver ^", `{"state":"ENABLED","variants":{"new":"n","old":"o"},"defaultVariant":"old","targeting":{"if":[{"sem_ver":[{"var":"version"},"^","2.0.0"]},"new","old"]}}`,
			map[string]any{"version": "2.7.1"}, "new", `"n"`, ReasonTargetingMatch, ""},
		{"sem_ver ~", `{"state":"ENABLED","variants":{"new":"n","old":"o"},"defaultVariant":"old","targeting":{"if":[{"sem_ver":[{"var":"version"},"~","2.7.0"]},"new","old"]}}`,
			map[string]any{"version": "2.8.0"}, "old", `"o"`, ReasonTargetingMatch, ""},
		{"sem_ver invalid version is null", `{"state":"ENABLED","variants":{"new":"n","old":"o"},"defaultVariant":"old","targeting":{"if":[{"sem_ver":[{"var":"version"},"=","1.0.0"]},"new",null]}}`,
			map[string]any{"version": "one"}, "old", `"o"`, ReasonDefault, ""},
		{"$flagd.timestamp after", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{">=":[{"var":"$flagd.timestamp"},1795000000]},"on","off"]}}`,
			nil, "on", "true", ReasonTargetingMatch, ""},
		{"$flagd.timestamp before", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{">=":[{"var":"$flagd.timestamp"},1900000000]},"on","off"]}}`,
			nil, "off", "false", ReasonTargetingMatch, ""},
		{"$flagd.flagKey", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"==":[{"var":"$flagd.flagKey"},"f"]},"on","off"]}}`,
			nil, "on", "true", ReasonTargetingMatch, ""},
		{"object variant", `{"state":"ENABLED","variants":{"a":{"size":1},"b":{"size":2}},"defaultVariant":"a","targeting":{"if":[{"in":[{"var":"region"},["eu","us"]]},"b"]}}`,
			map[string]any{"region": "eu"}, "b", `{"size":2}`, ReasonTargetingMatch, ""},
		{"number variant", `{"state":"ENABLED","variants":{"low":1,"high":1e3},"defaultVariant":"low"}`, nil, "low", "1", ReasonStatic, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustFlag(t, "f", tt.def)
			res := f.Evaluate(tt.ctx, now)
			if got, want := res.ErrorCode, tt.wantCode; got != want {
				t.Fatalf("error code = %q, want %q (%+v)", got, want, res)
			}
			if got, want := res.Variant, tt.wantVariant; got != want {
				t.Errorf("variant = %q, want %q", got, want)
			}
			if got, want := string(res.Value), tt.wantValue; got != want {
				t.Errorf("value = %s, want %s", got, want)
			}
			if got, want := res.Reason, tt.wantReason; got != want {
				t.Errorf("reason = %q, want %q", got, want)
			}
			if res.ErrorCode != "" && res.ErrorDetails == "" {
				t.Error("an error without details")
			}
		})
	}
}

func TestEvaluate_DoesNotModifyContext(t *testing.T) {
	f := mustFlag(t, "f", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"var":"$flagd.flagKey"},"on"]}}`)
	ctx := map[string]any{"a": "b"}
	f.Evaluate(ctx, time.Now())
	if got, want := len(ctx), 1; got != want {
		t.Errorf("context has %d entries after Evaluate, want %d: %v", got, want, ctx)
	}
}

func TestEvaluate_MetadataJSON(t *testing.T) {
	ff, probs, err := ParseFile("file:x", []byte(`{"metadata":{"flagSetId":"shop","version":1},
		"flags":{"f":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","metadata":{"version":2,"owner":"pay"}}}}`))
	if err != nil || len(probs) != 0 {
		t.Fatal(err, probs)
	}
	data, _ := json.Marshal(ff["f"].Evaluate(nil, time.Now()))
	if got, want := string(data), `{"key":"f","value":true,"variant":"on","reason":"STATIC","metadata":{"flagSetId":"shop","owner":"pay","version":2}}`; got != want {
		t.Errorf("result JSON\n got %s\nwant %s", got, want)
	}
}

// A bucketing expression that gives null buckets on $flagd.flagKey and the targetingKey,
// as the shorthand does (flagd's fractional); without a targetingKey it is null, the
// default (flagd-testbed's fractional-null-bucket-key-flag), not TARGETING_KEY_MISSING.
func TestFractional_MissingBucketingValue(t *testing.T) {
	f := mustFlag(t, "f", `{"state":"ENABLED","variants":{"a":1,"b":2},"defaultVariant":"a",
		"targeting":{"fractional":[{"var":"email"},["a",50],["b",50]]}}`)
	res := f.Evaluate(map[string]any{}, time.Now())
	if res.ErrorCode != "" || res.Reason != ReasonDefault {
		t.Errorf("= %+v, want the default variant, reason DEFAULT", res)
	}
	res = f.Evaluate(map[string]any{"email": "x@y"}, time.Now())
	if res.Reason != ReasonSplit {
		t.Errorf("with an email = %+v, want SPLIT", res)
	}
	short := mustFlag(t, "f", `{"state":"ENABLED","variants":{"a":1,"b":2},"defaultVariant":"a",
		"targeting":{"fractional":[["a",50],["b",50]]}}`)
	seen := map[string]bool{}
	for i := range 64 {
		ctx := map[string]any{"targetingKey": fmt.Sprintf("user-%d", i)}
		got, want := f.Evaluate(ctx, time.Now()), short.Evaluate(ctx, time.Now())
		if got.Variant != want.Variant || got.Reason != ReasonSplit {
			t.Fatalf("%v: %+v, want %+v as the shorthand buckets", ctx, got, want)
		}
		seen[got.Variant] = true
	}
	if len(seen) != 2 {
		t.Errorf("64 keys all landed on %v", seen)
	}
}
