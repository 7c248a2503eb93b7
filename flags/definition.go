package flags

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Flag states of a flagd definition.
const (
	Enabled  = "ENABLED"
	Disabled = "DISABLED"
)

// Variant kinds: every variant of a flag has the same one, as flagd's schema requires.
const (
	KindBoolean = "boolean"
	KindString  = "string"
	KindNumber  = "number"
	KindObject  = "object"
)

// maxKeyBytes bounds a flag key: it is a map key in the store (SPEC §3 names are at most
// 200 bytes).
const maxKeyBytes = 200

// Flag is one flag definition in the flagd format (flagd.dev/reference/flag-definitions),
// parsed and checked. A Flag is immutable once parsed: share it freely.
type Flag struct {
	Key            string
	State          string                     // Enabled or Disabled
	Variants       map[string]json.RawMessage // variant name → value (compact JSON)
	DefaultVariant string
	Kind           string         // KindBoolean, KindString, KindNumber or KindObject
	Metadata       map[string]any // flag metadata (file metadata under flag metadata); nil if none
	// FlagSetID is the flag set the flag belongs to: Metadata["flagSetId"], the flag's own
	// or inherited from its file's metadata (flagd's flag sets). "" is no flag set. A flag is
	// identified by its flag set and key, so one key may have a definition in several sets.
	FlagSetID string
	// Source says where the definition comes from: "api" or "file:<path>".
	Source string

	definition json.RawMessage // as stored or read, compact, with $ref resolved away
	targeting  *rule           // nil: no targeting (absent or {})
	timed      bool            // targeting reads $flagd.timestamp
}

// Definition returns the flag's definition as JSON: what PUT /v1/flags/{key} accepts.
func (f *Flag) Definition() json.RawMessage { return bytes.Clone(f.definition) }

// DefinitionError says which field of a flag definition (or flag file) is wrong. Field is
// a path such as "defaultVariant", "variants.on" or "targeting.if[0].in[1]".
type DefinitionError struct {
	Source string // "file:<path>" for a file, "" for the API
	Flag   string // flag key; "" for a problem of the file itself
	Field  string
	Msg    string
}

