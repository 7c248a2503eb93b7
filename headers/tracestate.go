package headers

import (
	"fmt"
	"slices"
	"strings"
)

// Limits of the tracestate list (W3C Trace Context Level 2, §3.3.2).
const (
	MaxTracestateMembers = 32  // list-members of a list, not counting empty ones
	maxTracestateKey     = 256 // characters of a key
	maxTracestateValue   = 256 // characters of a value
)

// TraceState is a tracestate list as W3C Trace Context Level 2 defines it: vendor
// entries in order, the left-most written by the system that wrote the traceparent.
// The zero value is the empty list. It is immutable; With returns a changed copy.
//
// It holds the list in its canonical form, the members joined by "," without OWS or
// empty members, so that forwarding a well-formed header costs no re-encoding.
type TraceState struct {
	s string
	n int
}

// String returns the list as a header value: members joined by ",", "" when empty.
func (ts TraceState) String() string { return ts.s }

// Len returns the number of members.
func (ts TraceState) Len() int { return ts.n }

// Get returns the value of key's member.
func (ts TraceState) Get(key string) (string, bool) {
	for rest := ts.s; rest != ""; {
		var m string
		m, rest, _ = strings.Cut(rest, ",")
		if k, v, _ := strings.Cut(m, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// With returns the list with key=value as its left-most member, as a system that
// takes part in the trace records its position (§3.5 of Level 2, "Mutating the
// tracestate Field"): a member of the same key is removed, the order of the others is
// kept, and when that makes more than MaxTracestateMembers the right-most member goes
// (§3.3.2: "the right-most list-member should be removed"). An invalid key or value
// is an error and leaves the list as it was.
func (ts TraceState) With(key, value string) (TraceState, error) {
	if err := checkTracestateKey(key); err != nil {
		return ts, fmt.Errorf("%w: key %q: %w", ErrTracestate, key, err)
	}
	if err := checkTracestateValue(value); err != nil {
		return ts, fmt.Errorf("%w: value %q of key %q: %w", ErrTracestate, value, key, err)
	}
	var sb strings.Builder
	sb.Grow(len(key) + 1 + len(value) + 1 + len(ts.s))
	sb.WriteString(key)
	sb.WriteByte('=')
	sb.WriteString(value)
	n := 1
	for rest := ts.s; rest != "" && n < MaxTracestateMembers; {
		var m string
		m, rest, _ = strings.Cut(rest, ",")
		if k, _, _ := strings.Cut(m, "="); k == key {
			continue
		}
		sb.WriteByte(',')
		sb.WriteString(m)
		n++
	}
	return TraceState{s: sb.String(), n: n}, nil
}

// ParseTracestate parses the tracestate lines of a request as one list (Level 2
// §3.3.2: lines are combined as RFC 9110 combines a list field). Absent or empty is
// the empty list, not an error.
//
// What is dropped follows the specification and the W3C test suite's level 2 cases:
//   - empty and whitespace-only members, and OWS around members: ignored (§3.3.2,
//     "empty and whitespace-only list members are allowed");
//   - a member that does not match the grammar (key, value, "="), or more than
//     MaxTracestateMembers members: the list cannot be parsed, and all of it is
//     dropped (processing model: "the vendor MAY discard the entire header");
//   - two or more members of one key: the list parses, but "only one entry per key is
//     allowed" and nothing says which one is the system's last position, so every
//     member of that key is dropped and the rest is kept ("invalid tracestate entries
//     MAY also be discarded").
//
// The error, when not nil, wraps ErrTracestate and says what was dropped; the list
// returned is then what is left (empty when the whole list was dropped).
func ParseTracestate(values []string) (TraceState, error) {
	if len(values) == 0 {
		return TraceState{}, nil
	}
	// keys and members of the list, in order; on the stack for up to the limit.
	var keys, members [MaxTracestateMembers]string
	n := 0
	canonical := len(values) == 1 // values[0] is already the list's canonical form
	for _, line := range values {
		for rest, more := line, true; more; {
			var m string
			m, rest, more = strings.Cut(rest, ",")
			t := strings.Trim(m, " \t")
			if len(t) != len(m) || t == "" {
				canonical = false
			}
			if t == "" {
				continue
			}
			key, value, ok := strings.Cut(t, "=")
			if !ok {
				return TraceState{}, fmt.Errorf("%w: member %s has no '='; want key=value; the whole tracestate was dropped", ErrTracestate, quoteShort(t))
			}
			if err := checkTracestateKey(key); err != nil {
				return TraceState{}, fmt.Errorf("%w: member %s: key %w; the whole tracestate was dropped", ErrTracestate, quoteShort(t), err)
			}
			if err := checkTracestateValue(value); err != nil {
				return TraceState{}, fmt.Errorf("%w: member %s: value %w; the whole tracestate was dropped", ErrTracestate, quoteShort(t), err)
			}
			if n == MaxTracestateMembers {
				return TraceState{}, fmt.Errorf("%w: more than %d list-members; the whole tracestate was dropped", ErrTracestate, MaxTracestateMembers)
			}
			keys[n], members[n] = key, t
			n++
		}
	}
	var dup []string
	for i := 1; i < n; i++ {
		for j := range i {
			if keys[i] == keys[j] {
				if !slices.Contains(dup, keys[i]) {
					dup = append(dup, keys[i])
				}
				break
			}
		}
	}
	if canonical && dup == nil {
		return TraceState{s: values[0], n: n}, nil
	}
	var sb strings.Builder
	kept := 0
	for i := range n {
		if slices.Contains(dup, keys[i]) {
			continue
		}
		if kept > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(members[i])
		kept++
	}
	ts := TraceState{s: sb.String(), n: kept}
	if dup != nil {
		return ts, fmt.Errorf("%w: key %s appears more than once (only one entry per key is allowed); its members were dropped, the other %d kept", ErrTracestate, strings.Join(dup, ", "), kept)
	}
	return ts, nil
}

// ValidTracestateKey reports whether key is a tracestate key of Level 2's grammar,
// such as one to give Options.TracestateKey.
func ValidTracestateKey(key string) bool { return checkTracestateKey(key) == nil }

// checkTracestateKey checks key against Level 2 §3.3.2.2.1:
//
//	key     = ( lcalpha / DIGIT ) 0*255 ( keychar )
//	keychar = lcalpha / DIGIT / "_" / "-"/ "*" / "/" / "@"
//
// Level 1's tenant@system form (tenant ≤ 241, system ≤ 14 characters, one '@') is a
// special case of it: Level 2 permits any number of '@' anywhere after the first
// character.
func checkTracestateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("is empty")
	case len(key) > maxTracestateKey:
		return fmt.Errorf("is %d characters, more than %d", len(key), maxTracestateKey)
	case !isLCAlphaDigit(key[0]):
		return fmt.Errorf("must start with a lowercase letter or a digit")
	}
	for i := 1; i < len(key); i++ {
		if c := key[i]; !isLCAlphaDigit(c) && c != '_' && c != '-' && c != '*' && c != '/' && c != '@' {
			return fmt.Errorf("has %q at %d; allowed are a-z 0-9 _ - * / @", c, i)
		}
	}
	return nil
}

func isLCAlphaDigit(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// checkTracestateValue checks value against Level 2 §3.3.2.2.2:
//
//	value    = 0*255(chr) nblk-chr
//	nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
//	chr      = %x20 / nblk-chr
func checkTracestateValue(value string) error {
	switch {
	case value == "":
		return fmt.Errorf("is empty")
	case len(value) > maxTracestateValue:
		return fmt.Errorf("is %d characters, more than %d", len(value), maxTracestateValue)
	case value[len(value)-1] == ' ':
		return fmt.Errorf("ends with a space")
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return fmt.Errorf("has %q at %d; allowed is printable ASCII but ',' and '='", c, i)
		}
	}
	return nil
}

// quoteShort quotes s for an error message, cut to a length that keeps logs readable.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
