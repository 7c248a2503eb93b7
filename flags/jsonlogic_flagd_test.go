package flags

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	flagdjsonlogic "github.com/diegoholiveira/jsonlogic/v3"
)

// The JsonLogic evaluator against the library flagd evaluates targeting with,
// github.com/diegoholiveira/jsonlogic/v3 (a test dependency only): a corpus, a generated
// differential, a fuzz target, and the differences README.md documents, each pinned here.

// flagdApply evaluates rule on data as flagd does (jsonlogic.Apply on the JSON texts). It
// reports the library's failures, panics included, as errors: flagd answers those with an
// error (PARSE_ERROR), never a value.
func flagdApply(rule, data string) (out string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("flagd's JsonLogic panics: %v", p)
		}
	}()
	if data == "" {
		data = "null"
	}
	raw, err := flagdjsonlogic.ApplyRaw(json.RawMessage(rule), json.RawMessage(data))
	if err != nil {
		return "", err
	}
	return canonicalJSON(raw)
}

// oursApply evaluates rule on data with this package's evaluator.
func oursApply(t testing.TB, rule, data string) (string, error) {
	t.Helper()
	v, err := evalJSON(t, rule, data)
	if err != nil {
		return "", err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return canonicalJSON(raw)
}

func canonicalJSON(raw []byte) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	return string(out), err
}

// flagdData is the evaluation context of the generated rules.
const flagdData = `{"a":1,"b":"x","n":null,"l":[1,2,3],"s":"","e":[],"num":"42","f":1.5,"t":true,
	"o":{"k":"v","m":{"d":4}},"items":[{"x":1,"y":"a"},{"x":2,"y":""},{"x":null}]}`

