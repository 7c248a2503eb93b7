package flags

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/mod/semver"
)

// Limits of a targeting rule. A rule comes from a file or the admin API, so its size is
// bounded by those; these bound what evaluation may cost on the request path.
const (
	// maxRuleDepth bounds the nesting of a compiled rule, $ref expansions included, so
	// compiling and evaluating never recurse without bound (a $ref cycle ends here too).
	maxRuleDepth = 64
	// maxSteps bounds the operations one evaluation runs: map/filter/reduce over large
	// context arrays nested in each other could otherwise take unbounded time.
	maxSteps = 100_000
)

// errSteps ends an evaluation that ran more than maxSteps operations.
var errSteps = fmt.Errorf("targeting rule ran more than %d operations; simplify it or send a smaller evaluation context", maxSteps)

// rule is a compiled JsonLogic expression. op is "" for a literal (lit), "[]" for an array
// whose elements are rules, and otherwise an operator applied to args.
type rule struct {
	op   string
	args []*rule
	lit  any
}

// operators lists the JsonLogic operations (jsonlogic.com/operations.html) and flagd's
// custom ones (flagd.dev/reference/custom-operations). compile refuses any other.
var operators = map[string]bool{
	"var": true, "missing": true, "missing_some": true,
	"if": true, "?:": true, "==": true, "===": true, "!=": true, "!==": true,
	"!": true, "!!": true, "and": true, "or": true,
	">": true, ">=": true, "<": true, "<=": true, "max": true, "min": true,
	"+": true, "-": true, "*": true, "/": true, "%": true,
	"map": true, "filter": true, "reduce": true, "all": true, "none": true, "some": true, "merge": true,
	"in": true, "cat": true, "substr": true, "log": true,
	// Not on jsonlogic.com, but flagd's JsonLogic has them, so flag files may use them.
	"abs": true, "set": true, "contains_all": true, "contains_any": true, "contains_none": true,
	"fractional": true, "sem_ver": true, "starts_with": true, "ends_with": true,
}

