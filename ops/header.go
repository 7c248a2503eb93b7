package ops

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"

	"github.com/dunglas/httpsfv"
)

// maxSFInteger is the largest magnitude of an RFC 9651 Integer (§3.3.1).
const maxSFInteger = 999_999_999_999_999

// ParseHeader parses one ctx-ops header value (SPEC §4), an RFC 9651 List whose items are
// the tokens incr, put, del, add and rem with parameters:
//
//	incr;key="k"[;by=1][;ttl=seconds]
//	put;map="m";key="k";value=<string|integer|decimal|boolean>[;ttl=seconds]
//	del;map="m";key="k"
//	add;set="s";member="x"[;ttl=seconds]
//	rem;set="s";member="x"
//
// Parameters may come in any order. A put value becomes the JSON string, number or boolean
// it spells. An empty value yields no Ops and no error, as RFC 9651 treats an empty list like
// an absent field. Errors name the 1-based item and the parameter.
func ParseHeader(v string) ([]Op, error) {
	return ParseHeaderValues([]string{v})
}

// ParseHeaderValues parses every ctx-ops header line of a message as one list: RFC 9651 §4.2
// joins the lines of a List field with ", " before parsing.
func ParseHeaderValues(values []string) ([]Op, error) {
	list, err := httpsfv.UnmarshalList(values)
	if err != nil {
		return nil, fmt.Errorf("ctx-ops: not a structured field list (%w); want e.g. %s", err, specs[Incr].header)
	}
	ops := make([]Op, 0, len(list))
	for i, m := range list {
		op, err := parseItem(m)
		if err != nil {
			return nil, fmt.Errorf("ctx-ops item %d%w", i+1, err)
		}
		ops = append(ops, op)
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return ops, nil
}

// parseItem decodes one list member. Its errors start with the text that follows
// "ctx-ops item N" in the final message.
func parseItem(m httpsfv.Member) (Op, error) {
	item, ok := m.(httpsfv.Item)
	if !ok {
		return Op{}, fmt.Errorf(": an inner list is not an operation; want a token such as %s", specs[Incr].header)
	}
	tok, ok := item.Value.(httpsfv.Token)
	if !ok {
		return Op{}, fmt.Errorf(": want an operation token (incr, put, del, add or rem), got %s", describe(item.Value))
	}
	kind, err := ParseKind(string(tok))
	if err != nil {
		return Op{}, fmt.Errorf(": %w", err)
	}
	fail := func(format string, args ...any) (Op, error) {
		return Op{}, fmt.Errorf(" (%s): %s; want %s", kind, fmt.Sprintf(format, args...), specs[kind].header)
	}

	op := Op{Kind: kind}
	if kind == Incr {
		op.By = 1
	}
	for _, name := range item.Params.Names() {
		if !kind.takes(name) {
			return fail("unknown parameter %q (%s takes %s)", name, kind, kind.paramList())
		}
		v, _ := item.Params.Get(name)
		switch name {
		case "key", "map", "set", "member":
			s, ok := sfText(v)
			if !ok {
				return fail("parameter %q is %s, not a string", name, describe(v))
			}
			op.setName(name, s)
		case "by":
			n, ok := v.(int64)
			if !ok {
				return fail("parameter \"by\" is %s, not an integer", describe(v))
			}
			op.By = n
		case "ttl":
			n, ok := v.(int64)
			if !ok {
				return fail("parameter \"ttl\" is %s, not an integer number of seconds", describe(v))
			}
			if n < 0 || n > int64(MaxTTL/time.Second) {
				return fail("parameter \"ttl\" is %d; want 0 to %d seconds", n, int64(MaxTTL/time.Second))
			}
			op.TTL = time.Duration(n) * time.Second
		case "value":
			raw, err := jsonFromSF(v)
			if err != nil {
				return fail("parameter \"value\" %v", err)
			}
			op.Value = raw
		}
	}
	for _, name := range specs[kind].required {
		if _, ok := item.Params.Get(name); !ok {
			return fail("parameter %q missing", name)
		}
	}
	if err := Validate(op); err != nil {
		return Op{}, fmt.Errorf(" (%s): %w", kind, err)
	}
	return op, nil
}

// sfText returns the text of an sf-string or a Display String.
func sfText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case httpsfv.DisplayString:
		return string(v), true
	}
	return "", false
}

// jsonFromSF converts a put value to the JSON it stands for. The output is canonical (see
// formatValue) so that Format and ParseHeader invert each other exactly.
func jsonFromSF(v any) (json.RawMessage, error) {
	switch v := v.(type) {
	case string:
		return jsonString(v), nil
	case httpsfv.DisplayString:
		return jsonString(string(v)), nil
	case int64:
		return json.RawMessage(strconv.FormatInt(v, 10)), nil
	case float64:
		if v == 0 {
			return json.RawMessage("0"), nil // JSON -0 would not survive a round trip
		}
		return json.RawMessage(strconv.FormatFloat(v, 'f', -1, 64)), nil
	case bool:
		return json.RawMessage(strconv.FormatBool(v)), nil
	case httpsfv.Token:
		return nil, fmt.Errorf("is the token %s; quote text (value=%q)", v, string(v))
	}
	return nil, fmt.Errorf("is %s; want a string, integer, decimal or boolean", describe(v))
}

