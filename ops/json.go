package ops

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// ParseJSON parses the JSON form of a list of ops, the body of
// POST /v1/contexts/{ctx}/ops with Content-Type application/json:
//
//	[{"op":"incr","key":"orders","by":2,"ttl":"1h"},
//	 {"op":"put","map":"steps","key":"pay","value":{"any":"json"},"ttl":3600},
//	 {"op":"del","map":"steps","key":"pay"},
//	 {"op":"add","set":"regions","member":"eu-west"},
//	 {"op":"rem","set":"regions","member":"x"}]
//
// Fields are those of the header form; "ttl" is a Go duration string or an integer number of
// seconds, "by" defaults to 1, and "value" is any JSON value, kept compacted. Unknown,
// duplicate, missing or wrongly typed fields are errors naming the 0-based index ops[i].
func ParseJSON(data []byte) ([]Op, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := expectDelim(dec, '['); err != nil {
		return nil, fmt.Errorf("ops: %w; want a JSON array such as [%s]", err, specs[Incr].json)
	}
	var ops []Op
	for i := 0; dec.More(); i++ {
		op, err := parseJSONOp(dec)
		if err != nil {
			return nil, fmt.Errorf("ops[%d]%w", i, err)
		}
		ops = append(ops, op)
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, fmt.Errorf("ops: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("ops: unexpected data after the closing ]; send one JSON array")
	}
	return ops, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	if tok != want {
		return fmt.Errorf("found %s where %q belongs", jsonKind(tok), string(want))
	}
	return nil
}

// jsonKind names a decoder token for error messages.
func jsonKind(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		switch tok {
		case '[':
			return "an array"
		case '{':
			return "an object"
		}
		return fmt.Sprintf("%q", string(tok))
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// parseJSONOp decodes one object of the list. Its errors start with the text that follows
// "ops[i]" in the final message.
func parseJSONOp(dec *json.Decoder) (Op, error) {
	if err := expectDelim(dec, '{'); err != nil {
		return Op{}, fmt.Errorf(": %w; each op is an object such as %s", err, specs[Incr].json)
	}
	fields := make(map[string]json.RawMessage)
	var order []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Op{}, fmt.Errorf(": malformed JSON: %w", err)
		}
		name := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Op{}, fmt.Errorf(": field %q: malformed JSON: %w", name, err)
		}
		if _, dup := fields[name]; dup {
			return Op{}, fmt.Errorf(": field %q appears twice", name)
		}
		fields[name] = raw
		order = append(order, name)
	}
	if err := expectDelim(dec, '}'); err != nil {
		return Op{}, fmt.Errorf(": %w", err)
	}

	rawKind, ok := fields["op"]
	if !ok {
		return Op{}, errors.New(`: field "op" missing; want one of incr, put, del, add, rem`)
	}
	var kindName string
	if err := json.Unmarshal(rawKind, &kindName); err != nil {
		return Op{}, fmt.Errorf(`: field "op" is %s, not a string; want one of incr, put, del, add, rem`, rawKindOf(rawKind))
	}
	kind, err := ParseKind(kindName)
	if err != nil {
		return Op{}, fmt.Errorf(": %w", err)
	}
	fail := func(format string, args ...any) (Op, error) {
		return Op{}, fmt.Errorf(" (%s): %s; want %s", kind, fmt.Sprintf(format, args...), specs[kind].json)
	}

	op := Op{Kind: kind}
	if kind == Incr {
		op.By = 1
	}
	for _, name := range order {
		if name == "op" {
			continue
		}
		if !kind.takes(name) {
			return fail("unknown field %q (%s takes %s)", name, kind, kind.paramList())
		}
		raw := fields[name]
		switch name {
		case "key", "map", "set", "member":
			s, err := jsonText(raw)
			if err != nil {
				return fail("field %q %v", name, err)
			}
			op.setName(name, s)
		case "by":
			n, err := strconv.ParseInt(string(raw), 10, 64)
			if err != nil {
				return fail("field \"by\" is %s; want a 64-bit integer", rawKindOf(raw))
			}
			op.By = n
		case "ttl":
			d, err := jsonTTL(raw)
			if err != nil {
				return fail("field \"ttl\" %v", err)
			}
			op.TTL = d
		case "value":
			var b bytes.Buffer
			if err := json.Compact(&b, raw); err != nil {
				return fail("field \"value\": %v", err) // unreachable: the decoder checked it
			}
			op.Value = b.Bytes()
		}
	}
	for _, name := range specs[kind].required {
		if _, ok := fields[name]; !ok {
			return fail("field %q missing", name)
		}
	}
	if err := Validate(op); err != nil {
		return Op{}, fmt.Errorf(" (%s): %w", kind, err)
	}
	return op, nil
}

// jsonText decodes a JSON string, refusing invalid UTF-8 that encoding/json would silently
// replace with U+FFFD and so store under a name the app never sent.
func jsonText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("is %s, not a string", rawKindOf(raw))
	}
	if !utf8.Valid(raw) {
		return "", errors.New("is not valid UTF-8")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("is not a valid string: %w", err)
	}
	return s, nil
}

// jsonTTL accepts a Go duration string ("90s", "1h", "0") or an integer number of seconds.
func jsonTTL(raw json.RawMessage) (time.Duration, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("is not a valid string: %w", err)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration such as \"90s\" or \"1h\"", s)
		}
		return d, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("is %s; want a duration string such as \"1h\" or an integer number of seconds", rawKindOf(raw))
	}
	if n < 0 || n > int64(MaxTTL/time.Second) {
		return 0, fmt.Errorf("is %d; want 0 to %d seconds", n, int64(MaxTTL/time.Second))
	}
	return time.Duration(n) * time.Second, nil
}

// rawKindOf names the JSON type of a raw value, or shows a number as written.
func rawKindOf(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "empty"
	}
	switch c := raw[0]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	default:
		return "the number " + string(raw)
	}
}