// compile turns decoded JSON into a rule. evaluators resolves {"$ref": "name"} (flagd's
// shared rules, SPEC §6); path names the position for errors, e.g. "targeting.if[1]".
func compile(v any, evaluators map[string]any, path string, depth int) (*rule, error) {
	if depth > maxRuleDepth {
		return nil, fieldErr(path, "rule nested deeper than %d levels (or a $ref cycle); flatten it", maxRuleDepth)
	}
	switch v := v.(type) {
	case []any:
		r := &rule{op: "[]", args: make([]*rule, len(v))}
		for i, e := range v {
			a, err := compile(e, evaluators, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			r.args[i] = a
		}
		return r, nil
	case map[string]any:
		if len(v) != 1 {
			// JsonLogic reads an object that is not {"op": args} as data.
			return &rule{lit: v}, nil
		}
		for op, a := range v {
			if op == "$ref" {
				name, ok := a.(string)
				if !ok {
					return nil, fieldErr(path+".$ref", "want the name of an evaluator as a string, got %s", kindOf(a))
				}
				ev, ok := evaluators[name]
				if !ok {
					return nil, fieldErr(path+".$ref", "no evaluator %q; define it under \"$evaluators\" in the same file", name)
				}
				return compile(ev, evaluators, path+".$ref("+name+")", depth+1)
			}
			if !operators[op] {
				return nil, fieldErr(path, "unknown operator %q; see jsonlogic.com/operations.html and flagd's fractional, sem_ver, starts_with, ends_with", op)
			}
			r := &rule{op: op}
			list, ok := a.([]any)
			if !ok {
				list = []any{a} // {"var": "x"} is short for {"var": ["x"]}
			}
			r.args = make([]*rule, len(list))
			for i, e := range list {
				c, err := compile(e, evaluators, fmt.Sprintf("%s.%s[%d]", path, op, i), depth+1)
				if err != nil {
					return nil, err
				}
				r.args[i] = c
			}
			return r, nil
		}
	}
	return &rule{lit: v}, nil
}

// usesTimestamp reports whether r reads $flagd.timestamp, which makes its result change
// with time alone.
func (r *rule) usesTimestamp() bool {
	if r.op == "var" && len(r.args) > 0 && r.args[0].op == "" {
		if s, ok := r.args[0].lit.(string); ok && strings.HasPrefix(s, "$flagd.timestamp") {
			return true
		}
	}
	for _, a := range r.args {
		if a.usesTimestamp() {
			return true
		}
	}
	return false
}

// evaluation is the state of one rule evaluation.
type evaluation struct {
	root  map[string]any // the evaluation context with $flagd, for the custom operators
	steps int
	// noTargetingKey is set when fractional needed the targeting key and had none.
	noTargetingKey bool
	// split holds the variant fractional chose last, so the caller can report SPLIT.
	split    string
	hasSplit bool
}

// eval evaluates r against data (the root context, or an element inside map/filter/...).
func (e *evaluation) eval(r *rule, data any) (any, error) {
	e.steps++
	if e.steps > maxSteps {
		return nil, errSteps
	}
	switch r.op {
	case "":
		return r.lit, nil
	case "[]":
		return e.evalArgs(r.args, data)
	// Operations that decide what to evaluate come first: their arguments are lazy.
	case "if", "?:":
		i := 0
		for ; i+1 < len(r.args); i += 2 {
			c, err := e.eval(r.args[i], data)
			if err != nil {
				return nil, err
			}
			if truthy(c) {
				return e.eval(r.args[i+1], data)
			}
		}
		if i < len(r.args) {
			return e.eval(r.args[i], data)
		}
		return nil, nil
	case "and", "or":
		var v any
		for _, a := range r.args {
			var err error
			if v, err = e.eval(a, data); err != nil {
				return nil, err
			}
			if truthy(v) == (r.op == "or") {
				return v, nil
			}
		}
		return v, nil
	case "map", "filter", "all", "none", "some", "reduce":
		return e.iterate(r, data)
	}
	args, err := e.evalArgs(r.args, data)
	if err != nil {
		return nil, err
	}
	arg := func(i int) any {
		if i < len(args) {
			return args[i]
		}
		return nil
	}
	switch r.op {
	case "var":
		return lookup(data, args), nil
	case "missing":
		keys := args
		if len(r.args) == 1 && r.args[0].op != "[]" {
			if l, ok := args[0].([]any); ok {
				keys = l // {"missing": {"merge": [...]}}: the list it gives
			}
		}
		return missing(data, keys), nil
	case "missing_some":
		need := int(libNumber(arg(0)))
		keys, _ := arg(1).([]any)
		if len(keys) == 0 {
			return []any{}, nil
		}
		miss := missing(data, keys)
		if need > len(keys)-len(miss) {
			return miss, nil
		}
		return []any{}, nil
	case "==", "!=":
		return (len(args) >= 2 && looseEqual(args[0], args[1])) == (r.op == "=="), nil
	case "===", "!==":
		return (len(args) >= 2 && strictEqual(args[0], args[1])) == (r.op == "==="), nil
	case "!":
		return !truthy(arg(0)), nil
	case "!!":
		return truthy(arg(0)), nil
	case "<", "<=", ">", ">=":
		if len(args) < 2 {
			return false, nil
		}
		ok := compare(r.op, args[0], args[1])
		if len(args) == 3 { // between: a < b < c, and c < b < a for ">"
			ok = ok && compare(r.op, args[1], args[2])
		}
		return ok, nil
	case "max", "min":
		if len(args) == 0 {
			return nil, nil
		}
		best := libNumber(args[0])
		for _, a := range args[1:] {
			if n := libNumber(a); (r.op == "max" && n > best) || (r.op == "min" && n < best) {
				best = n
			}
		}
		return number(best), nil
	case "+":
		sum := 0.0
		for _, a := range args {
			sum += libNumber(a)
		}
		return number(sum), nil
	case "*":
		p := 1.0
		for _, a := range args {
			p *= libNumber(a)
		}
		return number(p), nil
	case "-", "/":
		switch len(args) {
		case 0:
			return 0.0, nil
		case 1:
			if r.op == "-" {
				return number(-libNumber(args[0])), nil
			}
		}
		acc := libNumber(args[0])
		for _, a := range args[1:] {
			if r.op == "-" {
				acc -= libNumber(a)
			} else {
				acc /= libNumber(a)
			}
		}
		return number(acc), nil
	case "%":
		return number(math.Mod(libNumber(arg(0)), libNumber(arg(1)))), nil
	case "abs":
		if len(args) == 0 {
			return 0.0, nil
		}
		return number(math.Abs(libNumber(args[0]))), nil
	case "merge":
		out := []any{}
		for _, a := range args {
			if l, ok := a.([]any); ok {
				out = append(out, l...)
			} else {
				out = append(out, a)
			}
		}
		return out, nil
	case "in":
		return in(arg(0), arg(1)), nil
	case "contains_all", "contains_any", "contains_none":
		return contains(r.op, args), nil
	case "cat":
		switch len(args) {
		case 0:
			return "", nil
		case 1:
			return libString(args[0]), nil
		}
		var b strings.Builder
		for _, a := range args {
			b.WriteString(libString(a))
		}
		return strings.TrimSpace(b.String()), nil // as flagd's JsonLogic does
	case "substr":
		return substr(libString(arg(0)), libNumber(arg(1)), arg(2), len(args) > 2), nil
	case "set":
		obj, ok := arg(0).(map[string]any)
		prop, ok2 := arg(1).(string)
		if len(args) < 3 || !ok || !ok2 {
			return arg(0), nil
		}
		out := make(map[string]any, len(obj)+1)
		for k, v := range obj {
			out[k] = v
		}
		out[prop] = args[2]
		return out, nil
	case "log":
		return arg(0), nil
	case "starts_with", "ends_with":
		s, ok1 := arg(0).(string)
		p, ok2 := arg(1).(string)
		if len(args) != 2 || !ok1 || !ok2 {
			return nil, nil // flagd: a malformed comparison is null, not an error
		}
		if r.op == "starts_with" {
			return strings.HasPrefix(s, p), nil
		}
		return strings.HasSuffix(s, p), nil
	case "sem_ver":
		return semVer(args), nil
	case "fractional":
		return e.fractional(args), nil
	}
	return nil, fmt.Errorf("operator %q has no implementation; report this bug", r.op)
}

func (e *evaluation) evalArgs(list []*rule, data any) ([]any, error) {
	out := make([]any, len(list))
	for i, a := range list {
		v, err := e.eval(a, data)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// iterate runs the array operations, whose second argument is evaluated once per element
// with the element as data. Their edge cases are those of flagd's JsonLogic
// (github.com/diegoholiveira/jsonlogic/v3): missing arguments give [] (map, filter), 0
// (reduce), false (all, some) or true (none); reduce over what is not a list is 0, keeps its
// accumulator of the initial value's type and skips null elements.
func (e *evaluation) iterate(r *rule, data any) (any, error) {
	if r.op == "reduce" && len(r.args) < 3 {
		return 0.0, nil
	}
	var subject any
	if len(r.args) > 0 {
		var err error
		if subject, err = e.eval(r.args[0], data); err != nil {
			return nil, err
		}
	}
	list, _ := subject.([]any)
	switch r.op {
	case "map", "filter":
		out := []any{}
		if len(r.args) < 2 {
			return out, nil
		}
		for _, x := range list {
			y, err := e.eval(r.args[1], x)
			if err != nil {
				return nil, err
			}
			if r.op == "map" {
				out = append(out, y)
			} else if truthy(y) {
				out = append(out, x)
			}
		}
		return out, nil
	case "reduce":
		acc, err := e.eval(r.args[2], data)
		if err != nil {
			return nil, err
		}
		if list == nil {
			return 0.0, nil
		}
		for _, x := range list {
			if x == nil {
				continue
			}
			v, err := e.eval(r.args[1], map[string]any{"current": x, "accumulator": acc})
			if err != nil {
				return nil, err
			}
			switch acc.(type) {
			case float64:
				acc = number(libNumber(v))
			case string:
				acc = libString(v)
			case bool:
				acc = truthy(v)
			default:
				acc = v
			}
		}
		return acc, nil
	}
	// all, none, some
	if !truthy(subject) || len(r.args) < 2 {
		return r.op == "none", nil
	}
	for _, x := range list {
		y, err := e.eval(r.args[1], x)
		if err != nil {
			return nil, err
		}
		switch {
		case r.op == "all" && !truthy(y):
			return false, nil
		case r.op == "none" && truthy(y):
			return false, nil
		case r.op == "some" && truthy(y):
			return true, nil
		}
	}
	return r.op != "some" && len(list) > 0 || r.op == "none", nil
}

// fractional is flagd's pseudorandom split, as flagd ≥ 0.15 buckets ("fractional bucketing
// improvements", flagd's high-precision fractional bucketing ADR): [bucketBy?, [variant,
// weight?]...].
//
// The bucketing value is the first argument when it is a string. When the first argument
// is a bucket (the shorthand), or an expression that gave null (a missing attribute), it is
// $flagd.flagKey followed by the targetingKey; without a targetingKey the shorthand is
// TARGETING_KEY_MISSING and the null expression is null, the default. Variant names are
// strings, booleans, numbers or null (arguments are evaluated first, so a name or a weight
// may be computed by nested JsonLogic). A weight is a whole number, 1 when absent; a
// negative one counts as 0; the weights sum to at most math.MaxInt32.
//
// The murmur3 hash h of the bucketing value, unsigned, picks the bucket
// (h × total) >> 32 in [0, total), and the variant whose run of weights covers it wins:
// integer arithmetic, so every hash, 0x7FFFFFFF and 0x80000000 included, lands in a
// bucket. Malformed arguments, or weights that are all 0, give null.
func (e *evaluation) fractional(args []any) any {
	if len(args) < 1 {
		return nil
	}
	var bucketBy string
	switch first := args[0].(type) {
	case string:
		bucketBy, args = first, args[1:]
	case []any, nil:
		if first == nil {
			args = args[1:]
		}
		tk, present := e.root["targetingKey"]
		if !present || tk == nil {
			e.noTargetingKey = first != nil
			return nil
		}
		flagd, _ := e.root["$flagd"].(map[string]any)
		key, _ := flagd["flagKey"].(string)
		bucketBy = key + toString(tk)
	default:
		return nil // a bucketing expression that gave a number, a boolean or an object
	}
	if len(args) == 0 {
		return nil
	}
	type share struct {
		variant any
		weight  uint64
	}
	shares := make([]share, 0, len(args))
	var total uint64
	for _, a := range args {
		d, ok := a.([]any)
		if !ok || len(d) == 0 {
			return nil
		}
		switch d[0].(type) {
		case string, bool, float64, nil:
		default:
			return nil
		}
		w := 1.0
		if len(d) >= 2 && d[1] != nil {
			if w, ok = d[1].(float64); !ok || w != math.Trunc(w) || w > math.MaxInt32 {
				return nil
			}
		}
		total += uint64(max(w, 0))
		if total > math.MaxInt32 {
			return nil
		}
		shares = append(shares, share{d[0], uint64(max(w, 0))})
	}
	if total == 0 {
		return nil
	}
	bucket := uint64(murmur3(bucketBy)) * total >> 32
	var end uint64
	for _, s := range shares {
		end += s.weight
		if bucket < end {
			if s.variant != nil {
				e.split, e.hasSplit = toString(s.variant), true
			}
			return s.variant
		}
	}
	return nil // unreachable: bucket < total
}

// lookup is JsonLogic's var as flagd's JsonLogic reads it: args are [path] or [path,
// default]; the path is dotted, its empty parts skipped, array elements addressed by
// number; an absent or null value gives the default.
func lookup(data any, args []any) any {
	if len(args) == 0 {
		return data
	}
	var def any
	if len(args) == 2 {
		def = args[1]
	}
	var p string
	switch k := args[0].(type) {
	case nil:
		if isPrimitive(data) {
			return data
		}
		return nil
	case string:
		p = k
	case float64:
		p = strconv.FormatFloat(k, 'f', -1, 64)
	default:
		return def
	}
	if p == "" {
		return data
	}
	if data == nil {
		return def
	}
	cur := data
	for part := range strings.SplitSeq(p, ".") {
		if part == "" {
			continue
		}
		switch c := cur.(type) {
		case map[string]any:
			cur = c[part]
		case []any:
			f, err := strconv.ParseFloat(part, 64)
			if err != nil || !(f >= 0 && f < float64(len(c))) {
				return def
			}
			cur = c[int(f)]
		default:
			return def
		}
		if cur == nil {
			return def
		}
	}
	return cur
}

func isPrimitive(v any) bool {
	switch v.(type) {
	case bool, string, float64:
		return true
	}
	return false
}

// missing returns the keys whose value in data is absent or null (flagd's JsonLogic counts
// "" as present). A key that is a list is a var: [path, default].
func missing(data any, keys []any) []any {
	out := []any{}
	for _, k := range keys {
		spec, ok := k.([]any)
		if !ok {
			spec = []any{k}
		}
		if lookup(data, spec) == nil {
			out = append(out, k)
		}
	}
	return out
}

// semVer is flagd's sem_ver: [version, operator, version]. Versions are strings or
// numbers, with or without a leading "v" or "V", normalised as flagd does (a number is
// read as its text, so 1 is "1"; a partial "1" or "1.2" is 1.0.0 or 1.2.0) and compared as
// golang.org/x/mod/semver does (as flagd does: build metadata is ignored). "^" is true
// when the major versions are equal, "~" when major and minor are. Anything malformed
// gives null, as in flagd.
func semVer(args []any) any {
	if len(args) != 3 {
		return nil
	}
	a, ok1 := semverOf(args[0])
	op, ok2 := args[1].(string)
	b, ok3 := semverOf(args[2])
	if !ok1 || !ok2 || !ok3 {
		return nil
	}
	c := semver.Compare(a, b)
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	case "^":
		return semver.Major(a) == semver.Major(b)
	case "~":
		return semver.MajorMinor(a) == semver.MajorMinor(b)
	}
	return nil
}

func semverOf(v any) (string, bool) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case float64:
		s = formatNumber(v) // a context attribute {"version": 2} or a rule's literal 1.5
	default:
		return "", false
	}
	switch {
	case strings.HasPrefix(s, "V"):
		s = "v" + s[1:]
	case !strings.HasPrefix(s, "v"):
		s = "v" + s
	}
	return s, semver.IsValid(s)
}

