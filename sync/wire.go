package peersync

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
)

// Wire format, version 1. Every message:
//
//	version byte (1) | kind byte (low 7 bits; bit 7: body deflated)
//	8 bytes sender replica id (little endian) | body
//
// The sender is named by its replica id only; membership maps it to a peer. That keeps a
// message with one counter increment under 64 bytes (SPEC §7).
//
// Bodies by kind:
//
//	delta:  uvarint base | uvarint seq | groups
//	ack:    uvarint base | uvarint seq
//	root:    uvarint seq | 8 bytes root digest | uvarint contexts held
//	list:    uvarint seq | byte equal | uvarint n | n × 8 bytes bucket digest
//	         (n = 0 when equal, else the bucket count: a power of two up to 4096)
//	digests: uvarint seq | uvarint bucket count | uvarint k | k × uvarint bucket |
//	         uvarint n | n × (string name | 8 bytes digest)
//	states:  uvarint seq | uvarint n | n × string wanted | groups
//	groups: uvarint n | n × (string context | uvarint length + crdt encoding)
//
// Strings are a uvarint length and bytes.
const wireVersion = 1

type kind byte

const (
	kindDelta kind = iota + 1
	kindAck
	kindRoot
	kindList
	kindStates
	kindDigests
)

func (k kind) String() string {
	switch k {
	case kindDelta:
		return "delta"
	case kindAck:
		return "ack"
	case kindRoot:
		return "root"
	case kindList:
		return "list"
	case kindStates:
		return "states"
	case kindDigests:
		return "digests"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

const flagDeflate = 0x80

// compressMin is the body size below which deflate is not tried: small bodies (a single
// counter delta is about 40 bytes) only grow.
const compressMin = 192

// maxNameBytes bounds a context name on the wire (ValidName then applies SPEC §3's 200).
const maxNameBytes = 256

var (
	// errMalformed is wrapped by every decoding error.
	errMalformed = errors.New("malformed peer message")
	// errOversized is wrapped, with errMalformed, by errors about a message too large.
	errOversized = errors.New("oversized")
	// errPeerLimit is wrapped by the error about a message from a new peer past
	// sync.max_peers; the engine logs that one itself, rate limited.
	errPeerLimit = errors.New("peer refused: sync.max_peers reached; raise it if the fleet is that large, else set sync.key_file")
	// errQueueFull is recorded as a peer's error when its send queue drops a message.
	errQueueFull = errors.New("send queue full: the peer is slow or unreachable; a message to it was dropped (sent again or repaired by anti-entropy)")
	// errMemberLimit is what NotifyAlive tells memberlist when it refuses a member.
	errMemberLimit = errors.New("sync.max_peers members listed already; raise it if the fleet is that large, else set sync.key_file")
)

// group is one context's delta or state in a message.
type group struct {
	name string
	data []byte        // the crdt encoding as sent
	ctx  *crdt.Context // decoded on receipt
}

type digest struct {
	name string
	sum  uint64
}

// message is every kind's fields; a kind uses some of them.
type message struct {
	kind    kind
	from    string // the sender's peer name, resolved from replica on receipt; not sent
	replica crdt.ReplicaID
	base    uint64 // delta, ack: the interval (base, seq]
	seq     uint64
	root    uint64
	// contexts is how many contexts the sender of a root holds: the peer sizes the
	// buckets for the larger side.
	contexts int
	equal    bool
	sums     []uint64 // list: one digest per bucket
	count    int      // digests: the bucket count the buckets are of
	// bucketIDs are the buckets a digests message compares; digests, their contexts'.
	bucketIDs []int
	digests   []digest
	want      []string
	groups    []group
	// lazy marks a digests or states message to send that is read and split into
	// messages when it is sent (Engine.digestPieces, statePieces): it names the buckets
	// (bucketIDs) or the contexts (fill, and want) only. Not sent.
	lazy bool
	fill []string
}

// lazySize is what a lazy message holds while it waits: its names.
func (m *message) lazySize() int {
	n := 3 * len(m.bucketIDs)
	for _, s := range m.want {
		n += len(s) + 2
	}
	for _, s := range m.fill {
		n += len(s) + 2
	}
	return n
}

var flaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// encode writes m. Group data must already be encoded.
func (m *message) encode() []byte {
	body := make([]byte, 0, 64)
	switch m.kind {
	case kindDelta, kindAck:
		body = binary.AppendUvarint(body, m.base)
		body = binary.AppendUvarint(body, m.seq)
	case kindRoot:
		body = binary.AppendUvarint(body, m.seq)
		body = binary.LittleEndian.AppendUint64(body, m.root)
		body = binary.AppendUvarint(body, uint64(m.contexts))
	case kindList:
		body = binary.AppendUvarint(body, m.seq)
		body = appendBool(body, m.equal)
		body = binary.AppendUvarint(body, uint64(len(m.sums)))
		for _, sum := range m.sums {
			body = binary.LittleEndian.AppendUint64(body, sum)
		}
	case kindDigests:
		body = binary.AppendUvarint(body, m.seq)
		body = binary.AppendUvarint(body, uint64(m.count))
		body = binary.AppendUvarint(body, uint64(len(m.bucketIDs)))
		for _, b := range m.bucketIDs {
			body = binary.AppendUvarint(body, uint64(b))
		}
		body = binary.AppendUvarint(body, uint64(len(m.digests)))
		for _, d := range m.digests {
			body = appendString(body, d.name)
			body = binary.LittleEndian.AppendUint64(body, d.sum)
		}
	case kindStates:
		body = binary.AppendUvarint(body, m.seq)
		body = binary.AppendUvarint(body, uint64(len(m.want)))
		for _, w := range m.want {
			body = appendString(body, w)
		}
	}
	if m.kind == kindDelta || m.kind == kindStates {
		body = binary.AppendUvarint(body, uint64(len(m.groups)))
		for _, g := range m.groups {
			body = appendString(body, g.name)
			body = binary.AppendUvarint(body, uint64(len(g.data)))
			body = append(body, g.data...)
		}
	}
	flags := byte(0)
	if len(body) >= compressMin {
		var buf bytes.Buffer
		w := flaters.Get().(*flate.Writer)
		w.Reset(&buf)
		_, _ = w.Write(body) // writes to a bytes.Buffer do not fail
		_ = w.Close()
		flaters.Put(w)
		if buf.Len() < len(body) {
			body, flags = buf.Bytes(), flagDeflate
		}
	}
	out := make([]byte, 0, 2+8+len(body))
	out = append(out, wireVersion, byte(m.kind)|flags)
	out = binary.LittleEndian.AppendUint64(out, uint64(m.replica))
	return append(out, body...)
}

// decode reads a message of at most limit bytes, decompressed, and decodes every CRDT
// state in it, so that a message is refused whole or accepted whole.
func decode(data []byte, limit int) (*message, error) {
	if len(data) > limit {
		return nil, fmt.Errorf("%w: %w: %d bytes, over the limit of %d; raise the sender's and receiver's max message size together", errMalformed, errOversized, len(data), limit)
	}
	d := &reader{b: data}
	m := &message{}
	if v := d.byte(); v != wireVersion && d.err == nil {
		return nil, fmt.Errorf("%w: wire version %d, this sidecar speaks %d; run the same version on every peer", errMalformed, v, wireVersion)
	}
	kb := d.byte()
	flags := kb & flagDeflate
	m.kind = kind(kb &^ flagDeflate)
	m.replica = crdt.ReplicaID(d.uint64())
	if d.err != nil {
		return nil, d.err
	}
	if m.replica == 0 {
		return nil, fmt.Errorf("%w: sender replica id 0", errMalformed)
	}
	if flags != 0 {
		r := flate.NewReader(bytes.NewReader(d.b))
		body, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
		if err != nil {
			return nil, fmt.Errorf("%w: deflate: %v", errMalformed, err)
		}
		if len(body) > limit {
			return nil, fmt.Errorf("%w: %w: body inflates past the limit of %d bytes", errMalformed, errOversized, limit)
		}
		d.b = body
	}
	switch m.kind {
	case kindDelta, kindAck:
		m.base = d.uvarint()
		m.seq = d.uvarint()
		if d.err == nil && m.base > m.seq {
			d.fail("interval base after its end")
		}
	case kindRoot:
		m.seq = d.uvarint()
		m.root = d.uint64()
		if n := d.uvarint(); d.err == nil {
			m.contexts = int(min(n, 1<<40))
		}
	case kindList:
		m.seq = d.uvarint()
		m.equal = d.bool()
		n := d.count(8)
		if d.err == nil && (m.equal != (n == 0) || !validBucketCount(n)) {
			d.fail(fmt.Sprintf("%d bucket digests (equal %v): want none when equal, else a power of two up to %d", n, m.equal, maxBuckets))
		}
		for i := 0; i < n && d.err == nil; i++ {
			m.sums = append(m.sums, d.uint64())
		}
	case kindDigests:
		m.seq = d.uvarint()
		if c := d.uvarint(); d.err == nil {
			if c == 0 || c > maxBuckets || c&(c-1) != 0 {
				d.fail(fmt.Sprintf("bucket count %d: want a power of two up to %d", c, maxBuckets))
			}
			m.count = int(c)
		}
		k := d.count(1)
		for i := 0; i < k && d.err == nil; i++ {
			if b := d.uvarint(); d.err == nil && b >= uint64(m.count) {
				d.fail(fmt.Sprintf("bucket %d of %d", b, m.count))
			} else {
				m.bucketIDs = append(m.bucketIDs, int(b))
			}
		}
		n := d.count(9)
		for i := 0; i < n && d.err == nil; i++ {
			m.digests = append(m.digests, digest{name: d.name(), sum: d.uint64()})
		}
	case kindStates:
		m.seq = d.uvarint()
		n := d.count(1)
		for i := 0; i < n && d.err == nil; i++ {
			m.want = append(m.want, d.name())
		}
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", errMalformed, byte(m.kind))
	}
	if m.kind == kindDelta || m.kind == kindStates {
		n := d.count(2)
		for i := 0; i < n && d.err == nil; i++ {
			g := group{name: d.name()}
			g.data = d.bytes()
			if d.err != nil {
				break
			}
			g.ctx = &crdt.Context{}
			if err := g.ctx.UnmarshalBinary(g.data); err != nil {
				return nil, fmt.Errorf("%w: context %q: %v", errMalformed, g.name, err)
			}
			m.groups = append(m.groups, g)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("%s message: %w", m.kind, d.err)
	}
	return m, nil
}

// reader decodes; the first error sticks and later reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (d *reader) fail(msg string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, msg)
	}
	d.b = nil
}

func (d *reader) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *reader) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad boolean")
	return false
}

func (d *reader) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *reader) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// count reads a list length whose items take at least min bytes each, so that a forged
// length cannot make the decoder allocate more than the message holds.
func (d *reader) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.fail("list longer than the message")
		return 0
	}
	return int(n)
}

func (d *reader) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *reader) string(max int) string {
	b := d.bytes()
	if len(b) > max {
		d.fail("string too long")
		return ""
	}
	return string(b)
}

// name reads a context name and checks it against the rules of SPEC §3.
func (d *reader) name() string {
	s := d.string(maxNameBytes)
	if d.err == nil {
		if err := ctxstore.ValidName(s); err != nil {
			d.fail(err.Error())
		}
	}
	return s
}

// validBucketCount: none, or a power of two up to maxBuckets.
func validBucketCount(n int) bool { return n == 0 || (n <= maxBuckets && n&(n-1) == 0) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}
