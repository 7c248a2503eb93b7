package flags

import (
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Two flag files as flagd reads them since flag sets: payments.json names its flag set in
// its metadata (one flag moves itself to another set), web.json uses the array form with the
// key "color" in two sets, one of them no set at all.
const (
	paymentsFile = `{
	  "metadata": {"flagSetId": "payments", "team": "payments", "version": "v3"},
	  "flags": {
	    "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"owner": "ann", "version": "v4"}},
	    "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red"},
	    "trial": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "metadata": {"flagSetId": "experiments"}}
	  }
	}`
	webFile = `{
	  "metadata": {"team": "web"},
	  "flags": [
	    {"key": "color", "state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "blue", "metadata": {"flagSetId": "webshop"}},
	    {"key": "color", "state": "ENABLED", "variants": {"red": "red", "green": "green"}, "defaultVariant": "green"},
	    {"key": "banner", "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}
	  ]
	}`
)

func flagSetEnv(t *testing.T) (e *env, payments, web string) {
	t.Helper()
	dir := t.TempDir()
	payments, web = filepath.Join(dir, "payments.json"), filepath.Join(dir, "web.json")
	writeFile(t, payments, paymentsFile)
	writeFile(t, web, webFile)
	return newEnv(t, nil, Options{Files: []string{payments, web}}), payments, web
}

// selectorHdr is flagd's selector header, spelt out: the name on the wire is the contract.
const selectorHdr = "Flagd-Selector"

// bulkBody is the bulk answer as a provider reads it.
type bulkBody struct {
	Flags    []Result       `json:"flags"`
	Metadata map[string]any `json:"metadata"`
}

// selectorHeader gives the headers of a request with selector sel ("" sends none).
func selectorHeader(sel string) []string {
	if sel == "" {
		return nil
	}
	return []string{selectorHdr, sel}
}

// TestFlagSets_SingleEvaluation: POST /ofrep/v1/evaluate/flags/{key} over the admin
// listener with a Flagd-Selector header evaluates the key's definition in the selected flag
// set or source, with set-level metadata under flag-level metadata and the selector
// reflected, as flagd does; a key outside the selection is FLAG_NOT_FOUND.
func TestFlagSets_SingleEvaluation(t *testing.T) {
	e, payments, web := flagSetEnv(t)
	tests := []struct {
		name, selector, key string
		status              int
		value               string
		meta                map[string]any
	}{
		// Without a selector the later file wins, and in it the flag set that sorts last.
		{"no selector", "", "color", 200, `"blue"`, map[string]any{"flagSetId": "webshop", "team": "web"}},
		{"set payments", "flagSetId=payments", "color", 200, `"red"`, map[string]any{"flagSetId": "payments", "team": "payments", "version": "v3"}},
		{"flag metadata over set metadata", "flagSetId=payments", "checkout", 200, `true`, map[string]any{"flagSetId": "payments", "team": "payments", "version": "v4", "owner": "ann"}},
		{"flag names its own set", "flagSetId=experiments", "trial", 200, `false`, map[string]any{"flagSetId": "experiments", "team": "payments", "version": "v3"}},
		{"flag moved out of the file's set", "flagSetId=payments", "trial", 404, "", map[string]any{"flagSetId": "payments"}},
		{"no flag set", "flagSetId=", "color", 200, `"green"`, map[string]any{"team": "web"}},
		{"no flag set, other key", "flagSetId=", "banner", 200, `true`, map[string]any{"team": "web"}},
		{"not in the set", "flagSetId=webshop", "banner", 404, "", map[string]any{"flagSetId": "webshop"}},
		{"unknown set", "flagSetId=nope", "color", 404, "", map[string]any{"flagSetId": "nope"}},
		{"source", "source=" + payments, "color", 200, `"red"`, map[string]any{"flagSetId": "payments", "team": "payments", "version": "v3", "source": payments}},
		{"bare source, as older providers send", web, "color", 200, `"blue"`, map[string]any{"flagSetId": "webshop", "team": "web", "source": web}},
		{"source as the flag's Source", "source=file:" + web, "banner", 200, `true`, map[string]any{"team": "web", "source": "file:" + web}},
		{"source without the key", "source=" + payments, "banner", 404, "", map[string]any{"source": payments}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(t, "POST", PathOFREPFlags+"/"+tt.key, `{"context":{}}`, selectorHeader(tt.selector)...)
			if got, want := a.status, tt.status; got != want {
				t.Fatalf("status = %d, want %d: %s", got, want, a.body)
			}
			var got Result
			a.json(t, &got)
			if tt.status == 200 && string(got.Value) != tt.value {
				t.Errorf("value = %s, want %s: %s", got.Value, tt.value, a.body)
			}
			if tt.status == 404 && (got.ErrorCode != CodeFlagNotFound || !strings.Contains(got.ErrorDetails, selectorHdr)) {
				t.Errorf("answer %s; want FLAG_NOT_FOUND naming the %s header", a.body, selectorHdr)
			}
			if !reflect.DeepEqual(got.Metadata, tt.meta) {
				t.Errorf("metadata = %v, want %v", got.Metadata, tt.meta)
			}
		})
	}
}