// truthy is JsonLogic's truthiness: JavaScript's, except that [] is false.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case float64:
		return v != 0 && !math.IsNaN(v)
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0 // flagd's JsonLogic: {} is false (JavaScript has it true)
	}
	return true
}

// number keeps NaN and infinities, which JSON cannot carry, out of results.
func number(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}

// toNumber is JavaScript's Number(v).
func toNumber(v any) float64 {
	switch v := v.(type) {
	case nil:
		return 0
	case bool:
		if v {
			return 1
		}
		return 0
	case float64:
		return v
	case string:
		s := strings.TrimSpace(v)
		if s == "" {
			return 0
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) || strings.ContainsAny(s, "_xXpP") || s == "Inf" || s == "+Inf" || s == "-Inf" {
			// Go accepts forms JavaScript does not ("1_0", "0x1p4", "Inf"): NaN, as there.
			if s == "Infinity" || s == "+Infinity" {
				return math.Inf(1)
			}
			if s == "-Infinity" {
				return math.Inf(-1)
			}
			return math.NaN()
		}
		return f
	case []any:
		return toNumber(toString(v))
	}
	return math.NaN()
}

// toString is JavaScript's String(v).
func toString(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return formatNumber(v)
	case string:
		return v
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			if x != nil {
				parts[i] = toString(x)
			}
		}
		return strings.Join(parts, ",")
	}
	return "[object Object]"
}

