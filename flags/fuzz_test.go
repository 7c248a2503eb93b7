package flags

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var fuzzDefinitions = []string{
	`{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`,
	`{"state":"ENABLED","variants":{"a":"A","b":"B"},"defaultVariant":"a","targeting":{"fractional":[{"var":"email"},["a",50],["b",50]]}}`,
	`{"state":"ENABLED","variants":{"a":1,"b":2},"defaultVariant":"a","targeting":{"if":[{"sem_ver":[{"var":"v"},"^","1.0.0"]},"b",{"starts_with":[{"var":"id"},"x"]},"a",null]}}`,
	`{"state":"DISABLED","variants":{"o":{"x":[1,2]}},"defaultVariant":"o","metadata":{"k":"v","n":1}}`,
	`{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","targeting":{"reduce":[{"var":"l"},{"+":[{"var":"current"},{"var":"accumulator"}]},0]}}`,
}

// FuzzParseFlag: any bytes give a Flag or a *DefinitionError, never a panic; a parsed
// flag evaluates without panicking, and its stored definition parses back to the same.
func FuzzParseFlag(f *testing.F) {
	for _, d := range fuzzDefinitions {
		f.Add(d, `{"targetingKey":"u","email":"a@b","v":"1.2.3","id":"xy","l":[1,2]}`)
	}
	f.Fuzz(func(t *testing.T, def, ctx string) {
		fl, err := ParseFlag("k", []byte(def))
		if err != nil {
			if _, ok := err.(*DefinitionError); !ok {
				t.Fatalf("error %T %v, want *DefinitionError", err, err)
			}
			return
		}
		again, err := ParseFlag("k", fl.Definition())
		if err != nil {
			t.Fatalf("stored definition %s refused: %v", fl.Definition(), err)
		}
		if string(again.Definition()) != string(fl.Definition()) {
			t.Fatalf("definition not stable: %s then %s", fl.Definition(), again.Definition())
		}
		var ectx map[string]any
		json.Unmarshal([]byte(ctx), &ectx)
		res := fl.Evaluate(ectx, time.Unix(1_800_000_000, 0))
		codeDefault := res.Reason == ReasonDefault && fl.DefaultVariant == "" && res.Value == nil && res.Variant == ""
		if res.OK() && res.Reason != ReasonDisabled && !codeDefault {
			if _, ok := fl.Variants[res.Variant]; !ok {
				t.Fatalf("result variant %q is not a variant", res.Variant)
			}
		}
		if _, err := json.Marshal(res); err != nil {
			t.Fatalf("result does not encode: %v", err)
		}
	})
}

// FuzzParseFile: a flag file never panics the parser, and its problems name the file.
func FuzzParseFile(f *testing.F) {
	f.Add(`{"flags":{"a":` + fuzzDefinitions[0] + `},"$evaluators":{"e":{"in":["x",{"var":"y"}]}}}`)
	f.Add(`{"flags":{"a":{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a","targeting":{"$ref":"e"}}},"$evaluators":{"e":{"$ref":"e"}}}`)
	f.Add(`{"flags":{},"metadata":{"a":1}}`)
	f.Add(`{"flags":[{"key":"a","state":"ENABLED","variants":{"a":1},"defaultVariant":"a","metadata":{"flagSetId":"s"}},{"key":"a","state":"ENABLED","variants":{"a":1},"defaultVariant":"a"}],"metadata":{"flagSetId":"t"}}`)
	f.Fuzz(func(t *testing.T, file string) {
		flags, problems, err := ParseFile("file:f", []byte(file))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "file:f: ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for k, p := range problems {
			if !strings.HasPrefix(p.Error(), "file:f: ") {
				t.Fatalf("problem of %s %q does not name the file", k, p)
			}
		}
		for _, fl := range flags {
			fl.Evaluate(map[string]any{"targetingKey": "t"}, time.Unix(0, 0))
		}
	})
}

// FuzzJsonLogic: any rule on any data evaluates or errs, within the depth and step
// bounds, without panicking.
func FuzzJsonLogic(f *testing.F) {
	seeds := [][2]string{
		{`{"if":[{"<":[{"var":"a"},1,3]},"x",{"cat":["y",{"var":"b.c"}]}]}`, `{"a":2,"b":{"c":[1,null]}}`},
		{`{"map":[{"var":"l"},{"substr":[{"var":""},-2,-1]}]}`, `{"l":["abc","\u00e9t\u00e9",1e300]}`},
		{`{"fractional":[["a",1e308],["b",-1]]}`, `{"targetingKey":"x"}`},
		{`{"missing_some":[1,{"merge":[["a"],"b"]}]}`, `{}`},
		{`{"reduce":[{"var":"l"},{"*":[{"var":"current"},{"var":"accumulator"}]},1]}`, `{"l":[1e200,1e200,"x"]}`},
		{`{"sem_ver":["1.0.0","~",{"var":"v"}]}`, `{"v":"v1.0"}`},
		{`{"%":[{"var":"a"},0]}`, `{"a":"5"}`},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, logic, data string) {
		var l, d any
		if json.Unmarshal([]byte(logic), &l) != nil {
			return
		}
		json.Unmarshal([]byte(data), &d)
		r, err := compile(l, map[string]any{"self": map[string]any{"$ref": "self"}}, "rule", 0)
		if err != nil {
			return
		}
		root, _ := d.(map[string]any)
		e := evaluation{root: root}
		v, err := e.eval(r, d)
		if err != nil {
			return
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatalf("result %v does not encode: %v", v, err)
		}
	})
}
