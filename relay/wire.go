package relay

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ctxprop/ctxprop/crdt"
)

// A stream message is a batch of deltas, version 1:
//
//	version:1  count:uvarint  count×(name:uvarint-length bytes  delta:uvarint-length bytes)
//
// where delta is the CRDT binary encoding of crdt.Context (crdt/codec.go), the encoding
// the store and the gossip engine use. A KV entry is the CRDT encoding of one context's
// full state, with no framing.
const wireVersion = 1

// maxNameBytes bounds a context name read from a message; the store then applies the
// rules of SPEC §3.
const maxNameBytes = 1024

// errWire is wrapped by every decoding error: the message is refused whole.
var errWire = errors.New("relay: malformed message")

// group is one context's delta in a message.
type group struct {
	name  string
	delta *crdt.Context
	data  []byte // delta encoded
}

// groupSize is what g adds to a message.
func groupSize(g group) int {
	return 2*binary.MaxVarintLen32 + len(g.name) + len(g.data)
}

// encodeBatch writes groups as one message.
func encodeBatch(groups []group) []byte {
	n := 1 + binary.MaxVarintLen32
	for _, g := range groups {
		n += groupSize(g)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion)
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		b = binary.AppendUvarint(b, uint64(len(g.name)))
		b = append(b, g.name...)
		b = binary.AppendUvarint(b, uint64(len(g.data)))
		b = append(b, g.data...)
	}
	return b
}

// decodeBatch reads a message and decodes every delta in it.
func decodeBatch(b []byte) ([]group, error) {
	if len(b) == 0 || b[0] != wireVersion {
		return nil, fmt.Errorf("%w: not version %d", errWire, wireVersion)
	}
	b = b[1:]
	count, n := binary.Uvarint(b)
	// Each group takes at least two bytes: a forged count cannot make us allocate more
	// than the message holds.
	if n <= 0 || count > uint64(len(b)/2) {
		return nil, fmt.Errorf("%w: bad group count", errWire)
	}
	b = b[n:]
	field := func(max int) ([]byte, error) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) || l > uint64(max) {
			return nil, fmt.Errorf("%w: bad length", errWire)
		}
		v := b[n : n+int(l)]
		b = b[n+int(l):]
		return v, nil
	}
	groups := make([]group, 0, count)
	for range count {
		name, err := field(maxNameBytes)
		if err != nil {
			return nil, err
		}
		data, err := field(len(b))
		if err != nil {
			return nil, err
		}
		d := &crdt.Context{}
		if err := d.UnmarshalBinary(data); err != nil {
			return nil, fmt.Errorf("%w: context %q: %w", errWire, name, err)
		}
		groups = append(groups, group{name: string(name), delta: d, data: data})
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last group", errWire, len(b))
	}
	return groups, nil
}
