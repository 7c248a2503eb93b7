package flags

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func evalJSON(t testing.TB, logic, data string) (any, error) {
	t.Helper()
	var l, d any
	if err := json.Unmarshal([]byte(logic), &l); err != nil {
		t.Fatalf("logic %s: %v", logic, err)
	}
	if data != "" {
		if err := json.Unmarshal([]byte(data), &d); err != nil {
			t.Fatalf("data %s: %v", data, err)
		}
	}
	r, err := compile(l, nil, "rule", 0)
	if err != nil {
		return nil, err
	}
	root, _ := d.(map[string]any)
	e := evaluation{root: root}
	return e.eval(r, d)
}

// Cases from jsonlogic.com's operations page and json-logic-js's tests.
func TestJsonLogic(t *testing.T) {
	tests := []struct{ logic, data, want string }{
		{`{"var":"a"}`, `{"a":1}`, `1`},
		{`{"var":["a"]}`, `{"a":1}`, `1`},
		{`{"var":["z", 26]}`, `{"a":1}`, `26`},
		{`{"var":"a.b.c"}`, `{"a":{"b":{"c":"deep"}}}`, `"deep"`},
		{`{"var":1}`, `["zero","one"]`, `"one"`},
		{`{"var":""}`, `7`, `7`},
		{`{"var":"a"}`, `{"a":null}`, `null`},
		{`{"missing":["a","b"]}`, `{"a":"apple","c":"carrot"}`, `["b"]`},
		{`{"missing":["a","b"]}`, `{"a":"apple","b":""}`, `[]`}, // flagd: "" is present
		{`{"missing":["a","b"]}`, `{"a":"apple","b":null}`, `["b"]`},
		{`{"missing_some":[1,["a","b","c"]]}`, `{"a":"apple"}`, `[]`},
		{`{"missing_some":[2,["a","b","c"]]}`, `{"a":"apple"}`, `["b","c"]`},
		{`{"if":[true,"yes","no"]}`, ``, `"yes"`},
		{`{"if":[false,"yes","no"]}`, ``, `"no"`},
		{`{"if":[{"<":[{"var":"t"},0]},"freezing",{"<":[{"var":"t"},100]},"liquid","gas"]}`, `{"t":55}`, `"liquid"`},
		{`{"if":[false,"a"]}`, ``, `null`},
		{`{"?:":[[],"a","b"]}`, ``, `"b"`},
		{`{"==":[1,1]}`, ``, `true`},
		{`{"==":[1,"1"]}`, ``, `true`},
		{`{"==":[0,false]}`, ``, `true`},
		{`{"==":[null,0]}`, ``, `false`},
		{`{"==":[null,null]}`, ``, `true`},
		{`{"==":[[1,2],"1,2"]}`, ``, `false`}, // flagd: a list is not a number
		{`{"===":[1,"1"]}`, ``, `false`},
		{`{"!=":[1,2]}`, ``, `true`},
		{`{"!==":[1,1]}`, ``, `false`},
		{`{"!":[true]}`, ``, `false`},
		{`{"!":true}`, ``, `false`},
		{`{"!!":["0"]}`, ``, `true`},
		{`{"!!":[[]]}`, ``, `false`},
		{`{"or":[false,0,"a"]}`, ``, `"a"`},
		{`{"or":[false,0]}`, ``, `0`},
		{`{"and":[true,"",3]}`, ``, `""`},
		{`{"and":[true,"a",3]}`, ``, `3`},
		{`{">":[2,1]}`, ``, `true`},
		{`{">=":[1,1]}`, ``, `true`},
		{`{"<":[1,2,3]}`, ``, `true`},
		{`{"<":[1,1,3]}`, ``, `false`},
		{`{"<=":[1,1,3]}`, ``, `true`},
		{`{"<":["a","b"]}`, ``, `true`},
		{`{"<":["10","9"]}`, ``, `true`},
		{`{"<":[10,"9"]}`, ``, `false`},
		{`{"<":["x",1]}`, ``, `false`},
		{`{"max":[1,2,3]}`, ``, `3`},
		{`{"min":[1,2,3]}`, ``, `1`},
		{`{"max":[]}`, ``, `null`},
		{`{"+":[4,2]}`, ``, `6`},
		{`{"+":[2,2,2,2,2]}`, ``, `10`},
		{`{"+":"3.14"}`, ``, `3.14`},
		{`{"-":[4,2]}`, ``, `2`},
		{`{"-":[2]}`, ``, `-2`},
		{`{"*":[4,2]}`, ``, `8`},
		{`{"/":[4,2]}`, ``, `2`},
		{`{"/":[1,0]}`, ``, `null`},
		{`{"%":[101,2]}`, ``, `1`},
		{`{"map":[{"var":"integers"},{"*":[{"var":""},2]}]}`, `{"integers":[1,2,3]}`, `[2,4,6]`},
		{`{"filter":[{"var":"integers"},{"%":[{"var":""},2]}]}`, `{"integers":[1,2,3,4,5]}`, `[1,3,5]`},
		{`{"reduce":[{"var":"integers"},{"+":[{"var":"current"},{"var":"accumulator"}]},0]}`, `{"integers":[1,2,3,4,5]}`, `15`},
		{`{"all":[[1,2,3],{">":[{"var":""},0]}]}`, ``, `true`},
		{`{"all":[[],{">":[{"var":""},0]}]}`, ``, `false`},
		{`{"some":[[-1,0,1],{">":[{"var":""},0]}]}`, ``, `true`},
		{`{"none":[[-3,-2],{">":[{"var":""},0]}]}`, ``, `true`},
		{`{"some":[{"var":"pies"},{"==":[{"var":"filling"},"apple"]}]}`, `{"pies":[{"filling":"pumpkin"},{"filling":"apple"}]}`, `true`},
		{`{"merge":[[1,2],[3,4]]}`, ``, `[1,2,3,4]`},
		{`{"merge":[1,2,[3,4]]}`, ``, `[1,2,3,4]`},
		{`{"in":["Spring",["Spring","Summer"]]}`, ``, `true`},
		{`{"in":["Spring","Springfield"]}`, ``, `true`},
		{`{"in":["x",null]}`, ``, `false`},
		{`{"cat":["I love"," pie"]}`, ``, `"I love pie"`},
		{`{"cat":["a",1,null,2.5]}`, ``, `"a12.5"`}, // flagd: null is ""
		{`{"cat":[" a","b "]}`, ``, `"ab"`},         // flagd trims the result
		{`{"substr":["jsonlogic",4]}`, ``, `"logic"`},
		{`{"substr":["jsonlogic",-5]}`, ``, `"logic"`},
		{`{"substr":["jsonlogic",1,3]}`, ``, `"son"`},
		{`{"substr":["jsonlogic",4,-2]}`, ``, `"log"`},
		{`{"substr":["héllo",1,1]}`, ``, `"é"`},
		{`{"log":"apple"}`, ``, `"apple"`},
		{`{"a":1,"b":2}`, ``, `{"a":1,"b":2}`},
		{`[{"var":"a"},2]`, `{"a":1}`, `[1,2]`},
		{`"plain"`, ``, `"plain"`},
	}
	for _, tt := range tests {
		t.Run(tt.logic, func(t *testing.T) {
			got, err := evalJSON(t, tt.logic, tt.data)
			if err != nil {
				t.Fatal(err)
			}
			var want any
			json.Unmarshal([]byte(tt.want), &want)
			if !reflect.DeepEqual(got, want) {
				g, _ := json.Marshal(got)
				t.Errorf("= %s, want %s", g, tt.want)
			}
		})
	}
}