// Rules where both must agree, across the operators flagd supports.
var flagdCorpus = []struct{ rule, data string }{
	{`{"or":[false,0]}`, ``},
	{`{"or":[false,0,"a"]}`, ``},
	{`{"and":[true,"",3]}`, ``},
	{`{"and":[]}`, ``},
	{`{"missing":["a","b"]}`, `{"a":"apple","b":""}`},
	{`{"missing":["a","b"]}`, `{"a":"apple","b":null}`},
	{`{"missing":{"merge":["a",["b","c"]]}}`, `{"c":1}`},
	{`{"missing_some":[1,["a","b","c"]]}`, `{"a":"apple"}`},
	{`{"missing_some":[2,["a","b","c"]]}`, `{"a":"apple","b":""}`},
	{`{"var":"a"}`, `{"a":null}`},
	{`{"var":["a",5]}`, `{"a":null}`},
	{`{"var":["a",5]}`, `{"a":""}`},
	{`{"var":"a.b.c"}`, `{"a":{"b":{"c":"deep"}}}`},
	{`{"var":"l.1"}`, flagdData},
	{`{"var":1}`, `["zero","one"]`},
	{`{"var":""}`, `7`},
	{`{"var":"o..k"}`, flagdData},
	{`{"if":[{"<":[{"var":"t"},0]},"freezing",{"<":[{"var":"t"},100]},"liquid","gas"]}`, `{"t":55}`},
	{`{"if":[{}, "yes", "no"]}`, ``},
	{`{"!!":[{"var":"o"}]}`, flagdData},
	{`{"==":[1,"1"]}`, ``},
	{`{"==":[0,false]}`, ``},
	{`{"==":[null,0]}`, ``},
	{`{"==":[" 1",1]}`, ``},
	{`{"==":[[1],1]}`, ``},
	{`{"==":[]}`, ``},
	{`{"!=":["a"]}`, ``},
	{`{"===":[1,1]}`, ``},
	{`{"===":[true,true]}`, ``},
	{`{"<":[null,1]}`, ``},
	{`{"<=":[null,0]}`, ``},
	{`{">=":[0,null]}`, ``},
	{`{"<":[1,2,3]}`, ``},
	{`{">":[3,2,1]}`, ``},
	{`{">=":[3,3,1]}`, ``},
	{`{"<":["10","9"]}`, ``},
	{`{"<":[10,"9"]}`, ``},
	{`{"<":["a",1]}`, ``},
	{`{"max":[1,"5",3]}`, ``},
	{`{"min":["a",2]}`, ``},
	{`{"+":[{"var":"num"},1]}`, flagdData},
	{`{"+":["abc",1]}`, ``},
	{`{"-":[10,2,3]}`, ``},
	{`{"*":[]}`, ``},
	{`{"/":[12,2,3]}`, ``},
	{`{"%":[7,"3"]}`, ``},
	{`{"abs":[-3]}`, ``},
	{`{"merge":[1,[2,[3]],"a"]}`, ``},
	{`{"in":["Spring",["Spring","Summer"]]}`, ``},
	{`{"in":["Spring","Springfield"]}`, ``},
	{`{"in":[5,["5",6]]}`, ``},
	{`{"in":[5,[[1,10]]]}`, ``},
	{`{"in":["x",null]}`, ``},
	{`{"cat":["I love"," pie"]}`, ``},
	{`{"cat":[{"var":"$flagd.flagKey"},{"var":"email"}]}`, `{"$flagd":{"flagKey":"f"}}`},
	{`{"cat":["a",1.5,1e21]}`, ``},
	{`{"cat":" x "}`, ``},
	{`{"substr":["jsonlogic",4]}`, ``},
	{`{"substr":["jsonlogic",-5]}`, ``},
	{`{"substr":["jsonlogic",1,3]}`, ``},
	{`{"substr":["jsonlogic",4,-2]}`, ``},
	{`{"substr":["jsonlogic",20]}`, ``},
	{`{"substr":["héllo",1,1]}`, ``},
	{`{"map":[{"var":"l"},{"*":[{"var":""},2]}]}`, flagdData},
	{`{"map":[]}`, ``},
	{`{"filter":[{"var":"items"},{"var":"y"}]}`, flagdData},
	{`{"reduce":[{"var":"l"},{"+":[{"var":"current"},{"var":"accumulator"}]},0]}`, flagdData},
	{`{"reduce":[{"var":"l"},{"cat":[{"var":"current"},{"var":"accumulator"}]},""]}`, flagdData},
	{`{"reduce":[{"var":"l"},{"var":"current"},true]}`, flagdData},
	{`{"reduce":["abc",{"var":"current"},1]}`, ``},
	{`{"reduce":[{"var":"l"}]}`, flagdData},
	{`{"all":[{"var":"l"},{">":[{"var":""},0]}]}`, flagdData},
	{`{"all":[[],{">":[{"var":""},0]}]}`, ``},
	{`{"some":[{"var":"items"},{"==":[{"var":"x"},2]}]}`, flagdData},
	{`{"none":[{"var":"e"},true]}`, flagdData},
	{`{"contains_all":[["a","b","c"],["a","b"]]}`, ``},
	{`{"contains_any":[["a","b","c"],["x","b"]]}`, ``},
	{`{"contains_none":[["a","b","c"],["x","y"]]}`, ``},
	{`{"set":[{"var":"o"},"k","w"]}`, flagdData},
	{`{"a":1,"b":2}`, ``},
}

func TestJsonLogic_FlagdCorpus(t *testing.T) {
	for _, c := range flagdCorpus {
		t.Run(c.rule, func(t *testing.T) {
			want, err := flagdApply(c.rule, c.data)
			if err != nil {
				t.Fatalf("flagd's JsonLogic fails: %v; a corpus case must evaluate there", err)
			}
			got, err := oursApply(t, c.rule, c.data)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("= %s, flagd's JsonLogic gives %s", got, want)
			}
		})
	}
}