// formatNumber writes f as JavaScript does for the common range.
func formatNumber(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		return "0"
	case math.Abs(f) >= 1e21 || math.Abs(f) < 1e-6:
		s := strconv.FormatFloat(f, 'e', -1, 64)
		// JavaScript writes 1e+21 and 1e-7, Go 1e+21 and 1e-07.
		if i := strings.Index(s, "e-0"); i >= 0 {
			s = s[:i+2] + s[i+3:]
		}
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// libNumber is the number flagd's JsonLogic reads for arithmetic, min, max and substr: a
// string is parsed as Go parses a float, and 0 when it is not one (JavaScript has NaN).
// Other kinds, where flagd's evaluation fails, read as JavaScript's Number().
func libNumber(v any) float64 {
	if s, ok := v.(string); ok {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0
		}
		return f
	}
	return toNumber(v)
}

// jsNumber is the number flagd's JsonLogic compares with (==, <, ...): a string that is
// blank is 0, one that Go cannot parse as a float is NaN, and so are arrays and objects.
func jsNumber(v any) float64 {
	switch v := v.(type) {
	case string:
		if strings.TrimSpace(v) == "" {
			return 0
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return math.NaN()
		}
		return f
	case []any, map[string]any:
		return math.NaN()
	}
	return toNumber(v)
}

