package ops

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kind names what an Op does.
type Kind uint8

// The operations of SPEC §4. The zero Kind is invalid so a forgotten field is caught.
const (
	Incr Kind = iota + 1 // add By to counter Key
	Put                  // set map Map entry Key to Value
	Del                  // delete map Map entry Key
	Add                  // add Member to set Set
	Rem                  // remove Member from set Set
)

// Op is one operation on a context. Which fields matter depends on Kind:
//
//	Incr: Key, By (zero means 1 only when parsed; callers building Ops set By), TTL
//	Put:  Map, Key, Value (JSON), TTL
//	Del:  Map, Key
//	Add:  Set, Member, TTL
//	Rem:  Set, Member
//
// TTL zero means the entry keeps the expiry it had (none for a new entry).
type Op struct {
	Kind   Kind
	Key    string
	Map    string
	Set    string
	Member string
	By     int64
	Value  json.RawMessage
	TTL    time.Duration
}

// kindNames holds the wire name of each Kind, indexed by Kind.
var kindNames = [...]string{Incr: "incr", Put: "put", Del: "del", Add: "add", Rem: "rem"}

// String returns the wire name of k ("incr", "put", ...), or "Kind(n)" for an invalid Kind.
func (k Kind) String() string {
	if k.valid() {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= Incr && k <= Rem }

// ParseKind returns the Kind whose wire name is s. Names are case-sensitive, as RFC 9651
// tokens are.
func ParseKind(s string) (Kind, error) {
	for k := Incr; k <= Rem; k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown op %q; want incr, put, del, add or rem", s)
}

// setName sets the text field that parameter name ("key", "map", "set" or "member")
// names; both parsers share the mapping.
func (op *Op) setName(name, s string) {
	switch name {
	case "key":
		op.Key = s
	case "map":
		op.Map = s
	case "set":
		op.Set = s
	case "member":
		op.Member = s
	}
}