// flagdDifferences are the documented differences (README.md, "Feature flags and OFREP"),
// one example of each. "fails" means flagd's evaluation fails: flagd answers an error.
var flagdDifferences = []struct {
	name, rule, data, ours, flagd string
}{
	{"where flagd's JsonLogic fails, ctxprop evaluates as JavaScript does: arithmetic on null",
		`{"+":[{"var":"missing"},1]}`, `{}`, `1`, `fails`},
	{"... a boolean joined by cat",
		`{"cat":["a",true]}`, ``, `"atrue"`, `fails`},
	{"... a number looked for in a string",
		`{"in":[1,"a1"]}`, ``, `true`, `fails`},
	{"... the log operator, which flagd lacks",
		`{"log":"x"}`, ``, `"x"`, `fails`},
	{"NaN and Infinity are null here, while flagd carries them on (true, \"NaN\")",
		`{"!!":[{"/":[1,0]}]}`, ``, `false`, `true`},
	{"... and fails when one is the result",
		`{"/":[1,0]}`, ``, `null`, `fails`},
	{"- and / without arguments are 0 here, a 0 that flagd compares as NaN",
		`{"==":[{"-":[]},0]}`, ``, `true`, `false`},
	{"the second argument of filter, all, none and some reads the element only; flagd first fills in the variables the outer context has",
		`{"filter":[{"var":"l"},{"var":"a"}]}`, `{"a":1,"l":[{"b":2}]}`, `[]`, `[{"b":2}]`},
	{"a literal list as the first argument of map, filter, reduce, all, none and some is evaluated here, not in flagd",
		`{"map":[[{"var":"a"}],{"var":""}]}`, `{"a":1}`, `[1]`, `[{"var":"a"}]`},
}

// Each documented difference still holds, as documented: when flagd's JsonLogic or this
// evaluator changes, this fails and README.md is revisited.
func TestJsonLogic_FlagdDocumentedDifferences(t *testing.T) {
	for _, d := range flagdDifferences {
		t.Run(d.name, func(t *testing.T) {
			got, err := oursApply(t, d.rule, d.data)
			if err != nil || got != d.ours {
				t.Errorf("ctxprop: %s (%v), documented %s", got, err, d.ours)
			}
			f, err := flagdApply(d.rule, d.data)
			if err != nil {
				f = "fails"
			}
			if f != d.flagd {
				t.Errorf("flagd: %s (%v), documented %s", f, err, d.flagd)
			}
		})
	}
}

// ruleGen makes JsonLogic rules over the operators flagd supports from a byte stream (a
// fuzzer's input, or a random one). It leaves out, by construction, what the documented
// differences cover: the outer context's variables inside an iteration's predicate,
// literal lists of rules as an iteration's subject, divisions by what may be 0, and - and
// / without arguments.
type ruleGen struct {
	src []byte
}

func (g *ruleGen) n(k int) int {
	if len(g.src) == 0 {
		return 0
	}
	b := g.src[0]
	g.src = g.src[1:]
	return int(b) % k
}

var (
	genOps      = []string{"var", "missing", "missing_some", "if", "?:", "==", "===", "!=", "!==", "!", "!!", "and", "or", "<", "<=", ">", ">=", "max", "min", "+", "-", "*", "/", "%", "abs", "merge", "in", "cat", "substr", "contains_all", "contains_any", "contains_none", "map", "filter", "reduce", "all", "none", "some"}
	genOuter    = []string{"a", "b", "n", "l", "s", "e", "num", "f", "t", "o", "o.k", "o.m.d", "items", "items.1.x", "l.0", "z", "z.y", ""}
	genElement  = []string{"", "x", "y", "x.k"}
	genReduce   = []string{"current", "accumulator", "current.x"}
	genStrings  = []string{"", "a", "b", "x", "1", "2.5", " 3", "abc", "v1", "k", "-1"}
	genNumbers  = []float64{0, 1, 2, 3, -1, -2, 1.5, 42, 100}
	genSubjects = []string{"l", "e", "items", "s", "z", "o", "b"}
)

func (g *ruleGen) literal(depth int) any {
	switch g.n(8) {
	case 0:
		return nil
	case 1:
		return g.n(2) == 0
	case 2, 3:
		return genNumbers[g.n(len(genNumbers))]
	case 4, 5:
		return genStrings[g.n(len(genStrings))]
	case 6:
		if depth > 0 {
			l := make([]any, g.n(4))
			for i := range l {
				l[i] = g.literal(depth - 1)
			}
			return l
		}
	}
	return "a"
}

