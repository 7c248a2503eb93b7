package flags

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// Conformance with the current flagd release (0.16) as its flagd-testbed pins it
// (gherkin/evaluation.feature @no-default-variant, gherkin/targeting.feature @semver and
// @fractional-v2, flags/edge-case-flags.json): a flag file of the testbed's shape is loaded
// by a sidecar and every answer is read over OFREP on a loopback socket, as a provider
// reads it.

// ofrepOne posts ctx to the single-flag OFREP route and returns the status and the decoded
// answer, keeping field presence (a value that is absent is not a value that is null).
func (e *env) ofrepOne(t testing.TB, key string, ctx map[string]any) (int, map[string]json.RawMessage) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"context": ctx})
	if err != nil {
		t.Fatal(err)
	}
	a := e.do(t, "POST", "/ofrep/v1/evaluate/flags/"+key, string(body))
	var m map[string]json.RawMessage
	a.json(t, &m)
	return a.status, m
}

func str(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return string(raw)
	}
	return s
}

// flagdFile opens a sidecar serving the flag file text.
func flagdFile(t *testing.T, text string) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flags.json")
	writeFile(t, path, text)
	e := newEnv(t, nil, Options{Files: []string{path}})
	if p := e.flags.Problems(); len(p) != 0 {
		t.Fatalf("the flag file was refused: %+v", p)
	}
	return e
}

const noDefaultFlags = `{"flags": {
	"null-default-flag": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": null},
	"undefined-default-flag": {"state": "ENABLED", "variants": {"small": 10, "big": 1000}},
	"no-default-flag-null-targeting-variant": {"state": "ENABLED", "variants": {"normal": "CFO", "special": "CEO"},
		"targeting": {"if": [{"==": ["jobs@orange.com", {"var": ["email"]}]}, "special", null]}},
	"no-default-flag-undefined-targeting-variant": {"state": "ENABLED", "variants": {"normal": "CFO", "special": "CEO"},
		"targeting": {"if": [{"==": ["jobs@orange.com", {"var": ["email"]}]}, "special"]}}
}}`

// A defaultVariant that is null or absent loads; where the default variant would apply the
// answer is reason DEFAULT with neither value nor variant, so the caller uses its code
// default (flagd ≥ 0.14, OFREP ADR-0006); a targeting match still answers its variant.
func TestFlagd_NoDefaultVariant(t *testing.T) {
	e := flagdFile(t, noDefaultFlags)
	tests := []struct {
		key, email        string
		wantReason        string
		wantValue, wantVa string // "" means the field must be absent
	}{
		{"null-default-flag", "", ReasonDefault, "", ""},
		{"undefined-default-flag", "", ReasonDefault, "", ""},
		{"no-default-flag-null-targeting-variant", "wozniak@orange.com", ReasonDefault, "", ""},
		{"no-default-flag-null-targeting-variant", "jobs@orange.com", ReasonTargetingMatch, `"CEO"`, "special"},
		{"no-default-flag-undefined-targeting-variant", "wozniak@orange.com", ReasonDefault, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.key+"/"+tt.email, func(t *testing.T) {
			status, m := e.ofrepOne(t, tt.key, map[string]any{"targetingKey": "u", "email": tt.email})
			if status != http.StatusOK {
				t.Fatalf("status %d %v, want 200", status, m)
			}
			if got, want := str(m["reason"]), tt.wantReason; got != want {
				t.Errorf("reason = %q, want %q", got, want)
			}
			if got, want := string(m["value"]), tt.wantValue; got != want {
				t.Errorf("value = %s, want %s (absent when empty)", got, want)
			}
			if got, want := str(m["variant"]), tt.wantVa; got != want {
				t.Errorf("variant = %q, want %q (absent when empty)", got, want)
			}
			if _, ok := m["errorCode"]; ok {
				t.Errorf("errorCode present: %v", m)
			}
		})
	}

	// The bulk answer carries them too, as successes without a value.
	a := e.do(t, "POST", "/ofrep/v1/evaluate/flags", `{"context":{"targetingKey":"u"}}`)
	var bulk struct {
		Flags []map[string]json.RawMessage `json:"flags"`
	}
	a.json(t, &bulk)
	if a.status != http.StatusOK || len(bulk.Flags) != 4 {
		t.Fatalf("bulk: %d %s", a.status, a.body)
	}
	for _, f := range bulk.Flags {
		if _, ok := f["value"]; ok || str(f["reason"]) != ReasonDefault {
			t.Errorf("bulk entry %v: want reason DEFAULT and no value", f)
		}
	}
}

