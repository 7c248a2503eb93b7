package flags

import (
	"errors"
	"strings"
	"testing"
)

func TestParseFlag_Refused(t *testing.T) {
	tests := []struct {
		name, def, field, msg string
	}{
		{"not JSON", `{"state":`, "", "not a JSON object"},
		{"array", `[]`, "", "not a JSON object"},
		{"null", `null`, "", "definition is null"},
		{"unknown field", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","defualtVariant":"a"}`, "defualtVariant", "unknown field"},
		{"missing state", `{"variants":{"a":1},"defaultVariant":"a"}`, "state", "missing"},
		{"bad state", `{"state":"ON","variants":{"a":1},"defaultVariant":"a"}`, "state", `"ON" is not a state`},
		{"state not a string", `{"state":true,"variants":{"a":1},"defaultVariant":"a"}`, "state", "not a string"},
		{"missing variants", `{"state":"ENABLED","defaultVariant":"a"}`, "variants", "missing"},
		{"empty variants", `{"state":"ENABLED","variants":{},"defaultVariant":"a"}`, "variants", "empty"},
		{"variants not an object", `{"state":"ENABLED","variants":[1],"defaultVariant":"a"}`, "variants", "not an object"},
		{"mixed kinds", `{"state":"ENABLED","variants":{"a":true,"b":"x"},"defaultVariant":"a"}`, "variants.b", "is a string but other variants are booleans"},
		{"null variant", `{"state":"ENABLED","variants":{"a":null},"defaultVariant":"a"}`, "variants.a", "null is not a flag value"},
		{"defaultVariant not a string", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":1}`, "defaultVariant", "not a string or null"},
		{"defaultVariant not a variant", `{"state":"ENABLED","variants":{"a":1,"b":2},"defaultVariant":"c"}`, "defaultVariant", `"c" is not one of the variants (a, b)`},
		{"targeting not an object", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","targeting":"a"}`, "targeting", "is a string"},
		{"unknown operator", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","targeting":{"if":[{"starts_wth":["a","b"]},"a"]}}`, "targeting.if[0]", `unknown operator "starts_wth"`},
		{"$ref without evaluators", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","targeting":{"$ref":"x"}}`, "targeting.$ref", `no evaluator "x"`},
		{"metadata value", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","metadata":{"o":{"x":1}}}`, "metadata.o", "metadata values are strings"},
		{"trailing data", `{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a"} {}`, "", "data after the JSON value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFlag("my-flag", []byte(tt.def))
			var de *DefinitionError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want a *DefinitionError", err)
			}
			if got, want := de.Field, tt.field; got != want {
				t.Errorf("field = %q, want %q (%v)", got, want, err)
			}
			if got, want := de.Flag, "my-flag"; got != want {
				t.Errorf("flag = %q, want %q", got, want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

func TestCheckKey(t *testing.T) {
	for _, key := range []string{"", strings.Repeat("k", 201), "a\nb", "\xff"} {
		if CheckKey(key) == nil {
			t.Errorf("CheckKey(%q) = nil, want an error", key)
		}
	}
	for _, key := range []string{"new-checkout", "ui.theme", "ç"} {
		if err := CheckKey(key); err != nil {
			t.Errorf("CheckKey(%q) = %v", key, err)
		}
	}
}

// A flagd example file (flagd.dev's playground flags, abridged) loads unchanged, with
// $evaluators resolved.
func TestParseFile_FlagdExample(t *testing.T) {
	file := `{
	  "$schema": "https://flagd.dev/schema/v0/flags.json",
	  "flags": {
	    "show-welcome-banner": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
	    "background-color": {
	      "state": "ENABLED",
	      "variants": {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"},
	      "defaultVariant": "red",
	      "targeting": {"if": [{"$ref": "isCompany"}, {"fractional": [["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]}]}
	    },
	    "broken": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "b"}
	  },
	  "$evaluators": {"isCompany": {"ends_with": [{"var": "email"}, "@example.com"]}}
	}`
	flags, problems, err := ParseFile("file:flags.json", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(flags), 2; got != want {
		t.Fatalf("%d flags, want %d", got, want)
	}
	if err := problems["broken"]; err == nil || !strings.Contains(err.Error(), `file:flags.json: flag "broken": defaultVariant:`) {
		t.Errorf("problem of broken = %v, want one naming the file, flag and field", err)
	}
	bg := flags["background-color"]
	if strings.Contains(string(bg.Definition()), "$ref") {
		t.Errorf("definition %s still has $ref; it must be resolved", bg.Definition())
	}
	// The resolved definition stands alone: the API accepts it as is.
	if _, err := ParseFlag("background-color", bg.Definition()); err != nil {
		t.Errorf("resolved definition refused: %v", err)
	}
	res := bg.Evaluate(map[string]any{"email": "a@example.com", "targetingKey": "a"}, timeZero)
	if !res.OK() || res.Reason != ReasonSplit {
		t.Errorf("company user: %+v, want a SPLIT", res)
	}
	if res := bg.Evaluate(map[string]any{"email": "a@else.com"}, timeZero); res.Reason != ReasonDefault || res.Variant != "red" {
		t.Errorf("other user: %+v, want the default red", res)
	}
}

func TestParseFile_Refused(t *testing.T) {
	tests := []struct{ file, want string }{
		{`{"flags": 1}`, `file:f: flags: not an object`},
		{`{}`, `file:f: flags: missing`},
		{`{"flags": {}, "extra": 1}`, `file:f: extra: unknown field`},
		{`{"flags": {}, "metadata": {"a": [1]}}`, `file:f: metadata.a: is an array`},
		{`not json`, `file:f: not a JSON object`},
	}
	for _, tt := range tests {
		_, _, err := ParseFile("file:f", []byte(tt.file))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("ParseFile(%s) = %v, want %q...", tt.file, err, tt.want)
		}
	}
}
