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
		return lookup(data, arg(0), arg(1), len(args) > 1), nil
	case "missing":
		return missing(data, args), nil
	case "missing_some":
		need := toNumber(arg(0))
		keys, _ := arg(1).([]any)
		miss := missing(data, keys)
		if float64(len(keys)-len(miss)) >= need {
			return []any{}, nil
		}
		return miss, nil
	case "==":
		return looseEqual(arg(0), arg(1)), nil
	case "!=":
		return !looseEqual(arg(0), arg(1)), nil
	case "===":
		return strictEqual(arg(0), arg(1)), nil
	case "!==":
		return !strictEqual(arg(0), arg(1)), nil
	case "!":
		return !truthy(arg(0)), nil
	case "!!":
		return truthy(arg(0)), nil
	case "<", "<=":
		ok := compare(r.op, arg(0), arg(1))
		if len(args) >= 3 { // between: a < b < c
			ok = ok && compare(r.op, arg(1), arg(2))
		}
		return ok, nil
	case ">", ">=":
		return compare(r.op, arg(0), arg(1)), nil
	case "max", "min":
		if len(args) == 0 {
			return nil, nil
		}
		best := toNumber(args[0])
		for _, a := range args[1:] {
			n := toNumber(a)
			if math.IsNaN(n) || math.IsNaN(best) {
				best = math.NaN()
			} else if (r.op == "max") == (n > best) {
				best = n
			}
		}
		return number(best), nil
	case "+":
		sum := 0.0
		for _, a := range args {
			sum += toNumber(a)
		}
		return number(sum), nil
	case "*":
		if len(args) == 0 {
			return nil, nil
		}
		p := 1.0
		for _, a := range args {
			p *= toNumber(a)
		}
		return number(p), nil
	case "-":
		if len(args) == 1 {
			return number(-toNumber(args[0])), nil
		}
		return number(toNumber(arg(0)) - toNumber(arg(1))), nil
	case "/":
		return number(toNumber(arg(0)) / toNumber(arg(1))), nil
	case "%":
		return number(math.Mod(toNumber(arg(0)), toNumber(arg(1)))), nil
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
		switch hay := arg(1).(type) {
		case string:
			return strings.Contains(hay, toString(arg(0))), nil
		case []any:
			for _, x := range hay {
				if strictEqual(arg(0), x) {
					return true, nil
				}
			}
		}
		return false, nil
	case "cat":
		var b strings.Builder
		for _, a := range args {
			b.WriteString(toString(a))
		}
		return b.String(), nil
	case "substr":
		return substr(toString(arg(0)), toNumber(arg(1)), arg(2), len(args) > 2), nil
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
// with the element as data.
func (e *evaluation) iterate(r *rule, data any) (any, error) {
	if len(r.args) < 2 {
		return nil, nil
	}
	v, err := e.eval(r.args[0], data)
	if err != nil {
		return nil, err
	}
	list, _ := v.([]any)
	switch r.op {
	case "reduce":
		var acc any
		if len(r.args) > 2 {
			if acc, err = e.eval(r.args[2], data); err != nil {
				return nil, err
			}
		}
		for _, x := range list {
			if acc, err = e.eval(r.args[1], map[string]any{"current": x, "accumulator": acc}); err != nil {
				return nil, err
			}
		}
		return acc, nil
	case "map":
		out := make([]any, 0, len(list))
		for _, x := range list {
			y, err := e.eval(r.args[1], x)
			if err != nil {
				return nil, err
			}
			out = append(out, y)
		}
		return out, nil
	}
	out := []any{}
	matched := 0
	for _, x := range list {
		y, err := e.eval(r.args[1], x)
		if err != nil {
			return nil, err
		}
		if truthy(y) {
			matched++
			if r.op == "filter" {
				out = append(out, x)
			}
		}
	}
	switch r.op {
	case "filter":
		return out, nil
	case "all":
		return len(list) > 0 && matched == len(list), nil
	case "none":
		return matched == 0, nil
	default: // some
		return matched > 0, nil
	}
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

// lookup is JsonLogic's var: a dotted path into data, or def when absent.
func lookup(data, path, def any, hasDef bool) any {
	var p string
	switch k := path.(type) {
	case nil:
		return data
	case string:
		p = k
	case float64:
		p = toString(k)
	default:
		return def
	}
	if p == "" {
		return data
	}
	cur := data
	for part := range strings.SplitSeq(p, ".") {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[part]
			if !ok {
				return defaultOf(def, hasDef)
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(c) {
				return defaultOf(def, hasDef)
			}
			cur = c[i]
		default:
			return defaultOf(def, hasDef)
		}
	}
	return cur
}

func defaultOf(def any, has bool) any {
	if has {
		return def
	}
	return nil
}

// missing returns the keys whose value in data is absent, null or "".
func missing(data any, keys []any) []any {
	if len(keys) > 0 {
		if l, ok := keys[0].([]any); ok {
			keys = l // {"missing": [["a", "b"]]}, as produced by merge
		}
	}
	out := []any{}
	for _, k := range keys {
		v := lookup(data, k, nil, false)
		if v == nil || v == "" {
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

// truthy is JavaScript's truthiness, which JsonLogic uses (and [] is false).
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

// primitive is JavaScript's ToPrimitive for the values JSON has.
func primitive(v any) any {
	switch v.(type) {
	case []any, map[string]any:
		return toString(v)
	}
	return v
}

// looseEqual is JavaScript's ==.
func looseEqual(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	_, ca := a.([]any)
	_, ma := a.(map[string]any)
	_, cb := b.([]any)
	_, mb := b.(map[string]any)
	if (ca || ma) && (cb || mb) {
		return false // two objects are == only when they are the same object
	}
	a, b = primitive(a), primitive(b)
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return x == y
		}
	case bool:
		if y, ok := b.(bool); ok {
			return x == y
		}
	case float64:
		if y, ok := b.(float64); ok {
			return x == y
		}
	}
	return toNumber(a) == toNumber(b)
}

// strictEqual is JavaScript's ===.
func strictEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	}
	return false
}

// compare is JavaScript's relational comparison: strings compare as strings, anything
// else as numbers (NaN compares false).
func compare(op string, a, b any) bool {
	a, b = primitive(a), primitive(b)
	if x, ok := a.(string); ok {
		if y, ok := b.(string); ok {
			c := strings.Compare(x, y)
			return cmpOK(op, c)
		}
	}
	x, y := toNumber(a), toNumber(b)
	if math.IsNaN(x) || math.IsNaN(y) {
		return false
	}
	switch {
	case x < y:
		return cmpOK(op, -1)
	case x > y:
		return cmpOK(op, 1)
	}
	return cmpOK(op, 0)
}

func cmpOK(op string, c int) bool {
	switch op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	}
	return c >= 0
}

// substr is JsonLogic's substr on characters: a negative start counts from the end, a
// negative length leaves that many characters off the end.
func substr(s string, start float64, length any, hasLength bool) string {
	r := []rune(s)
	if !utf8.ValidString(s) {
		r = []rune(strings.ToValidUTF8(s, "\uFFFD"))
	}
	n := len(r)
	clamp := func(f float64) int {
		if math.IsNaN(f) {
			return 0
		}
		if f < 0 {
			f = max(float64(n)+f, 0)
		}
		return int(min(f, float64(n)))
	}
	from := clamp(math.Trunc(start))
	to := n
	if hasLength {
		l := math.Trunc(toNumber(length))
		if l < 0 {
			to = clamp(l)
		} else {
			to = int(min(float64(from)+l, float64(n)))
		}
	}
	if to < from {
		return ""
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