// jsonString encodes s as a JSON string without the HTML escaping of json.Marshal, so
// values stay readable when served back.
func jsonString(s string) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// describe names the RFC 9651 type of a bare item for error messages.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return "a string"
	case httpsfv.DisplayString:
		return "a display string"
	case int64:
		return "an integer"
	case float64:
		return "a decimal"
	case bool:
		if v {
			return "a boolean (a parameter without =value is boolean true)"
		}
		return "a boolean"
	case httpsfv.Token:
		return "the token " + string(v)
	case []byte:
		return "a byte sequence"
	case time.Time:
		return "a date"
	}
	return fmt.Sprintf("a %T", v)
}

// Format writes ops as a ctx-ops header value that ParseHeader turns back into the same
// ops. A Put value must be a JSON string, boolean, or number that RFC 9651 can carry
// exactly (an integer of up to 15 digits, or a decimal of up to 12 integer and 3 fraction
// digits); an object, array, null or other number is an error, as is a TTL that is not a
// whole number of seconds. Use the JSON form of the ops endpoint for such ops.
//
// The round trip is byte-exact when each Value is in the canonical form ParseHeader
// produces (compact, strings without HTML escapes, numbers without exponent or trailing
// zeros); otherwise the parsed Value is the same JSON value spelled canonically.
func Format(ops []Op) (string, error) {
	list := make(httpsfv.List, 0, len(ops))
	for i, op := range ops {
		item, err := formatOp(op)
		if err != nil {
			return "", fmt.Errorf("format op %d (%s): %w", i+1, op.Kind, err)
		}
		list = append(list, item)
	}
	s, err := httpsfv.Marshal(list)
	if err != nil {
		return "", fmt.Errorf("format ctx-ops: %w", err)
	}
	return s, nil
}

func formatOp(op Op) (httpsfv.Item, error) {
	if err := Validate(op); err != nil {
		return httpsfv.Item{}, err
	}
	item := httpsfv.NewItem(httpsfv.Token(op.Kind.String()))
	for _, name := range specs[op.Kind].params {
		switch name {
		case "key":
			item.Params.Add(name, sfString(op.Key))
		case "map":
			item.Params.Add(name, sfString(op.Map))
		case "set":
			item.Params.Add(name, sfString(op.Set))
		case "member":
			item.Params.Add(name, sfString(op.Member))
		case "by":
			if op.By < -maxSFInteger || op.By > maxSFInteger {
				return httpsfv.Item{}, fmt.Errorf(`"by" %d is beyond the ±%d a structured field integer holds`, op.By, maxSFInteger)
			}
			if op.By != 1 {
				item.Params.Add(name, op.By)
			}
		case "ttl":
			if op.TTL%time.Second != 0 {
				return httpsfv.Item{}, fmt.Errorf(`"ttl" %s is not a whole number of seconds, which is all ctx-ops can carry`, op.TTL)
			}
			if op.TTL != 0 {
				item.Params.Add(name, int64(op.TTL/time.Second))
			}
		case "value":
			v, err := formatValue(op.Value)
			if err != nil {
				return httpsfv.Item{}, err
			}
			item.Params.Add(name, v)
		}
	}
	return item, nil
}

// sfString picks the RFC 9651 type that carries s: a String for printable ASCII, else a
// Display String, which percent-encodes UTF-8.
func sfString(s string) any {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return httpsfv.DisplayString(s)
		}
	}
	return s
}

var errNotSF = errors.New("ctx-ops carries only strings, booleans and numbers of at most 15 digits (3 after the point); send this op as JSON to POST /v1/contexts/{ctx}/ops")

// formatValue converts a Put value (valid JSON, checked by Validate) to a bare item.
func formatValue(raw json.RawMessage) (any, error) {
	raw = bytes.TrimSpace(raw)
	switch c := raw[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf(`"value": %w`, err)
		}
		return sfString(s), nil
	case c == 't' || c == 'f':
		return c == 't', nil
	case c == '-' || ('0' <= c && c <= '9'):
		r, ok := new(big.Rat).SetString(string(raw))
		if !ok {
			return nil, fmt.Errorf(`"value" %s is not a number`, raw)
		}
		if r.IsInt() && r.Num().IsInt64() && abs(r.Num().Int64()) <= maxSFInteger {
			return r.Num().Int64(), nil
		}
		// A decimal holds at most 12 integer and 3 fraction digits: r*1000 must be an
		// integer below 10^15.
		milli := new(big.Rat).Mul(r, big.NewRat(1000, 1))
		if milli.IsInt() && milli.Num().IsInt64() && abs(milli.Num().Int64()) <= maxSFInteger {
			f, _ := r.Float64()
			return f, nil
		}
		return nil, fmt.Errorf(`"value" %s: %w`, raw, errNotSF)
	}
	return nil, fmt.Errorf(`"value" %.40s: %w`, raw, errNotSF)
}

func abs(n int64) int64 {
	if n < 0 {
		if n == math.MinInt64 {
			return math.MaxInt64
		}
		return -n
	}
	return n
}