// TestFlagSets_Bulk: the bulk evaluation answers the selected flags, one per key, and puts
// the flag set metadata at its top: the files' metadata (a key they disagree on left out),
// the flag set the flags share, and the reflected selector.
func TestFlagSets_Bulk(t *testing.T) {
	e, payments, web := flagSetEnv(t)
	tests := []struct {
		name, selector string
		values         map[string]string // key → value
		meta           map[string]any
	}{
		{"no selector", "", map[string]string{"banner": "true", "checkout": "true", "color": `"blue"`, "trial": "false"},
			map[string]any{"version": "v3"}}, // team: payments vs web; flag sets differ
		{"set payments", "flagSetId=payments", map[string]string{"checkout": "true", "color": `"red"`},
			map[string]any{"flagSetId": "payments", "team": "payments", "version": "v3"}},
		{"set experiments", "flagSetId=experiments", map[string]string{"trial": "false"},
			map[string]any{"flagSetId": "experiments", "team": "payments", "version": "v3"}},
		{"no flag set", "flagSetId=", map[string]string{"banner": "true", "color": `"green"`},
			map[string]any{"team": "web"}},
		{"unknown set", "flagSetId=nope", map[string]string{}, map[string]any{"flagSetId": "nope"}},
		{"source", "source=" + web, map[string]string{"banner": "true", "color": `"blue"`},
			map[string]any{"team": "web", "source": web}},
		{"bare source", payments, map[string]string{"checkout": "true", "color": `"red"`, "trial": "false"},
			map[string]any{"team": "payments", "version": "v3", "source": payments}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(t, "POST", PathOFREPFlags, `{"context":{}}`, selectorHeader(tt.selector)...)
			if a.status != 200 {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			var raw map[string]json.RawMessage
			a.json(t, &raw)
			if _, ok := raw["metadata"]; !ok {
				t.Errorf("no top-level metadata in %s", a.body)
			}
			var bulk bulkBody
			a.json(t, &bulk)
			got := map[string]string{}
			for _, r := range bulk.Flags {
				if _, dup := got[r.Key]; dup {
					t.Errorf("key %q answered twice: %s", r.Key, a.body)
				}
				got[r.Key] = string(r.Value)
			}
			if !reflect.DeepEqual(got, tt.values) {
				t.Errorf("flags = %v, want %v", got, tt.values)
			}
			if !reflect.DeepEqual(bulk.Metadata, tt.meta) {
				t.Errorf("top-level metadata = %v, want %v", bulk.Metadata, tt.meta)
			}
		})
	}
}