// rule makes a rule whose variables come from names; pred is set inside an iteration's
// predicate, where flagd fills in the outer context's variables first (documented), so
// there are no iterations and no var with a default there.
func (g *ruleGen) rule(depth int, names []string, pred bool) any {
	if depth <= 0 || g.n(4) == 0 {
		if g.n(2) == 0 {
			v := any(names[g.n(len(names))])
			if g.n(4) == 0 && !pred {
				v = []any{v, g.literal(0)}
			}
			return map[string]any{"var": v}
		}
		return g.literal(1)
	}
	op := genOps[g.n(len(genOps))]
	switch op {
	case "map", "filter", "reduce", "all", "none", "some":
		if pred {
			op = "if"
			break
		}
		var subject any = map[string]any{"var": genSubjects[g.n(len(genSubjects))]}
		if g.n(3) == 0 {
			subject = g.literal(0)
			if g.n(2) == 0 {
				subject = []any{g.literal(0), g.literal(0), g.literal(0)}
			}
		}
		if op == "reduce" {
			return map[string]any{op: []any{subject, map[string]any{"+": []any{g.rule(depth-1, genReduce, true), g.rule(depth-1, genReduce, true)}}, genNumbers[g.n(len(genNumbers))]}}
		}
		return map[string]any{op: []any{subject, g.rule(depth-1, genElement, true)}}
	case "/", "%":
		return map[string]any{op: []any{g.rule(depth-1, names, pred), []float64{1, 2, -3, 0.5}[g.n(4)]}}
	case "var":
		return map[string]any{"var": names[g.n(len(names))]}
	case "missing", "missing_some":
		keys := make([]any, 1+g.n(3))
		for i := range keys {
			keys[i] = names[g.n(len(names))]
		}
		if op == "missing_some" {
			return map[string]any{op: []any{float64(g.n(4)), keys}}
		}
		return map[string]any{op: keys}
	}
	args := make([]any, g.n(4))
	if op == "-" && len(args) == 0 {
		args = make([]any, 1)
	}
	for i := range args {
		args[i] = g.rule(depth-1, names, pred)
	}
	return map[string]any{op: args}
}

// checkAgainstFlagd evaluates rule both ways; where flagd's JsonLogic gives a value, ours
// must be the same.
func checkAgainstFlagd(t testing.TB, rule string) {
	want, err := flagdApply(rule, flagdData)
	if err != nil {
		return // flagd fails: documented (flagdDifferences), flagd answers an error
	}
	got, err := oursApply(t, rule, flagdData)
	if err != nil {
		t.Fatalf("%s: %v, flagd's JsonLogic gives %s", rule, err, want)
	}
	if got != want {
		t.Fatalf("%s\n= %s, flagd's JsonLogic gives %s", rule, got, want)
	}
}

// TestJsonLogic_FlagdDifferential runs the generator on a fixed random stream, so every run
// of the suite compares thousands of rules with flagd's JsonLogic.
func TestJsonLogic_FlagdDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 2026))
	src := make([]byte, 64)
	for range 20000 {
		for i := 0; i < len(src); i += 8 {
			binary.LittleEndian.PutUint64(src[i:], r.Uint64())
		}
		g := &ruleGen{src: src}
		raw, err := json.Marshal(g.rule(4, genOuter, false))
		if err != nil {
			t.Fatal(err)
		}
		checkAgainstFlagd(t, string(raw))
	}
}

// FuzzJsonLogicFlagd: any generated rule evaluates as flagd's JsonLogic evaluates it, or
// flagd's fails on it.
func FuzzJsonLogicFlagd(f *testing.F) {
	f.Add([]byte("\x00"))
	f.Add([]byte(strings.Repeat("\x05\x11\x03\x07", 16)))
	f.Add([]byte("seed: or false 0, missing with an empty string"))
	f.Fuzz(func(t *testing.T, src []byte) {
		g := &ruleGen{src: src}
		raw, err := json.Marshal(g.rule(5, genOuter, false))
		if err != nil {
			t.Fatal(err)
		}
		checkAgainstFlagd(t, string(raw))
	})
}
