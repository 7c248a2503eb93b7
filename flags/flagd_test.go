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
