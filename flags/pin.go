package flags

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/baggage"

	"github.com/ctxprop/ctxprop/headers"
)

// Pin evaluates, at the edge of a request chain, the configured pinned flags the request
// does not carry yet, and returns pinned with them added, sorted by name (SPEC §6). A flag
// already pinned upstream keeps its value: every hop of a chain sees the value the edge saw,
// even if the flag changed meanwhile. The inbound proxy calls Pin with the flags read from
// baggage and hands the result to the app (Ctx-Flag-<name>) and to the correlator, so the
// app's outbound calls carry them on as baggage ctx.flag.<name>.
//
// The evaluation context is built from r as Options say: TargetingKeyHeader gives the
// targetingKey, ContextHeaders and ContextBaggage the attributes. A flag that does not
// exist, is DISABLED (its caller uses its code default) or fails to evaluate (e.g. needs a
// targetingKey the request lacks) is not pinned. A value is pinned as its text: a string as
// is, other values as JSON (true, 3, {"a":1}).
//
// Pin does not modify r or pinned. It is safe for concurrent use and does no I/O.
func (f *Flags) Pin(r *http.Request, pinned []headers.Flag) []headers.Flag {
	if len(f.opt.Pinned) == 0 {
		return pinned
	}
	s := f.snap.Load()
	var ectx map[string]any
	out := pinned
	for _, name := range f.opt.Pinned {
		if slices.ContainsFunc(pinned, func(p headers.Flag) bool { return p.Name == name }) {
			continue
		}
		fl := s.flags[name]
		if fl == nil {
			continue
		}
		if ectx == nil {
			ectx = f.requestContext(r)
		}
		res := fl.Evaluate(ectx, f.opt.Now())
		f.counters.count(viaPin, res)
		if !res.OK() || res.Value == nil {
			if !res.OK() {
				f.log.Debug("flag not pinned", "flag", name, "code", res.ErrorCode, "details", res.ErrorDetails)
			}
			continue
		}
		v, ok := pinValue(res.Value)
		if !ok {
			f.log.Warn("flag not pinned: its value has control characters, which a header cannot carry", "flag", name, "variant", res.Variant)
			continue
		}
		if len(out) == len(pinned) {
			out = slices.Clone(pinned) // never write into the caller's array
		}
		out = append(out, headers.Flag{Name: name, Value: v})
	}
	if len(out) != len(pinned) {
		slices.SortFunc(out, func(a, b headers.Flag) int { return strings.Compare(a.Name, b.Name) })
	}
	return out
}

// requestContext builds the evaluation context of an inbound request.
func (f *Flags) requestContext(r *http.Request) map[string]any {
	ectx := map[string]any{}
	if h := f.opt.TargetingKeyHeader; h != "" {
		if v := r.Header.Get(h); v != "" {
			ectx["targetingKey"] = v
		}
	}
	for attr, h := range f.opt.ContextHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			ectx[attr] = strings.Join(v, ", ")
		}
	}
	if len(f.opt.ContextBaggage) > 0 {
		if lines := r.Header.Values("Baggage"); len(lines) > 0 {
			// otel keeps the valid members of a partly invalid header; those are enough here.
			b, _ := baggage.Parse(strings.Join(lines, ","))
			for attr, key := range f.opt.ContextBaggage {
				if m := b.Member(key); m.Key() != "" {
					ectx[attr] = m.Value()
				}
			}
		}
	}
	return ectx
}

// pinValue is the text a pinned value travels as. It refuses control characters, which
// headers.checkFlag would drop downstream anyway.
func pinValue(raw json.RawMessage) (string, bool) {
	v := string(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		v = s
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", false
		}
	}
	return v, true
}

// Pinnable reports whether the flag name is in flags.pinned: only those are ever pinned
// for a request chain (SPEC §4a), whoever sends a ctx.flag.* member. Safe for concurrent
// use; the list is fixed at New.
func (f *Flags) Pinnable(name string) bool { return slices.Contains(f.opt.Pinned, name) }
