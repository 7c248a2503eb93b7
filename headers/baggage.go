package headers

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel/baggage"
)

// bag is what ctxprop reads from the baggage of a request: its ctx.* members.
type bag struct {
	name  string // valid ctx.name, or ""
	flags []Flag // valid ctx.flag.* members, sorted by name
	// drop lists the ctx.* keys whose members are invalid, untrusted or not
	// pinnable: they are removed when the baggage is forwarded, so a bad value stops
	// at the first sidecar.
	drop []string
}

// members counts the ctx.* members b holds.
func (b *bag) members() int {
	n := len(b.flags)
	if b.name != "" {
		n++
	}
	return n
}

// distrust removes the ctx.* members of b, but its name when keepName is set, and
// returns how many it removed.
func (b *bag) distrust(keepName bool) int {
	n := len(b.flags)
	if b.name != "" && !keepName {
		b.drop = append(b.drop, NameKey)
		b.name = ""
		n++
	}
	for _, f := range b.flags {
		b.drop = append(b.drop, FlagKeyPrefix+f.Name)
	}
	b.flags = nil
	return n
}

// keepPinnable removes the flags pinnable does not allow (all of them when it is nil),
// counting them in refused.
func (b *bag) keepPinnable(pinnable func(string) bool, refused *Refused) {
	kept := b.flags[:0]
	for _, f := range b.flags {
		if pinnable != nil && pinnable(f.Name) {
			kept = append(kept, f)
			continue
		}
		b.drop = append(b.drop, FlagKeyPrefix+f.Name)
		refused.add(NotPinnable, 1)
	}
	if len(kept) == 0 {
		kept = nil
	}
	b.flags = kept
}

// baggageMember returns the decoded value of member key of the baggage lines, or "".
func baggageMember(values []string, key string) string {
	if len(values) == 0 {
		return ""
	}
	// otel keeps the valid members of a partly invalid header; the one wanted may be
	// among them.
	parsed, _ := baggage.Parse(joinLines(values))
	return parsed.Member(key).Value()
}

// readBaggage reads the ctx.* members of a request's baggage lines, reporting
// problems into errs. Baggage without "ctx." is not parsed at all: other members are
// not ours to judge and pass through untouched, and most requests take this path.
func readBaggage(values []string, errs *[]error) bag {
	if !slices.ContainsFunc(values, func(v string) bool { return strings.Contains(v, "ctx.") }) {
		return bag{}
	}
	if len(values) != 1 || len(values[0]) > maxMemoLine {
		return parseBaggage(values, errs)
	}
	memo := &bagMemos[maphash.String(bagSeed, values[0])%uint64(len(bagMemos))]
	if m := memo.Load(); m != nil && m.line == values[0] {
		return bag{name: m.name, flags: slices.Clone(m.flags)}
	}
	clean := len(*errs)
	b := parseBaggage(values, errs)
	if len(*errs) == clean && len(b.drop) == 0 {
		memo.Store(&bagMemo{line: values[0], name: b.name, flags: slices.Clone(b.flags)})
	}
	return b
}

// parseBaggage is readBaggage without the memo: values hold "ctx.".
func parseBaggage(values []string, errs *[]error) bag {
	var b bag
	line := joinLines(values)
	if len(line) > MaxBaggageBytes || strings.Count(line, ",") >= MaxBaggageMembers {
		// Over a limit, otel's Parse keeps nothing (bytes) or the first 64 keys;
		// read the members rewriteBaggage would keep instead, so that what we read
		// is what we forward when we rewrite.
		var invalid, excess int
		line, invalid, excess = keepMembers(values, nil)
		*errs = append(*errs, &Error{Header: "baggage", Err: fmt.Errorf("%w: %d invalid members and %d past the limits (%d members, %d bytes)", ErrBaggage, invalid, excess, MaxBaggageMembers, MaxBaggageBytes)})
	}
	parsed, err := baggage.Parse(line)
	if err != nil {
		// otel keeps the valid members it could (a partial result); ours are
		// taken from those.
		*errs = append(*errs, &Error{Header: "baggage", Err: fmt.Errorf("%w: %w; invalid or excess members are not forwarded", ErrBaggage, err)})
	}
	if m := parsed.Member(NameKey); m.Key() != "" {
		if err := checkName(m.Value()); err != nil {
			*errs = append(*errs, &Error{Header: "baggage", Err: err})
			b.drop = append(b.drop, NameKey)
		} else {
			b.name = m.Value()
		}
	}
	for _, m := range parsed.Members() {
		name, ok := strings.CutPrefix(m.Key(), FlagKeyPrefix)
		if !ok {
			continue
		}
		if err := checkFlag(name, m.Value()); err != nil {
			*errs = append(*errs, &Error{Header: "baggage", Err: err})
			b.drop = append(b.drop, m.Key())
			continue
		}
		b.flags = append(b.flags, Flag{Name: name, Value: m.Value()})
	}
	// otel's members come in map order; a stable order makes the headers given to
	// the app, and tests, deterministic.
	slices.SortFunc(b.flags, func(x, y Flag) int { return strings.Compare(x.Name, y.Name) })
	return b
}

// Parsing a baggage line with otel costs about a microsecond and 700 bytes, the
// largest part of a proxied request's header work; the lines of one context's
// requests repeat (the sidecars themselves propagate ctx.name and the pinned
// flags), so readBaggage remembers the result of recent clean lines. A memo is
// exact: it is keyed by the whole line, and only lines read without any problem are
// kept, so errors are still reported on every request that has them. It is bounded:
// a fixed table of slots, each holding the latest line that hashed to it, lines of
// at most maxMemoLine bytes. A line seen once costs a hash and a small allocation.
const maxMemoLine = 512