const semverFlags = `{"flags": {
	"equal-greater-lesser-version-flag": {"state": "ENABLED",
		"variants": {"equal": "equal", "greater": "greater", "lesser": "lesser", "none": "none"}, "defaultVariant": "none",
		"targeting": {"if": [{"sem_ver": [{"var": "version"}, "=", "2.0.0"]}, "equal",
			{"if": [{"sem_ver": [{"var": "version"}, ">", "2.0.0"]}, "greater",
				{"if": [{"sem_ver": [{"var": "version"}, "<", "2.0.0"]}, "lesser", "none"]}]}]}},
	"major-minor-version-flag": {"state": "ENABLED", "variants": {"minor": "minor", "major": "major", "none": "none"},
		"defaultVariant": "none",
		"targeting": {"if": [{"sem_ver": [{"var": "version"}, "~", "3.0.0"]}, "minor",
			{"if": [{"sem_ver": [{"var": "version"}, "^", "3.0.0"]}, "major", "none"]}]}},
	"semver-v-prefix-flag": {"state": "ENABLED", "variants": {"match": "match", "no-match": "no-match"},
		"defaultVariant": "no-match",
		"targeting": {"if": [{"sem_ver": [{"var": "version"}, "=", "v1.0.0"]}, "match", "no-match"]}},
	"semver-partial-version-flag": {"state": "ENABLED", "variants": {"match": "match", "no-match": "no-match"},
		"defaultVariant": "no-match",
		"targeting": {"if": [{"sem_ver": [{"var": "version"}, "^", "1"]}, "match", "no-match"]}},
	"semver-numeric-target-flag": {"state": "ENABLED", "variants": {"match": "match", "no-match": "no-match"},
		"defaultVariant": "no-match",
		"targeting": {"if": [{"sem_ver": [{"var": "version"}, ">=", 1.5]}, "match", "no-match"]}},
	"semver-invalid-version-flag": {"state": "ENABLED", "variants": {"true": "true", "false": "false", "fallback": "fallback"},
		"defaultVariant": "fallback",
		"targeting": {"if": [{"sem_ver": [{"var": "version"}, "=", "1.0.0"]}, "true", "false"]}},
	"semver-build-metadata-flag": {"state": "ENABLED", "variants": {"match": "match", "no-match": "no-match"},
		"defaultVariant": "no-match",
		"targeting": {"if": [{"sem_ver": [{"var": "version"}, "=", "1.0.0+build"]}, "match", "no-match"]}}
}}`

