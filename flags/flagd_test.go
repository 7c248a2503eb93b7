package flags

import (
	"encoding/json"
	"net/http"
	"path/filepath"
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
