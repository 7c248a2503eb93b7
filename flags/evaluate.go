package flags

import (
	"encoding/json"
	"fmt"
	"time"
)

// Reasons of an evaluation (OpenFeature spec, "Resolution reasons").
const (
	ReasonStatic         = "STATIC"          // no targeting: the default variant
	ReasonDefault        = "DEFAULT"         // targeting gave null: the default variant
	ReasonTargetingMatch = "TARGETING_MATCH" // targeting chose the variant
	ReasonSplit          = "SPLIT"           // targeting chose it with fractional
	ReasonDisabled       = "DISABLED"        // the flag is DISABLED: no value, use the code default
)

// Error codes of an evaluation (OFREP and OpenFeature).
const (
	CodeFlagNotFound        = "FLAG_NOT_FOUND"        // 404
	CodeParseError          = "PARSE_ERROR"           // 400: the request body is not JSON
	CodeTargetingKeyMissing = "TARGETING_KEY_MISSING" // 400: fractional needs a targetingKey
	CodeInvalidContext      = "INVALID_CONTEXT"       // 400: the context is not an object, or targetingKey not a string
	CodeGeneral             = "GENERAL"               // 400: targeting gave something that is not a variant
)

// Result is the outcome of evaluating one flag. It is also the JSON of one OFREP
// evaluation: a success has Reason (and Value and Variant unless DISABLED), a failure has
// ErrorCode and ErrorDetails.
type Result struct {
	Key string `json:"key"`
	// Value is the variant's value; nil for a failure, for a DISABLED flag and for a
	// DEFAULT result of a flag without a default variant, whose caller uses its code
	// default (OFREP ADR-0006, the OpenFeature meaning of DISABLED).
	Value        json.RawMessage `json:"value,omitempty"`
	Variant      string          `json:"variant,omitempty"`
	Reason       string          `json:"reason,omitempty"`
	ErrorCode    string          `json:"errorCode,omitempty"`
	ErrorDetails string          `json:"errorDetails,omitempty"`
	Metadata     map[string]any  `json:"metadata,omitempty"`
}

// OK reports whether the evaluation succeeded.
func (r Result) OK() bool { return r.ErrorCode == "" }

func failure(key, code, format string, args ...any) Result {
	return Result{Key: key, ErrorCode: code, ErrorDetails: fmt.Sprintf(format, args...)}
}

// Evaluate evaluates f for the evaluation context ectx (OpenFeature's context: its
// "targetingKey" and attributes, as decoded JSON) at time now, with flagd's semantics:
//
//   - a DISABLED flag gives reason DISABLED and no value;
//   - no targeting gives the default variant, reason STATIC;
//   - where the default variant applies but the flag has none (defaultVariant null or
//     absent), the result is reason DEFAULT without value or variant: the caller's default;
//   - targeting that gives null gives the default variant, reason DEFAULT — unless it
//     gave null because fractional needed a targetingKey the context lacks, which is
//     TARGETING_KEY_MISSING;
//   - targeting that gives a variant name (or true/false/a number, read as the name, as
//     flagd does) gives that variant, reason SPLIT when fractional chose it, else
//     TARGETING_MATCH; a name that is not a variant is GENERAL.
//
// The rule sees ectx plus "$flagd": {"flagKey", "timestamp" (Unix seconds)}. Evaluate does
// not modify ectx and is safe for concurrent use.
func (f *Flag) Evaluate(ectx map[string]any, now time.Time) Result {
	if tk, ok := ectx["targetingKey"]; ok && tk != nil {
		if _, ok := tk.(string); !ok {
			return failure(f.Key, CodeInvalidContext, "targetingKey is %s; it must be a string", kindOf(tk))
		}
	}
	if f.State == Disabled {
		return Result{Key: f.Key, Reason: ReasonDisabled, Metadata: f.Metadata}
	}
	if f.targeting == nil {
		return f.byDefault(ReasonStatic)
	}
	data := make(map[string]any, len(ectx)+1)
	for k, v := range ectx {
		data[k] = v
	}
	data["$flagd"] = map[string]any{"flagKey": f.Key, "timestamp": float64(now.Unix())}
	e := evaluation{root: data}
	v, err := e.eval(f.targeting, data)
	if err != nil {
		return failure(f.Key, CodeGeneral, "%v", err)
	}
	var name string
	switch v := v.(type) {
	case nil:
		if e.noTargetingKey {
			return failure(f.Key, CodeTargetingKeyMissing, "the flag's targeting splits by fractional on the targeting key; send targetingKey in the evaluation context")
		}
		return f.byDefault(ReasonDefault)
	case string:
		name = v
	case bool, float64:
		name = toString(v)
	default:
		return failure(f.Key, CodeGeneral, "targeting gave %s; it must give a variant name (%s) or null", kindOf(v), variantNames(f))
	}
	if _, ok := f.Variants[name]; !ok {
		return failure(f.Key, CodeGeneral, "targeting gave %q, which is not a variant (%s); fix the flag's targeting", name, variantNames(f))
	}
	reason := ReasonTargetingMatch
	if e.hasSplit && e.split == name {
		reason = ReasonSplit
	}
	return f.variant(name, reason)
}

// byDefault is the result when the default variant applies. A flag without one (its
// defaultVariant null or absent) defers to the caller's code default: reason DEFAULT with
// no value and no variant, which OFREP and flagd's providers read as "use your default"
// (flagd ≥ 0.14, OFREP ADR-0006).
func (f *Flag) byDefault(reason string) Result {
	if f.DefaultVariant == "" {
		return Result{Key: f.Key, Reason: ReasonDefault, Metadata: f.Metadata}
	}
	return f.variant(f.DefaultVariant, reason)
}

func (f *Flag) variant(name, reason string) Result {
	return Result{Key: f.Key, Value: f.Variants[name], Variant: name, Reason: reason, Metadata: f.Metadata}
}

func variantNames(f *Flag) string {
	names := sortedKeys(f.Variants)
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", n)
	}
	return s
}