func TestJsonLogic_CompileErrors(t *testing.T) {
	tests := []struct{ logic, want string }{
		{`{"fractionl":[["a",50]]}`, `rule: unknown operator "fractionl"`},
		{`{"if":[true,{"nope":1}]}`, `rule.if[1]: unknown operator "nope"`},
		{`{"$ref":"missing"}`, `rule.$ref: no evaluator "missing"`},
		{`{"$ref":1}`, `rule.$ref: want the name of an evaluator as a string`},
		{strings.Repeat(`{"!":`, 70) + `true` + strings.Repeat(`}`, 70), `nested deeper than 64 levels`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := evalJSON(t, tt.logic, "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestJsonLogic_RefCycleEnds(t *testing.T) {
	ev := map[string]any{"a": map[string]any{"$ref": "b"}, "b": map[string]any{"!": map[string]any{"$ref": "a"}}}
	if _, err := compile(map[string]any{"$ref": "a"}, ev, "targeting", 0); err == nil || !strings.Contains(err.Error(), "$ref cycle") {
		t.Errorf("compile of a $ref cycle: %v, want a depth error", err)
	}
}

func TestJsonLogic_StepBudget(t *testing.T) {
	// map over 1000 elements, nested three deep: 10^9 operations without the budget.
	data := `{"l":[` + strings.TrimSuffix(strings.Repeat("0,", 1000), ",") + `]}`
	logic := `{"map":[{"var":"l"},{"map":[{"var":"l"},{"map":[{"var":"l"},{"+":[1,1]}]}]}]}`
	var d any
	json.Unmarshal([]byte(data), &d)
	var l any
	json.Unmarshal([]byte(logic), &l)
	r, err := compile(l, nil, "rule", 0)
	if err != nil {
		t.Fatal(err)
	}
	e := evaluation{}
	// The inner lists come from the element, a number: give them the outer list instead.
	_, err = e.eval(&rule{op: "map", args: []*rule{{lit: d.(map[string]any)["l"]}, {op: "map", args: []*rule{{lit: d.(map[string]any)["l"]}, {op: "map", args: []*rule{{lit: d.(map[string]any)["l"]}, r.args[1].args[1].args[1]}}}}}}, d)
	if err != errSteps {
		t.Errorf("err = %v, want errSteps", err)
	}
}