// TestFlagSets_BadSelector: a selector that cannot be applied is refused with 400 and
// PARSE_ERROR naming the header, on both routes, instead of answering an empty selection.
func TestFlagSets_BadSelector(t *testing.T) {
	e, _, _ := flagSetEnv(t)
	tests := []struct {
		name string
		hdr  []string
		want string
	}{
		{"unknown key", []string{selectorHdr, "flagSetID=payments"}, `unknown key "flagSetID"`},
		{"empty source", []string{selectorHdr, "source="}, "names no source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{PathOFREPFlags + "/color", PathOFREPFlags} {
				a := e.do(t, "POST", path, `{"context":{}}`, tt.hdr...)
				var got struct{ ErrorCode, ErrorDetails string }
				a.json(t, &got)
				if a.status != 400 || got.ErrorCode != CodeParseError || !strings.Contains(got.ErrorDetails, selectorHdr) || !strings.Contains(got.ErrorDetails, tt.want) {
					t.Errorf("%s: %d %s; want 400 PARSE_ERROR saying %q", path, a.status, a.body, tt.want)
				}
			}
		})
	}
	// Two header lines: which one flagd would use is an accident of order; refuse both.
	req, err := http.NewRequest("POST", e.base+PathOFREPFlags, strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Add(selectorHdr, "flagSetId=payments")
	req.Header.Add(selectorHdr, "flagSetId=webshop")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, want := res.StatusCode, 400; got != want {
		t.Errorf("two selector headers: %d, want %d", got, want)
	}
}

// TestFlagSets_APIFlags: a definition set through the API joins the flag set its metadata
// names, overrides the files' definition of its key only where no selector narrows to
// another set, and is the source "api".
func TestFlagSets_APIFlags(t *testing.T) {
	e, _, _ := flagSetEnv(t)
	if a := e.do(t, "PUT", "/v1/flags/color", `{"state":"ENABLED","variants":{"red":"red","pink":"pink"},"defaultVariant":"pink","metadata":{"flagSetId":"ops"}}`); a.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", a.status, a.body)
	}
	for sel, want := range map[string]string{"": `"pink"`, "flagSetId=ops": `"pink"`, "source=api": `"pink"`, "flagSetId=payments": `"red"`, "flagSetId=webshop": `"blue"`} {
		var got Result
		e.do(t, "POST", PathOFREPFlags+"/color", `{}`, selectorHeader(sel)...).json(t, &got)
		if string(got.Value) != want {
			t.Errorf("selector %q: color = %s (%s), want %s", sel, got.Value, got.ErrorDetails, want)
		}
	}
	if a := e.do(t, "PUT", "/v1/flags/x", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","metadata":{"flagSetId":7}}`); a.status != 400 || !strings.Contains(string(a.body), "metadata.flagSetId: is a number; a flag set ID is a string") {
		t.Errorf("flagSetId 7: %d %s, want 400 naming metadata.flagSetId", a.status, a.body)
	}
}

// TestFlagSets_ChangeOnlyASelectorReaches: editing a definition that serves only under a
// selector, or a file's metadata, is a configuration change: watchers are told and the bulk
// answer follows.
func TestFlagSets_ChangeOnlyASelectorReaches(t *testing.T) {
	e, payments, web := flagSetEnv(t)
	bulkColor := func(sel string) (string, any) {
		var bulk bulkBody
		e.do(t, "POST", PathOFREPFlags, `{}`, selectorHeader(sel)...).json(t, &bulk)
		for _, r := range bulk.Flags {
			if r.Key == "color" {
				return string(r.Value), bulk.Metadata["team"]
			}
		}
		return "", bulk.Metadata["team"]
	}
	v0 := e.flags.snap.Load().version
	// color of no flag set is shadowed by webshop's without a selector.
	writeFile(t, web, strings.Replace(webFile, `"defaultVariant": "green"`, `"defaultVariant": "red"`, 1))
	eventually(t, "the shadowed color reloaded", func() bool { v, _ := bulkColor("flagSetId="); return v == `"red"` })
	v1 := e.flags.snap.Load().version
	if v1 == v0 {
		t.Errorf("version stayed %d after a change a selector sees", v0)
	}
	writeFile(t, payments, strings.Replace(paymentsFile, `"team": "payments"`, `"team": "checkout"`, 1))
	eventually(t, "the file metadata reloaded", func() bool { _, team := bulkColor("flagSetId=payments"); return team == "checkout" })
	if v2 := e.flags.snap.Load().version; v2 == v1 {
		t.Errorf("version stayed %d after a change of a file's metadata", v1)
	}
}