func (e *DefinitionError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source + ": ")
	}
	if e.Flag != "" {
		fmt.Fprintf(&b, "flag %q: ", e.Flag)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func fieldErr(field, format string, args ...any) *DefinitionError {
	return &DefinitionError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// CheckKey reports whether key can name a flag: 1 to 200 bytes of UTF-8 without control
// characters.
func CheckKey(key string) error {
	switch {
	case key == "":
		return errors.New("flag key is empty")
	case len(key) > maxKeyBytes:
		return fmt.Errorf("flag key is %d bytes; the limit is %d", len(key), maxKeyBytes)
	case !utf8.ValidString(key):
		return errors.New("flag key is not valid UTF-8")
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("flag key %q has a control character", key)
		}
	}
	return nil
}

// ParseFlag parses one flagd flag definition, as PUT /v1/flags/{key} receives it. It
// refuses, naming the field, anything flagd's schema refuses: a missing or unknown field,
// a state other than ENABLED/DISABLED, variants of mixed kinds, a defaultVariant that is not
// a variant, targeting that is not JsonLogic. {"$ref"} needs a file's $evaluators, so it is
// refused here.
func ParseFlag(key string, data []byte) (*Flag, error) {
	f, err := parseFlag(key, data, nil, nil)
	if err != nil {
		return nil, err
	}
	f.Source = SourceAPI
	return f, nil
}

// SourceAPI is the Source of flags managed through the admin API.
const SourceAPI = "api"

func parseFlag(key string, data []byte, evaluators map[string]any, fileMeta map[string]any) (*Flag, error) {
	if err := CheckKey(key); err != nil {
		return nil, &DefinitionError{Flag: key, Msg: err.Error()}
	}
	f, err := parseDefinition(key, data, evaluators, fileMeta)
	if err != nil {
		var de *DefinitionError
		if errors.As(err, &de) {
			de.Flag = key
			return nil, de
		}
		return nil, &DefinitionError{Flag: key, Msg: err.Error()}
	}
	return f, nil
}

func parseDefinition(key string, data []byte, evaluators map[string]any, fileMeta map[string]any) (*Flag, error) {
	var fields map[string]json.RawMessage
	if err := strictUnmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("not a JSON object (%v); want {\"state\":\"ENABLED\",\"variants\":{...},\"defaultVariant\":\"...\"}", err)
	}
	if fields == nil {
		return nil, errors.New("definition is null; want {\"state\":\"ENABLED\",\"variants\":{...},\"defaultVariant\":\"...\"}")
	}
	for _, name := range sortedKeys(fields) {
		switch name {
		case "state", "variants", "defaultVariant", "targeting", "metadata":
		default:
			return nil, fieldErr(name, "unknown field; a flag has state, variants, defaultVariant, targeting and metadata")
		}
	}
	f := &Flag{Key: key}

	if err := requiredString(fields, "state", &f.State); err != nil {
		return nil, err
	}
	if f.State != Enabled && f.State != Disabled {
		return nil, fieldErr("state", "%q is not a state; want %q or %q", f.State, Enabled, Disabled)
	}

	raw, ok := fields["variants"]
	if !ok {
		return nil, fieldErr("variants", "missing; want an object of variant name to value")
	}
	if err := strictUnmarshal(raw, &f.Variants); err != nil || f.Variants == nil {
		return nil, fieldErr("variants", "not an object of variant name to value")
	}
	if len(f.Variants) == 0 {
		return nil, fieldErr("variants", "empty; a flag needs at least one variant")
	}
	for _, name := range sortedKeys(f.Variants) {
		var v any
		if err := strictUnmarshal(f.Variants[name], &v); err != nil {
			return nil, fieldErr("variants."+name, "%v", err)
		}
		kind := ""
		switch v.(type) {
		case bool:
			kind = KindBoolean
		case string:
			kind = KindString
		case float64:
			kind = KindNumber
		case map[string]any, []any:
			kind = KindObject
		default:
			return nil, fieldErr("variants."+name, "null is not a flag value; want a boolean, string, number or object")
		}
		if f.Kind != "" && f.Kind != kind {
			return nil, fieldErr("variants."+name, "is a %s but other variants are %ss; all variants of a flag have one type", kind, f.Kind)
		}
		f.Kind = kind
		f.Variants[name] = compact(f.Variants[name])
	}

	// defaultVariant may be null or absent: the flag then defers to the caller's code
	// default (flagd ≥ 0.14, ADR "support code default"); "" means the same, as in flagd.
	if raw, ok := fields["defaultVariant"]; ok {
		var s *string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fieldErr("defaultVariant", "not a string or null")
		}
		if s != nil {
			f.DefaultVariant = *s
		}
	}
	if _, ok := f.Variants[f.DefaultVariant]; !ok && f.DefaultVariant != "" {
		return nil, fieldErr("defaultVariant", "%q is not one of the variants (%s)", f.DefaultVariant, strings.Join(sortedKeys(f.Variants), ", "))
	}

	if raw, ok := fields["targeting"]; ok {
		var t any
		if err := strictUnmarshal(raw, &t); err != nil {
			return nil, fieldErr("targeting", "%v", err)
		}
		switch t := t.(type) {
		case nil:
		case map[string]any:
			if len(t) > 0 {
				r, err := compile(t, evaluators, "targeting", 0)
				if err != nil {
					return nil, err
				}
				f.targeting, f.timed = r, r.usesTimestamp()
				if evaluators != nil {
					// The stored form carries the rule with $ref resolved, so it reads
					// the same where the file's evaluators are unknown.
					resolved, err := resolveRefs(t, evaluators, 0)
					if err != nil {
						return nil, fieldErr("targeting", "%v", err)
					}
					fields["targeting"], _ = json.Marshal(resolved)
				}
			}
		default:
			return nil, fieldErr("targeting", "is %s; want a JsonLogic object such as {\"if\":[...]}", kindOf(t))
		}
	}

	meta := map[string]any{}
	for k, v := range fileMeta {
		meta[k] = v
	}
	if raw, ok := fields["metadata"]; ok {
		var m map[string]any
		if err := strictUnmarshal(raw, &m); err != nil {
			return nil, fieldErr("metadata", "not an object of name to string, number or boolean")
		}
		if err := checkMetadata("metadata", m); err != nil {
			return nil, err
		}
		for k, v := range m {
			meta[k] = v
		}
	}
	if len(meta) > 0 {
		f.Metadata = meta
	}
	setID, err := flagSetID("metadata.flagSetId", meta)
	if err != nil {
		return nil, err
	}
	f.FlagSetID = setID
	def, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encoding the definition: %w", err)
	}
	f.definition = def
	return f, nil
}

