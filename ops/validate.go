package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxNameBytes bounds every name an Op carries: counter keys, map names and keys, set names
// and members.
const MaxNameBytes = 200

// MaxTTL bounds an Op's TTL. It keeps expiry arithmetic far from time.Duration overflow
// while allowing any lifetime a context plausibly needs.
const MaxTTL = 100 * 365 * 24 * time.Hour

// spec describes the parameters of one Kind on the wire, in the order Format writes them.
type spec struct {
	params   []string // every parameter the kind takes
	required []string // the ones without a default
	header   string   // a valid ctx-ops item, shown in errors
	json     string   // a valid JSON op, shown in errors
}

var specs = [...]spec{
	Incr: {
		params:   []string{"key", "by", "ttl"},
		required: []string{"key"},
		header:   `incr;key="k";by=1;ttl=60`,
		json:     `{"op":"incr","key":"k","by":1,"ttl":"1m"}`,
	},
	Put: {
		params:   []string{"map", "key", "value", "ttl"},
		required: []string{"map", "key", "value"},
		header:   `put;map="m";key="k";value=...`,
		json:     `{"op":"put","map":"m","key":"k","value":...}`,
	},
	Del: {
		params:   []string{"map", "key"},
		required: []string{"map", "key"},
		header:   `del;map="m";key="k"`,
		json:     `{"op":"del","map":"m","key":"k"}`,
	},
	Add: {
		params:   []string{"set", "member", "ttl"},
		required: []string{"set", "member"},
		header:   `add;set="s";member="x";ttl=60`,
		json:     `{"op":"add","set":"s","member":"x","ttl":"1m"}`,
	},
	Rem: {
		params:   []string{"set", "member"},
		required: []string{"set", "member"},
		header:   `rem;set="s";member="x"`,
		json:     `{"op":"rem","set":"s","member":"x"}`,
	},
}

// takes reports whether kind k has parameter name.
func (k Kind) takes(name string) bool { return slices.Contains(specs[k].params, name) }

// paramList renders the parameters of k for error messages: "map, key, value and ttl".
func (k Kind) paramList() string {
	p := specs[k].params
	return strings.Join(p[:len(p)-1], ", ") + " and " + p[len(p)-1]
}

// Validate reports whether op is well formed: a known Kind, every parameter the Kind needs,
// none it does not take, names of 1 to MaxNameBytes bytes of UTF-8 without control
// characters, a non-zero By for Incr, valid JSON for Put, and a TTL in [0, MaxTTL].
// The error names the offending parameter by its wire name ("key", "ttl", ...).
// Both parsers return only Ops that pass; the admin API calls it on Ops it builds.
func Validate(op Op) error {
	if !op.Kind.valid() {
		return fmt.Errorf("invalid op kind %d; want incr, put, del, add or rem", uint8(op.Kind))
	}
	var errs []error
	check := func(name string, present bool, problem func() error) {
		switch {
		case op.Kind.takes(name) && problem != nil:
			if err := problem(); err != nil {
				errs = append(errs, err)
			}
		case !op.Kind.takes(name) && present:
			errs = append(errs, fmt.Errorf("%s does not take %q; it takes %s", op.Kind, name, op.Kind.paramList()))
		}
	}
	check("key", op.Key != "", func() error { return checkName("key", op.Key) })
	check("map", op.Map != "", func() error { return checkName("map", op.Map) })
	check("set", op.Set != "", func() error { return checkName("set", op.Set) })
	check("member", op.Member != "", func() error { return checkName("member", op.Member) })
	check("by", op.By != 0, func() error {
		if op.By == 0 {
			return errors.New(`"by" is zero; want a non-zero amount to add (negative to subtract)`)
		}
		return nil
	})
	check("value", op.Value != nil, func() error { return checkValue(op.Value) })
	check("ttl", op.TTL != 0, func() error { return checkTTL(op.TTL) })
	return errors.Join(errs...)
}

// checkName applies the rules shared by every name an Op carries.
func checkName(param, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%q is empty; want 1 to %d bytes", param, MaxNameBytes)
	case len(s) > MaxNameBytes:
		return fmt.Errorf("%q is %d bytes; want 1 to %d", param, len(s), MaxNameBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("%q is not valid UTF-8", param)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Errorf("%q holds control character %U at byte %d; names must be printable text", param, r, i)
	}
	return nil
}

func checkValue(v json.RawMessage) error {
	switch {
	case len(v) == 0:
		return errors.New(`"value" is missing; want a JSON value`)
	case !utf8.Valid(v):
		return errors.New(`"value" is not valid UTF-8; JSON text must be UTF-8 (RFC 8259 §8.1)`)
	case !json.Valid(v):
		return errors.New(`"value" is not valid JSON`)
	}
	return nil
}

func checkTTL(d time.Duration) error {
	switch {
	case d < 0:
		return fmt.Errorf(`"ttl" %s is negative; want a positive duration, or 0 to keep the current expiry`, d)
	case d > MaxTTL:
		return fmt.Errorf(`"ttl" %s is over the maximum %s`, d, MaxTTL)
	}
	return nil
}