// flagd-testbed's vectors, with its flag files (flags/selector-flag-combined-metadata.json,
// flags/disabled-flags.json and flags/selector-flags.json, abridged to the flags used) and
// its selectors, which name the files.
func TestFlagSets_TestbedScenarios(t *testing.T) {
	dir := t.TempDir()
	combined := filepath.Join(dir, "selector-flag-combined-metadata.json")
	disabled := filepath.Join(dir, "disabled-flags.json")
	selectorFlags := filepath.Join(dir, "selector-flags.json")
	writeFile(t, combined, `{
	  "flags": {
	    "combined-metadata-flag": {"state": "ENABLED", "variants": {"true": true, "false": false}, "defaultVariant": "false", "targeting": {},
	      "metadata": {"string": "a", "integer": 1, "float": 1.2, "boolean": true}}
	  },
	  "metadata": {"string": "b", "integer": 2, "float": 2.2, "boolean": false,
	    "flag-set-string": "c", "flag-set-integer": 3, "flag-set-float": 3.2, "flag-set-boolean": false}
	}`)
	writeFile(t, disabled, `{"flags": {"cross-flagset-flag": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}`)
	writeFile(t, selectorFlags, `{
	  "flags": {
	    "selector-flag": {"state": "ENABLED", "variants": {"foo": "foo", "bar": "bar"}, "defaultVariant": "foo"},
	    "cross-flagset-flag": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}
	  },
	  "metadata": {"flagSetId": "selector-set"}
	}`)
	e := newEnv(t, nil, Options{Files: []string{combined, disabled, selectorFlags}})

	// metadata.feature, "Flag metadata overwrites flag set metadata".
	var got Result
	e.do(t, "POST", PathOFREPFlags+"/combined-metadata-flag", `{}`, selectorHdr, combined).json(t, &got)
	want := map[string]any{"string": "a", "integer": 1.0, "float": 1.2, "boolean": true,
		"flag-set-string": "c", "flag-set-integer": 3.0, "flag-set-float": 3.2, "flag-set-boolean": false, "source": combined}
	if !reflect.DeepEqual(got.Metadata, want) {
		t.Errorf("combined-metadata-flag metadata = %v, want %v", got.Metadata, want)
	}

	// disabled.feature, "Flag disabled in one flag set, enabled in another". A single
	// evaluation of a disabled flag is 404 FLAG_NOT_FOUND "… is DISABLED", as flagd's
	// OFREP service answers it (see ofrep.go).
	for _, tt := range []struct{ selector, reason, value string }{
		{disabled, ReasonDisabled, ""},
		{selectorFlags, ReasonStatic, "true"},
		{"flagSetId=selector-set", ReasonStatic, "true"},
		{"flagSetId=", ReasonDisabled, ""},
	} {
		a := e.do(t, "POST", PathOFREPFlags+"/cross-flagset-flag", `{}`, selectorHdr, tt.selector)
		if tt.reason == ReasonDisabled {
			if a.status != http.StatusNotFound || !strings.Contains(string(a.body), `"errorCode":"FLAG_NOT_FOUND"`) || !strings.Contains(string(a.body), "is DISABLED") {
				t.Errorf("selector %q: %d %s; want 404 FLAG_NOT_FOUND, the flag is DISABLED", tt.selector, a.status, a.body)
			}
			continue
		}
		var got Result
		a.json(t, &got)
		if got.Reason != tt.reason || string(got.Value) != tt.value {
			t.Errorf("selector %q: %s; want reason %s value %q", tt.selector, a.body, tt.reason, tt.value)
		}
	}
}