// sem_ver normalises versions as flagd does: a leading "v" or "V", numbers (an attribute
// {"version": 1}, a literal 1.5), partial versions, build metadata ignored. The table is
// flagd-testbed's targeting.feature @semver, plus numeric targets.
func TestFlagd_SemVer(t *testing.T) {
	e := flagdFile(t, semverFlags)
	tests := []struct {
		key     string
		version any
		want    string
	}{
		{"equal-greater-lesser-version-flag", "2.0.0", "equal"},
		{"equal-greater-lesser-version-flag", "2.1.0", "greater"},
		{"equal-greater-lesser-version-flag", "1.9.0", "lesser"},
		{"equal-greater-lesser-version-flag", "2.0.0-alpha", "lesser"},
		{"equal-greater-lesser-version-flag", "2.0.0.0", "none"},
		{"major-minor-version-flag", "3.0.1", "minor"},
		{"major-minor-version-flag", "3.1.0", "major"},
		{"major-minor-version-flag", "4.0.0", "none"},
		{"semver-v-prefix-flag", "1.0.0", "match"},
		{"semver-v-prefix-flag", "v1.0.0", "match"},
		{"semver-v-prefix-flag", "V1.0.0", "match"},
		{"semver-v-prefix-flag", "2.0.0", "no-match"},
		{"semver-partial-version-flag", "1.5.0", "match"},
		{"semver-partial-version-flag", "1.0.0", "match"},
		{"semver-partial-version-flag", "1.0", "match"},
		{"semver-partial-version-flag", "1", "match"},
		{"semver-partial-version-flag", 1.0, "match"},
		{"semver-partial-version-flag", "V1", "match"},
		{"semver-partial-version-flag", "2.0.0", "no-match"},
		{"semver-partial-version-flag", 2.0, "no-match"},
		{"semver-numeric-target-flag", 2.0, "match"},
		{"semver-numeric-target-flag", "1.5.0", "match"},
		{"semver-numeric-target-flag", "1.4.9", "no-match"},
		{"semver-build-metadata-flag", "1.0.0", "match"},
		{"semver-build-metadata-flag", "1.0.0+other", "match"},
		{"semver-build-metadata-flag", "2.0.0", "no-match"},
		// Bad input gives null, which if reads as false, as flagd's own evaluator does
		// (README: flagd-testbed's @operator-errors, which expects "fallback", is not matched).
		{"semver-invalid-version-flag", "not-a-version", "false"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"/"+str(mustJSON(t, tt.version)), func(t *testing.T) {
			status, m := e.ofrepOne(t, tt.key, map[string]any{"version": tt.version})
			if status != http.StatusOK {
				t.Fatalf("status %d %s", status, mustJSON(t, m))
			}
			if got, want := str(m["value"]), tt.want; got != want {
				t.Errorf("value = %q, want %q (%s)", got, want, mustJSON(t, m))
			}
		})
	}
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const fractionalFlags = `{"flags": {
	"fractional-flag": {"state": "ENABLED", "defaultVariant": "wild",
		"variants": {"clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades", "wild": "wild"},
		"targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]},
			["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}},
	"fractional-flag-shorthand": {"state": "ENABLED", "variants": {"heads": "heads", "tails": "tails", "draw": "draw"},
		"defaultVariant": "draw", "targeting": {"fractional": [["heads"], ["tails", 1]]}},
	"fractional-flag-A-shared-seed": {"state": "ENABLED", "defaultVariant": "wild",
		"variants": {"clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades", "wild": "wild"},
		"targeting": {"fractional": [{"cat": ["shared-seed", {"var": "user.name"}]},
			["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}},
	"fractional-flag-B-shared-seed": {"state": "ENABLED", "defaultVariant": "wild",
		"variants": {"clubs": "ace-of-clubs", "diamonds": "ace-of-diamonds", "hearts": "ace-of-hearts", "spades": "ace-of-spades", "wild": "wild"},
		"targeting": {"fractional": [{"cat": ["shared-seed", {"var": "user.name"}]},
			["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]}},
	"fractional-hash-edge-flag": {"state": "ENABLED", "variants": {"lower": "lower", "upper": "upper"}, "defaultVariant": "lower",
		"targeting": {"fractional": [{"var": "targetingKey"}, ["lower", 50], ["upper", 50]]}},
	"fractional-nested-if-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"premium": "premium", "standard": "standard", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"},
			[{"if": [{"==": [{"var": "tier"}, "premium"]}, "premium", "standard"]}, 50], ["standard", 50]]}},
	"fractional-nested-var-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"red": "red", "green": "green", "blue": "blue", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"}, [{"var": "color"}, 50], ["blue", 50]]}},
	"fractional-nested-weight-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"red": "red", "blue": "blue", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"},
			["red", {"if": [{"==": [{"var": "tier"}, "premium"]}, 100, 0]}], ["blue", 10]]}},
	"fractional-as-condition-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"big": "hundreds", "small": "ones", "fallback": "zero"},
		"targeting": {"if": [{"fractional": [[false, 0], [true, 100]]}, "big", "small"]}},
	"fractional-as-condition-false-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"big": "hundreds", "small": "ones", "fallback": "zero"},
		"targeting": {"if": [{"fractional": [[false, 100], [true, 0]]}, "big", "small"]}},
	"fractional-number-names-flag": {"state": "ENABLED", "defaultVariant": "7", "variants": {"7": 7, "8": 8},
		"targeting": {"fractional": [[7, 0], [8, 1]]}},
	"fractional-null-bucket-key-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"true": "true", "false": "false", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "missing_key"}, ["true", 50], ["false", 50]]}},
	"fractional-zero-weights-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"one": "one", "two": "two", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"}, ["one", 0], ["two", 0]]}},
	"fractional-negative-weight-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"one": "one", "two": "two", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"}, ["one", -50], ["two", 100]]}},
	"fractional-precision-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"rare": "rare", "common": "common", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"}, ["rare", 1], ["common", 2147483646]]}},
	"fractional-over-max-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"a": "a", "b": "b", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"}, ["a", 2147483647], ["b", 1]]}},
	"fractional-fraction-weight-flag": {"state": "ENABLED", "defaultVariant": "fallback",
		"variants": {"a": "a", "b": "b", "fallback": "fallback"},
		"targeting": {"fractional": [{"var": "targetingKey"}, ["a", 0.5], ["b", 1]]}}
}}`

// fractional buckets as flagd ≥ 0.15 does. The vectors are flagd-testbed's
// @fractional-v2 and @fractional-nested examples and its edge-case flags (the hash-edge
// keys are murmur3 preimages of 0, 1, 0x7FFFFFFF, 0x80000000 and 0xFFFFFFFF); the
// precision rows follow from the ADR's formula: with weights 1 and MaxInt32−1 the rare
// variant gets the hashes h for which h × (2³¹−1) >> 32 is 0, that is h ≤ 2.
func TestFlagd_Fractional(t *testing.T) {
	e := flagdFile(t, fractionalFlags)
	user := func(name string) map[string]any { return map[string]any{"user": map[string]any{"name": name}} }
	tk := func(key string, kv ...string) map[string]any {
		m := map[string]any{"targetingKey": key}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		key        string
		ctx        map[string]any
		want       string // the value; "" for an error
		wantReason string
	}{
		{"fractional-flag", user("jack"), "hearts", ReasonSplit},
		{"fractional-flag", user("queen"), "spades", ReasonSplit},
		{"fractional-flag", user("ten"), "clubs", ReasonSplit},
		{"fractional-flag", user("nine"), "diamonds", ReasonSplit},
		{"fractional-flag", user("3"), "clubs", ReasonSplit},
		{"fractional-flag-shorthand", tk("jon@company.com"), "heads", ReasonSplit},
		{"fractional-flag-shorthand", tk("jane@company.com"), "tails", ReasonSplit},
		{"fractional-flag-A-shared-seed", user("seven"), "hearts", ReasonSplit},
		{"fractional-flag-A-shared-seed", user("eight"), "diamonds", ReasonSplit},
		{"fractional-flag-A-shared-seed", user("nine"), "clubs", ReasonSplit},
		{"fractional-flag-A-shared-seed", user("two"), "spades", ReasonSplit},
		{"fractional-flag-B-shared-seed", user("seven"), "ace-of-hearts", ReasonSplit},
		{"fractional-flag-B-shared-seed", user("eight"), "ace-of-diamonds", ReasonSplit},
		{"fractional-flag-B-shared-seed", user("nine"), "ace-of-clubs", ReasonSplit},
		{"fractional-flag-B-shared-seed", user("two"), "ace-of-spades", ReasonSplit},
		{"fractional-hash-edge-flag", tk("ejOoVL"), "lower", ReasonSplit},
		{"fractional-hash-edge-flag", tk("bY9fO-"), "lower", ReasonSplit},
		{"fractional-hash-edge-flag", tk("SI7p-"), "lower", ReasonSplit},
		{"fractional-hash-edge-flag", tk("6LvT0"), "upper", ReasonSplit},
		{"fractional-hash-edge-flag", tk("ceQdGm"), "upper", ReasonSplit},
		{"fractional-nested-if-flag", tk("jon@company.com", "tier", "premium"), "premium", ReasonSplit},
		{"fractional-nested-if-flag", tk("jon@company.com", "tier", "basic"), "standard", ReasonSplit},
		{"fractional-nested-if-flag", tk("user1", "tier", "premium"), "standard", ReasonSplit},
		{"fractional-nested-if-flag", tk("user1", "tier", "basic"), "standard", ReasonSplit},
		{"fractional-nested-var-flag", tk("jon@company.com", "color", "red"), "red", ReasonSplit},
		{"fractional-nested-var-flag", tk("jon@company.com", "color", "green"), "green", ReasonSplit},
		{"fractional-nested-var-flag", tk("user1", "color", "red"), "blue", ReasonSplit},
		{"fractional-nested-var-flag", tk("jon@company.com", "color", "yellow"), "", ""}, // not a variant: GENERAL
		{"fractional-nested-var-flag", tk("jon@company.com", "color", ""), "", ""},
		{"fractional-nested-weight-flag", tk("jon@company.com", "tier", "premium"), "red", ReasonSplit},
		{"fractional-nested-weight-flag", tk("jon@company.com", "tier", "basic"), "blue", ReasonSplit},
		{"fractional-nested-weight-flag", tk("user1", "tier", "premium"), "red", ReasonSplit},
		{"fractional-nested-weight-flag", tk("user1", "tier", "basic"), "blue", ReasonSplit},
		{"fractional-as-condition-flag", tk("some-targeting-key"), "hundreds", ReasonTargetingMatch},
		{"fractional-as-condition-false-flag", tk("some-targeting-key"), "ones", ReasonTargetingMatch},
		{"fractional-number-names-flag", tk("any-user"), "8", ReasonSplit},
		{"fractional-null-bucket-key-flag", map[string]any{}, "fallback", ReasonDefault},
		{"fractional-zero-weights-flag", tk("any-user"), "fallback", ReasonDefault},
		{"fractional-negative-weight-flag", tk("any-user"), "two", ReasonSplit},
		{"fractional-negative-weight-flag", tk("ejOoVL"), "two", ReasonSplit},
		{"fractional-precision-flag", tk("ejOoVL"), "rare", ReasonSplit},   // h = 0
		{"fractional-precision-flag", tk("bY9fO-"), "rare", ReasonSplit},   // h = 1
		{"fractional-precision-flag", tk("SI7p-"), "common", ReasonSplit},  // h = 0x7FFFFFFF
		{"fractional-precision-flag", tk("ceQdGm"), "common", ReasonSplit}, // h = 0xFFFFFFFF
		{"fractional-over-max-flag", tk("any-user"), "fallback", ReasonDefault},
		{"fractional-fraction-weight-flag", tk("any-user"), "fallback", ReasonDefault},
	}
	for _, tt := range tests {
		t.Run(tt.key+"/"+string(mustJSON(t, tt.ctx)), func(t *testing.T) {
			status, m := e.ofrepOne(t, tt.key, tt.ctx)
			if tt.want == "" {
				if status != http.StatusBadRequest || str(m["errorCode"]) != CodeGeneral {
					t.Errorf("= %d %s, want 400 GENERAL", status, mustJSON(t, m))
				}
				return
			}
			if status != http.StatusOK {
				t.Fatalf("status %d %s", status, mustJSON(t, m))
			}
			if got, want := str(m["value"]), tt.want; got != want {
				t.Errorf("value = %q, want %q (%s)", got, want, mustJSON(t, m))
			}
			if got, want := str(m["reason"]), tt.wantReason; got != want {
				t.Errorf("reason = %q, want %q", got, want)
			}
		})
	}
}

// Targeting that reads JsonLogic's corners, served over OFREP on a loopback socket, picks
// the variant that flagd's JsonLogic picks for the same rule and context.
func TestFlagd_JsonLogicOverOFREP(t *testing.T) {
	rules := map[string]string{
		"missing-empty": `{"if": [{"missing": ["email"]}, "absent", "present"]}`,
		"var-default":   `{"var": ["plan", "free"]}`,
		"cat-trim":      `{"cat": [" ", {"var": "plan"}, " "]}`,
		"in-number":     `{"if": [{"in": [{"var": "id"}, ["7", "8"]]}, "present", "absent"]}`,
		"compare-null":  `{"if": [{"<=": [{"var": "n"}, 0]}, "present", "absent"]}`,
		"arith-text":    `{"if": [{"==": [{"+": [{"var": ["plan", "x"]}, 1]}, 1]}, "present", "absent"]}`,
		"empty-object":  `{"if": [{"var": "o"}, "present", "absent"]}`,
	}
	contexts := []map[string]any{
		{"email": "", "plan": "pro", "id": 7.0, "n": nil, "o": map[string]any{}},
		{"plan": nil, "id": 9.0, "n": 0.0, "o": map[string]any{"k": 1.0}},
		{"email": "a@b", "id": "7", "plan": "free"},
	}
	var file strings.Builder
	file.WriteString(`{"flags": {`)
	first := true
	for key, rule := range rules {
		if !first {
			file.WriteString(",")
		}
		first = false
		file.WriteString(`"` + key + `": {"state": "ENABLED", "defaultVariant": "none", "targeting": ` + rule +
			`, "variants": {"absent": "absent", "present": "present", "free": "free", "pro": "pro", "none": "none"}}`)
	}
	file.WriteString(`}}`)
	e := flagdFile(t, file.String())
	for key, rule := range rules {
		for _, ctx := range contexts {
			t.Run(key+"/"+string(mustJSON(t, ctx)), func(t *testing.T) {
				withFlagd := map[string]any{"$flagd": map[string]any{"flagKey": key, "timestamp": 0.0}}
				for k, v := range ctx {
					withFlagd[k] = v
				}
				want, err := flagdApply(rule, string(mustJSON(t, withFlagd)))
				if err != nil {
					t.Fatalf("flagd's JsonLogic fails: %v", err)
				}
				status, m := e.ofrepOne(t, key, ctx)
				var got string
				switch name := str(json.RawMessage(want)); {
				case want == "null": // the default variant, reason DEFAULT
					got, want = str(m["reason"]), ReasonDefault
				case strings.Contains("absent present free pro none", name) && name != "":
					got, want = str(m["variant"]), name
				default: // not a variant: an error in flagd too
					got, want = str(m["errorCode"]), CodeGeneral
				}
				if got != want {
					t.Errorf("= %d %s, want %s as flagd's JsonLogic gives", status, mustJSON(t, m), want)
				}
			})
		}
	}
}