type bagMemo struct {
	line  string
	name  string
	flags []Flag // shared by every hit: read-only, callers get a copy
}

var (
	bagMemos [256]atomic.Pointer[bagMemo]
	bagSeed  = maphash.MakeSeed()
)

// addition is a member ctxprop wants to add to a request's baggage.
type addition struct {
	key, value string
	added      bool // set by rewriteBaggage when the member fit
}

// rewriteBaggage builds the one baggage line to forward: the valid members of values
// in their order and bytes (only the OWS around them is trimmed), without the keys in
// drop, followed by the additions that fit. The result never exceeds
// MaxBaggageMembers or MaxBaggageBytes: an invalid member, or one past a limit, is not
// forwarded (reported as ErrBaggage); an addition that does not fit is not added
// (reported as ErrBaggageFull). Existing members go first so that ours never displace
// the app's.
func rewriteBaggage(values []string, drop []string, add []addition, errs *[]error) string {
	line, invalid, excess := keepMembers(values, drop)
	var lb lineBuilder
	lb.sb.WriteString(line)
	if line != "" {
		lb.members = strings.Count(line, ",") + 1 // members hold no raw comma
	}
	if invalid > 0 || excess > 0 {
		*errs = append(*errs, &Error{Header: "baggage", Err: fmt.Errorf("%w: %d invalid and %d members past the limits (%d members, %d bytes) not forwarded", ErrBaggage, invalid, excess, MaxBaggageMembers, MaxBaggageBytes)})
	}
	for i := range add {
		a := &add[i]
		m, err := baggage.NewMemberRaw(a.key, a.value)
		if err != nil {
			*errs = append(*errs, &Error{Header: "baggage", Err: fmt.Errorf("%w: member %s: %w", ErrBaggage, a.key, err)})
			continue
		}
		s := m.String()
		if !lb.fits(s) {
			*errs = append(*errs, &Error{Header: "baggage", Err: fmt.Errorf("%w: %s (%d bytes) not added: the request's baggage already has %d members and %d bytes of at most %d and %d; the app should send less baggage", ErrBaggageFull, a.key, len(s), lb.members, lb.sb.Len(), MaxBaggageMembers, MaxBaggageBytes)})
			continue
		}
		lb.put(s)
		a.added = true
	}
	return lb.sb.String()
}

// keepMembers returns, as one line, the valid members of values in their order and
// bytes (only the OWS around them trimmed), without the keys in drop, up to the
// limits; and how many members were invalid or past a limit.
func keepMembers(values []string, drop []string) (line string, invalid, excess int) {
	var lb lineBuilder
	for _, line := range values {
		for raw := range strings.SplitSeq(line, ",") {
			raw = strings.Trim(raw, " \t")
			if raw == "" {
				continue
			}
			if slices.Contains(drop, memberKey(raw)) {
				continue
			}
			// Parsed alone, a member is valid exactly when otel accepts it whole.
			if _, err := baggage.Parse(raw); err != nil {
				invalid++
				continue
			}
			if !lb.fits(raw) {
				excess++
				continue
			}
			lb.put(raw)
		}
	}
	return lb.sb.String(), invalid, excess
}

// lineBuilder builds a baggage line within the limits.
type lineBuilder struct {
	sb      strings.Builder
	members int
}

func (lb *lineBuilder) fits(member string) bool {
	n := len(member)
	if lb.members > 0 {
		n++ // the comma
	}
	return lb.members < MaxBaggageMembers && lb.sb.Len()+n <= MaxBaggageBytes
}

func (lb *lineBuilder) put(member string) {
	if lb.members > 0 {
		lb.sb.WriteByte(',')
	}
	lb.sb.WriteString(member)
	lb.members++
}

// memberKey returns the key of a raw baggage member (before '=' or ';'), trimmed as otel
// trims it (strings.TrimSpace), so that a member otel reads under a key is found by it.
func memberKey(raw string) string {
	end := strings.IndexAny(raw, "=;")
	if end < 0 {
		end = len(raw)
	}
	return strings.TrimSpace(raw[:end])
}

// joinLines combines the lines of a list header (RFC 9110 §5.3).
func joinLines(values []string) string {
	if len(values) == 1 {
		return values[0]
	}
	return strings.Join(values, ",")
}

// checkName reports whether name is a valid context name (SPEC §3).
func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes, want 1 to %d; it was dropped", ErrName, NameKey, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return fmt.Errorf("%w: %q has %q at byte %d, want only [A-Za-z0-9._:-]; it was dropped", ErrName, name, name[i], i)
		}
	}
	return nil
}

// ValidName reports whether name is a valid context name: 1 to 200 bytes of
// [A-Za-z0-9._:-] (SPEC §3).
func ValidName(name string) bool { return checkName(name) == nil }

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// checkFlag reports whether a pinned flag can be given to the app as the header
// "Ctx-Flag-<name>: <value>". The name is the rest of a baggage key, so it is already a
// token (a valid header name) when not empty; the decoded value must not hold control
// characters, which would let a baggage value forge headers or break the request.
func checkFlag(name, value string) error {
	if name == "" {
		return fmt.Errorf("%w: %s has no flag name; it was dropped", ErrFlag, FlagKeyPrefix)
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: %s%s: value has control character %q at byte %d; it was dropped", ErrFlag, FlagKeyPrefix, name, c, i)
		}
	}
	return nil
}