func TestParseFile_ArrayAndFlagSets(t *testing.T) {
	flags, problems, err := ParseFile("file:web.json", []byte(webFile))
	if err != nil || len(problems) != 0 {
		t.Fatalf("ParseFile = %v, %v", err, problems)
	}
	if got, want := flags["color"].DefaultVariant, "blue"; got != want {
		t.Errorf("color's default = %q, want webshop's %q: without a selector the set that sorts last serves", got, want)
	}
	if got, want := flags["banner"].Metadata["team"], "web"; got != want {
		t.Errorf("banner's metadata team = %v, want the file's %q", got, want)
	}
	if _, ok := flags["banner"].Metadata["key"]; ok || strings.Contains(string(flags["banner"].Definition()), `"key"`) {
		t.Errorf("the array form's key leaked into the definition: %s", flags["banner"].Definition())
	}
	// The stored definition stands alone: the API accepts it.
	if _, err := ParseFlag("banner", flags["banner"].Definition()); err != nil {
		t.Errorf("definition refused: %v", err)
	}

	bool1 := `"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"`
	refused := []struct{ name, file, want string }{
		{"key missing", `{"flags": [{` + bool1 + `}]}`, "file:f: flags[0].key: missing"},
		{"key not a string", `{"flags": [{"key": 1, ` + bool1 + `}]}`, "file:f: flags[0].key: not a string"},
		{"entry not an object", `{"flags": [1]}`, "file:f: flags[0]: not a flag definition"},
		{"set ID not a string", `{"flags": {}, "metadata": {"flagSetId": true}}`, "file:f: metadata.flagSetId: is a boolean; a flag set ID is a string"},
	}
	for _, tt := range refused {
		if _, _, err := ParseFile("file:f", []byte(tt.file)); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: ParseFile = %v, want %q...", tt.name, err, tt.want)
		}
	}

	// One key twice in one flag set: the second is refused, naming the first.
	_, problems, err = ParseFile("file:f", []byte(`{"flags": [{"key": "a", `+bool1+`}, {"key": "a", `+bool1+`}, {"key": "a", `+bool1+`, "metadata": {"flagSetId": "s"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var de *DefinitionError
	if p := problems["a"]; !errors.As(p, &de) || de.Field != "flags[1]" || !strings.Contains(p.Error(), "flags[0] already defines this key in no flag set") {
		t.Errorf("duplicate problem = %v", p)
	}
}

// TestFlagSets_List: GET /v1/flags shows, besides the definition serving per key, every
// definition with its flag set, so that one only a selector reaches can be found.
func TestFlagSets_List(t *testing.T) {
	e, payments, web := flagSetEnv(t)
	var list struct {
		Flags map[string]json.RawMessage `json:"flags"`
		All   []struct {
			Key, Source, FlagSetID string
		} `json:"all"`
	}
	e.do(t, "GET", "/v1/flags", "").json(t, &list)
	type entry struct{ key, set, source string }
	var got []entry
	for _, a := range list.All {
		got = append(got, entry{a.Key, a.FlagSetID, a.Source})
	}
	want := []entry{
		{"banner", "", "file:" + web},
		{"checkout", "payments", "file:" + payments},
		{"color", "payments", "file:" + payments},
		{"color", "", "file:" + web},
		{"color", "webshop", "file:" + web},
		{"trial", "experiments", "file:" + payments},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("all = %v, want %v", got, want)
	}
	if got, want := len(list.Flags), 4; got != want {
		t.Errorf("%d flags serving without a selector, want %d", got, want)
	}
	var one struct{ FlagSetID string }
	e.do(t, "GET", "/v1/flags/color", "").json(t, &one)
	if got, want := one.FlagSetID, "webshop"; got != want {
		t.Errorf("GET /v1/flags/color: flagSetId %q, want %q", got, want)
	}
}

// FuzzSelector: any Flagd-Selector value is either refused with the header named or read
// as flagd reads it: split at the first "=", a value without "=" being a source.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{"flagSetId=payments", "flagSetId=", "source=a.json", "a.json", "x=y", "flagSetId=a=b", "=", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		req, err := http.NewRequest("POST", "http://127.0.0.1/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(HeaderSelector, value)
		sel, err := parseSelector(req)
		if err != nil {
			if !strings.Contains(err.Error(), HeaderSelector) {
				t.Fatalf("error %q does not name the header", err)
			}
			return
		}
		expr := strings.TrimSpace(req.Header.Get(HeaderSelector))
		key, v, ok := strings.Cut(expr, "=")
		switch {
		case expr == "":
			if !sel.empty() {
				t.Fatalf("%q selects %+v", value, sel)
			}
		case !ok:
			if !sel.hasSource || sel.source != expr || sel.hasSet {
				t.Fatalf("%q read as %+v, want the source %q", value, sel, expr)
			}
		case key == "flagSetId":
			if !sel.hasSet || sel.set != v || sel.hasSource {
				t.Fatalf("%q read as %+v, want the flag set %q", value, sel, v)
			}
		case key == "source":
			if !sel.hasSource || sel.source != v || sel.hasSet {
				t.Fatalf("%q read as %+v, want the source %q", value, sel, v)
			}
		default:
			t.Fatalf("%q accepted as %+v", value, sel)
		}
	})
}