func requiredString(fields map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := fields[name]
	if !ok {
		return fieldErr(name, "missing")
	}
	var s *string
	if err := json.Unmarshal(raw, &s); err != nil || s == nil {
		return fieldErr(name, "not a string")
	}
	*dst = *s
	return nil
}

func checkMetadata(field string, m map[string]any) error {
	for _, k := range sortedKeys(m) {
		switch m[k].(type) {
		case string, float64, bool:
		default:
			return fieldErr(field+"."+k, "is %s; metadata values are strings, numbers or booleans", kindOf(m[k]))
		}
	}
	return nil
}

// flagSetID returns meta's flagSetId, which flagd's schema makes a string; field names it in
// the error.
func flagSetID(field string, meta map[string]any) (string, error) {
	v, ok := meta["flagSetId"]
	if !ok {
		return "", nil
	}
	id, ok := v.(string)
	if !ok {
		return "", fieldErr(field, "is %s; a flag set ID is a string", kindOf(v))
	}
	return id, nil
}

// resolveRefs replaces {"$ref": "name"} by the evaluator it names, recursively.
func resolveRefs(v any, evaluators map[string]any, depth int) (any, error) {
	if depth > maxRuleDepth {
		return nil, fmt.Errorf("rule nested deeper than %d levels (or a $ref cycle)", maxRuleDepth)
	}
	switch v := v.(type) {
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			r, err := resolveRefs(e, evaluators, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	case map[string]any:
		if name, ok := v["$ref"].(string); ok && len(v) == 1 {
			ev, ok := evaluators[name]
			if !ok {
				return nil, fmt.Errorf("no evaluator %q", name)
			}
			return resolveRefs(ev, evaluators, depth+1)
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			r, err := resolveRefs(e, evaluators, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	}
	return v, nil
}

// flagID identifies a flag as flagd does since flag sets: its flag set and its key.
type flagID struct{ set, key string }

func (f *Flag) id() flagID { return flagID{f.FlagSetID, f.Key} }

// fileFlags is what a flag file defines.
type fileFlags struct {
	flags map[flagID]*Flag
	// problems are the flags refused, by key; the caller keeps their last good versions.
	problems map[string]error
	// meta is the file's own metadata, flagd's flag set metadata: every flag of the file
	// inherits it, and the bulk OFREP answer carries it.
	meta map[string]any
}

// ParseFile parses a flagd flag file: {"$schema"?, "flags": {key: definition} or
// [{"key": key, ...definition}], "$evaluators"?: {name: rule}, "metadata"?: {...}}. source
// names the file in errors ("file:<path>"). A file that is not such an object is an error;
// a flag that is invalid is reported in the returned map and left out, so that the caller
// can keep its last good definition while the file's other flags apply. A key defined in
// several flag sets (the array form allows it) gives the definition that serves without a
// selector: the one whose flag set ID sorts last.
func ParseFile(source string, data []byte) (flags map[string]*Flag, problems map[string]error, err error) {
	ff, err := parseFile(source, data)
	if err != nil {
		return nil, nil, err
	}
	flags = make(map[string]*Flag, len(ff.flags))
	for _, fl := range ff.flags {
		if old, ok := flags[fl.Key]; !ok || old.FlagSetID < fl.FlagSetID {
			flags[fl.Key] = fl
		}
	}
	return flags, ff.problems, nil
}

// fileDef is one flag definition of a file, with where it stands in the file.
type fileDef struct {
	key   string
	raw   json.RawMessage
	field string // "flags.<key>" or "flags[<i>]", for errors
}

func parseFile(source string, data []byte) (*fileFlags, error) {
	var top map[string]json.RawMessage
	if err := strictUnmarshal(data, &top); err != nil || top == nil {
		msg := "not a JSON object"
		if err != nil {
			msg += " (" + err.Error() + ")"
		}
		return nil, &DefinitionError{Source: source, Msg: msg + `; want {"flags":{"key":{...}}}`}
	}
	for _, name := range sortedKeys(top) {
		switch name {
		case "$schema", "flags", "$evaluators", "metadata":
		default:
			return nil, &DefinitionError{Source: source, Field: name, Msg: `unknown field; a flag file has "flags", "$evaluators", "metadata" and "$schema"`}
		}
	}
	raw, ok := top["flags"]
	if !ok {
		return nil, &DefinitionError{Source: source, Field: "flags", Msg: "missing; want an object of flag key to definition"}
	}
	defs, err := fileDefs(raw)
	if err != nil {
		err.Source = source
		return nil, err
	}
	var evaluators map[string]any
	if raw, ok := top["$evaluators"]; ok {
		if err := strictUnmarshal(raw, &evaluators); err != nil {
			return nil, &DefinitionError{Source: source, Field: "$evaluators", Msg: "not an object of name to JsonLogic rule"}
		}
	}
	if evaluators == nil {
		evaluators = map[string]any{}
	}
	var meta map[string]any
	if raw, ok := top["metadata"]; ok {
		if err := strictUnmarshal(raw, &meta); err != nil {
			return nil, &DefinitionError{Source: source, Field: "metadata", Msg: "not an object of name to string, number or boolean"}
		}
		if err := checkMetadata("metadata", meta); err != nil {
			err.(*DefinitionError).Source = source
			return nil, err
		}
		if _, err := flagSetID("metadata.flagSetId", meta); err != nil {
			err.(*DefinitionError).Source = source
			return nil, err
		}
	}
	ff := &fileFlags{flags: make(map[flagID]*Flag, len(defs)), problems: map[string]error{}, meta: meta}
	where := map[flagID]string{}
	refuse := func(key string, err error) {
		ff.problems[key] = errors.Join(ff.problems[key], err)
	}
	for _, d := range defs {
		f, err := parseFlag(d.key, d.raw, evaluators, meta)
		if err != nil {
			err.(*DefinitionError).Source = source
			refuse(d.key, err)
			continue
		}
		// flagd refuses a configuration with two flags of one key in one flag set
		// (ADR "Support for Duplicate Flag Keys"); ctxprop refuses the second only.
		if first, dup := where[f.id()]; dup {
			refuse(d.key, &DefinitionError{Source: source, Flag: d.key, Field: d.field, Msg: fmt.Sprintf("%s already defines this key in %s; a key is defined once per flag set: remove one, or give one another metadata.flagSetId", first, setName(f.FlagSetID))})
			continue
		}
		where[f.id()] = d.field
		f.Source = source
		ff.flags[f.id()] = f
	}
	return ff, nil
}

// fileDefs reads a file's "flags": an object of key to definition, or (flagd 0.13 and
// later) an array of definitions that carry their key, where one key may appear in several
// flag sets.
func fileDefs(raw json.RawMessage) ([]fileDef, *DefinitionError) {
	if b := bytes.TrimSpace(raw); len(b) > 0 && b[0] == '[' {
		var list []json.RawMessage
		if err := strictUnmarshal(raw, &list); err != nil {
			return nil, &DefinitionError{Field: "flags", Msg: "not an array of flag definitions"}
		}
		defs := make([]fileDef, 0, len(list))
		for i, e := range list {
			field := fmt.Sprintf("flags[%d]", i)
			var fields map[string]json.RawMessage
			if err := strictUnmarshal(e, &fields); err != nil || fields == nil {
				return nil, &DefinitionError{Field: field, Msg: `not a flag definition; want {"key":"...","state":"ENABLED",...}`}
			}
			var key *string
			if k, ok := fields["key"]; !ok {
				return nil, &DefinitionError{Field: field + ".key", Msg: "missing; in the array form every flag names its key"}
			} else if err := json.Unmarshal(k, &key); err != nil || key == nil {
				return nil, &DefinitionError{Field: field + ".key", Msg: "not a string"}
			}
			delete(fields, "key")
			def, err := json.Marshal(fields)
			if err != nil {
				return nil, &DefinitionError{Field: field, Msg: err.Error()}
			}
			defs = append(defs, fileDef{key: *key, raw: def, field: field})
		}
		return defs, nil
	}
	var m map[string]json.RawMessage
	if err := strictUnmarshal(raw, &m); err != nil {
		return nil, &DefinitionError{Field: "flags", Msg: "not an object of flag key to definition (or an array of definitions with their key)"}
	}
	defs := make([]fileDef, 0, len(m))
	for _, key := range sortedKeys(m) {
		defs = append(defs, fileDef{key: key, raw: m[key], field: "flags." + key})
	}
	return defs, nil
}

// setName names a flag set in messages.
func setName(id string) string {
	if id == "" {
		return "no flag set"
	}
	return fmt.Sprintf("flag set %q", id)
}

// strictUnmarshal decodes one JSON value and refuses trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("data after the JSON value")
	}
	return nil
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}