// libString is the text flagd's JsonLogic makes of a value for cat and substr: null is "",
// a number has no exponent. Booleans, arrays and objects, where flagd's evaluation fails,
// read as JavaScript's String().
func libString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return toString(v)
}

// looseEqual is == as flagd's JsonLogic has it: null equals only null, two strings compare
// as strings, anything else as numbers (jsNumber).
func looseEqual(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if x, ok := a.(string); ok {
		if y, ok := b.(string); ok {
			return x == y
		}
	}
	return jsNumber(a) == jsNumber(b)
}

// strictEqual is === as flagd's JsonLogic has it: == between values of one kind.
func strictEqual(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if kindOf(a) != kindOf(b) {
		return false
	}
	return looseEqual(a, b)
}

// less is flagd's JsonLogic <: strings compare as strings, anything else as numbers (NaN
// compares false).
func less(a, b any) bool {
	if x, ok := a.(string); ok {
		if y, ok := b.(string); ok {
			return x < y
		}
	}
	return jsNumber(a) < jsNumber(b)
}

// compare is op between a and b: <= is < or ==, and > and >= read their arguments right to
// left, as flagd's JsonLogic does (so null <= 0 is false there, unlike JavaScript).
func compare(op string, a, b any) bool {
	switch op {
	case "<":
		return less(a, b)
	case "<=":
		return less(a, b) || looseEqual(a, b)
	case ">":
		return less(b, a)
	}
	return less(b, a) || looseEqual(b, a)
}

// in is flagd's JsonLogic in: a substring of a string, or an element of a list, where a
// number matches an element that reads as that number and an element that is a list
// [low, high] is the range between them.
func in(needle, hay any) bool {
	switch hay := hay.(type) {
	case string:
		return strings.Contains(hay, toString(needle))
	case []any:
		for _, x := range hay {
			if r, ok := x.([]any); ok {
				if len(r) >= 2 {
					v := libNumber(needle)
					if v >= libNumber(r[0]) && libNumber(r[1]) >= v {
						return true
					}
				}
				continue
			}
			if n, ok := needle.(float64); ok {
				if libNumber(x) == n {
					return true
				}
				continue
			}
			if isPrimitive(x) || x == nil {
				if x == needle {
					return true
				}
			}
		}
	}
	return false
}

// contains is flagd's JsonLogic contains_all, contains_any and contains_none: [list,
// elements].
func contains(op string, args []any) bool {
	list, ok1 := argList(args, 0)
	elems, ok2 := argList(args, 1)
	if len(args) != 2 || !ok1 || !ok2 {
		return op == "contains_none"
	}
	has := func(e any) bool {
		for _, x := range list {
			if (isPrimitive(x) || x == nil) && (isPrimitive(e) || e == nil) && x == e {
				return true
			}
		}
		return false
	}
	for _, e := range elems {
		switch found := has(e); {
		case op == "contains_all" && !found:
			return false
		case op == "contains_any" && found:
			return true
		case op == "contains_none" && found:
			return false
		}
	}
	return op != "contains_any"
}

func argList(args []any, i int) ([]any, bool) {
	if i >= len(args) {
		return nil, false
	}
	l, ok := args[i].([]any)
	return l, ok && l != nil
}

// substr is flagd's JsonLogic substr on characters: a negative start counts from the end,
// a start outside the string gives all of it, a negative length ends that many characters
// before the end (counted from the start of the string, as flagd does).
func substr(s string, start float64, length any, hasLength bool) string {
	r := []rune(s)
	if !utf8.ValidString(s) {
		r = []rune(strings.ToValidUTF8(s, "\uFFFD"))
	}
	n := len(r)
	toInt := func(f float64) int {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1<<53 {
			return math.MinInt32 // what Go makes of them on amd64, within range
		}
		return int(f)
	}
	from := toInt(start)
	if from < 0 {
		from = n + from
	}
	if from < 0 || from > n {
		return string(r)
	}
	l := n
	if hasLength {
		l = toInt(libNumber(length))
	}
	var to int
	if l < 0 {
		to = n + l
	} else {
		to = from + min(l, n)
	}
	to = min(to, n)
	if to < from {
		return "" // flagd's evaluation fails here
	}
	return string(r[from:to])
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
