package crdt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Encoding version 1 of a Context, used on disk and on the wire. All integers are unsigned
// varints except replica ids, which are random and so stored as 8 fixed bytes. Keys are
// written sorted, so equal states encode to equal bytes.
//
//	version:1 base
//	meta:     ts [replica ttl-ms expires fixed:1]   (the rest only when ts != 0)
//	cleared
//	cc:       n×(replica seq)  n×(replica seq)      (version vector, then cloud)
//	counters: n×(key floor n×(replica gen p n expires))
//	maps:     n×(name n×(key ts replica expires kind:1 [value]))   kind 0 tombstone, 1 value
//	sets:     n×(name n×(member n×(replica seq born expires)))
//	retired:  n×(key n×(from into gen p n at undone:1))  n×(replica ts)  forgotten
//	          (folds, pruned, and how far pruned entries were forgotten)
//
// The retired section is written only when a counter records a fold or a replica was
// pruned (see "Retiring replicas" in the package doc), so states without retirements
// encode as before it existed.
// Strings and values are a varint length and the bytes. Timestamps other than base are
// written relative to base, the smallest timestamp in the state, as 0 for "never" or
// 1+zigzag(ts-base): the timestamps of one delta lie close together, so a counter
// increment stays within 64 bytes even with its context's sliding TTL.
const encodingVersion = 1

// ErrDecode is wrapped by every error UnmarshalBinary returns.
var ErrDecode = errors.New("crdt: bad encoding")

// MaxStringBytes bounds every name, key and member the decoder accepts; the store's own
// limits are lower.
const MaxStringBytes = 1 << 16

// MarshalBinary encodes c.
func (c *Context) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(make([]byte, 0, 64))
}

// AppendBinary appends the encoding of c to b.
func (c *Context) AppendBinary(b []byte) ([]byte, error) {
	base := c.minTimestamp()
	ts := func(b []byte, t Timestamp) []byte { return appendTimestamp(b, base, t) }
	b = append(b, encodingVersion)
	b = binary.AppendUvarint(b, uint64(base))
	b = ts(b, c.Meta.TS)
	if c.Meta.TS != 0 {
		b = binary.LittleEndian.AppendUint64(b, uint64(c.Meta.Replica))
		b = binary.AppendUvarint(b, uint64(c.Meta.TTL.Milliseconds()))
		b = ts(b, c.Meta.Expires)
		b = appendBool(b, c.Meta.Fixed)
	}
	b = ts(b, c.Cleared)

	vv := c.CC.vv
	rs := sortedKeys(vv)
	n := 0
	for _, r := range rs {
		if vv[r] != 0 {
			n++
		}
	}
	b = binary.AppendUvarint(b, uint64(n))
	for _, r := range rs {
		if vv[r] != 0 {
			b = binary.LittleEndian.AppendUint64(b, uint64(r))
			b = binary.AppendUvarint(b, vv[r])
		}
	}
	cloud := c.CC.Cloud()
	b = binary.AppendUvarint(b, uint64(len(cloud)))
	for _, d := range cloud {
		b = binary.LittleEndian.AppendUint64(b, uint64(d.Replica))
		b = binary.AppendUvarint(b, d.Seq)
	}

	b = binary.AppendUvarint(b, uint64(len(c.Counters)))
	for _, k := range sortedKeys(c.Counters) {
		ct := c.Counters[k]
		b = appendString(b, k)
		b = ts(b, ct.Floor)
		b = binary.AppendUvarint(b, uint64(len(ct.Slots)))
		slot := func(r ReplicaID, s Slot) {
			b = binary.LittleEndian.AppendUint64(b, uint64(r))
			b = ts(b, s.Gen)
			b = binary.AppendUvarint(b, s.P)
			b = binary.AppendUvarint(b, s.N)
			b = ts(b, s.Expires)
		}
		if len(ct.Slots) == 1 {
			// Most counters have one writer (every delta of a local write): one slot is
			// in order without a sorted copy of the keys.
			for r, s := range ct.Slots {
				slot(r, s)
			}
			continue
		}
		for _, r := range sortedKeys(ct.Slots) {
			slot(r, ct.Slots[r])
		}
	}

	b = binary.AppendUvarint(b, uint64(len(c.Maps)))
	for _, name := range sortedKeys(c.Maps) {
		m := c.Maps[name]
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(m)))
		for _, k := range sortedKeys(m) {
			r := m[k]
			b = appendString(b, k)
			b = ts(b, r.TS)
			b = binary.LittleEndian.AppendUint64(b, uint64(r.Replica))
			b = ts(b, r.Expires)
			if r.Value == nil {
				b = append(b, 0)
			} else {
				b = append(b, 1)
				b = appendString(b, string(r.Value))
			}
		}
	}

	b = binary.AppendUvarint(b, uint64(len(c.Sets)))
	for _, name := range sortedKeys(c.Sets) {
		s := c.Sets[name]
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(s)))
		for _, m := range sortedKeys(s) {
			dots := s[m]
			b = appendString(b, m)
			b = binary.AppendUvarint(b, uint64(len(dots)))
			ds := slices.SortedFunc(maps.Keys(dots), compareDots)
			for _, d := range ds {
				bt := dots[d]
				b = binary.LittleEndian.AppendUint64(b, uint64(d.Replica))
				b = binary.AppendUvarint(b, d.Seq)
				b = ts(b, bt.TS)
				b = ts(b, bt.Expires)
			}
		}
	}

	var folded []string
	for _, k := range sortedKeys(c.Counters) {
		if len(c.Counters[k].Folds) > 0 {
			folded = append(folded, k)
		}
	}
	if len(folded) == 0 && len(c.Pruned) == 0 && c.Forgotten == 0 {
		return b, nil
	}
	b = binary.AppendUvarint(b, uint64(len(folded)))
	for _, k := range folded {
		fs := c.Counters[k].Folds
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(fs)))
		keys := slices.SortedFunc(maps.Keys(fs), compareFoldKeys)
		for _, fk := range keys {
			f := fs[fk]
			b = binary.LittleEndian.AppendUint64(b, uint64(fk.From))
			b = binary.LittleEndian.AppendUint64(b, uint64(fk.Into))
			b = ts(b, f.Gen)
			b = binary.AppendUvarint(b, f.P)
			b = binary.AppendUvarint(b, f.N)
			b = ts(b, f.At)
			b = appendBool(b, f.Undone)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(c.Pruned)))
	for _, r := range sortedKeys(c.Pruned) {
		b = binary.LittleEndian.AppendUint64(b, uint64(r))
		b = ts(b, c.Pruned[r])
	}
	b = ts(b, c.Forgotten)
	return b, nil
}

func compareFoldKeys(a, b FoldKey) int {
	if a.From != b.From {
		return cmpReplica(a.From, b.From)
	}
	return cmpReplica(a.Into, b.Into)
}

func cmpReplica(a, b ReplicaID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// UnmarshalBinary decodes data into c, replacing its contents. It never panics and
// refuses anything malformed: unknown versions, truncated or trailing bytes, zero replica
// ids or sequence numbers, duplicate keys, map values that are not JSON.
func (c *Context) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	var o Context
	if v := d.byte(); d.err == nil && v != encodingVersion {
		return fmt.Errorf("%w: version %d, this build reads version %d; upgrade the older sidecar", ErrDecode, v, encodingVersion)
	}
	d.base = Timestamp(d.uvarint())
	if o.Meta.TS = d.timestamp(); o.Meta.TS != 0 {
		o.Meta.Replica = d.replica()
		ttl := d.uvarint()
		if ttl > uint64(1<<62)/uint64(time.Millisecond) {
			d.fail("ttl out of range")
		}
		o.Meta.TTL = time.Duration(ttl) * time.Millisecond
		o.Meta.Expires = d.timestamp()
		o.Meta.Fixed = d.bool()
	}
	o.Cleared = d.timestamp()

	for i, n := 0, d.count(9); i < n && d.err == nil; i++ {
		r, s := d.replica(), d.uvarint()
		if s == 0 {
			d.fail("version vector entry with sequence 0")
		}
		if o.CC.vv == nil {
			o.CC.vv = make(map[ReplicaID]uint64, n)
		}
		if _, dup := o.CC.vv[r]; dup {
			d.fail("duplicate version vector entry")
		}
		o.CC.vv[r] = s
	}
	for i, n := 0, d.count(9); i < n && d.err == nil; i++ {
		dot := d.dot()
		if o.CC.cloud == nil {
			o.CC.cloud = make(map[Dot]struct{}, n)
		}
		o.CC.cloud[dot] = struct{}{}
	}
	o.CC.compact()

	for i, n := 0, d.count(3); i < n && d.err == nil; i++ {
		k := d.string()
		ct := Counter{Floor: d.timestamp()}
		for j, m := 0, d.count(12); j < m && d.err == nil; j++ {
			r := d.replica()
			s := Slot{Gen: d.timestamp(), P: d.uvarint(), N: d.uvarint(), Expires: d.timestamp()}
			if ct.Slots == nil {
				ct.Slots = make(map[ReplicaID]Slot, m)
			}
			if _, dup := ct.Slots[r]; dup {
				d.fail("duplicate counter slot")
			}
			ct.Slots[r] = s
		}
		if o.Counters == nil {
			o.Counters = make(map[string]Counter, n)
		}
		if _, dup := o.Counters[k]; dup {
			d.fail("duplicate counter key")
		}
		o.Counters[k] = ct
	}

	for i, n := 0, d.count(2); i < n && d.err == nil; i++ {
		name := d.string()
		var m map[string]Register
		for j, l := 0, d.count(12); j < l && d.err == nil; j++ {
			k := d.string()
			r := Register{TS: d.timestamp(), Replica: d.replica(), Expires: d.timestamp()}
			switch kind := d.byte(); kind {
			case 0:
			case 1:
				v := d.string()
				if d.err == nil && !json.Valid([]byte(v)) {
					d.fail("map value is not JSON")
				}
				r.Value = []byte(v)
			default:
				d.fail("bad register kind")
			}
			if m == nil {
				m = make(map[string]Register, l)
			}
			if _, dup := m[k]; dup {
				d.fail("duplicate map key")
			}
			m[k] = r
		}
		if o.Maps == nil {
			o.Maps = make(map[string]map[string]Register, n)
		}
		if _, dup := o.Maps[name]; dup {
			d.fail("duplicate map name")
		}
		o.Maps[name] = m
	}

	for i, n := 0, d.count(2); i < n && d.err == nil; i++ {
		name := d.string()
		var s map[string]Member
		for j, l := 0, d.count(2); j < l && d.err == nil; j++ {
			member := d.string()
			var dots Member
			for k, dn := 0, d.count(11); k < dn && d.err == nil; k++ {
				dot := d.dot()
				b := Birth{TS: d.timestamp(), Expires: d.timestamp()}
				if dots == nil {
					dots = make(Member, dn)
				}
				dots[dot] = b
			}
			if s == nil {
				s = make(map[string]Member, l)
			}
			if _, dup := s[member]; dup {
				d.fail("duplicate set member")
			}
			s[member] = dots
		}
		if o.Sets == nil {
			o.Sets = make(map[string]map[string]Member, n)
		}
		if _, dup := o.Sets[name]; dup {
			d.fail("duplicate set name")
		}
		o.Sets[name] = s
	}
	if d.err == nil && len(d.b) != 0 {
		d.retired(&o)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return d.err
	}
	o.normalize()
	*c = o
	return nil
}

// retired reads the optional retired section into o.
func (d *decoder) retired(o *Context) {
	for i, n := 0, d.count(3); i < n && d.err == nil; i++ {
		k := d.string()
		ct := o.Counters[k]
		if ct.Folds != nil {
			d.fail("duplicate folded counter")
		}
		for j, m := 0, d.count(21); j < m && d.err == nil; j++ {
			fk := FoldKey{From: d.replica(), Into: d.replica()}
			f := Fold{Gen: d.timestamp(), P: d.uvarint(), N: d.uvarint(), At: d.timestamp(), Undone: d.bool()}
			if d.err == nil && fk.From == fk.Into {
				d.fail("fold of a replica into itself")
			}
			if ct.Folds == nil {
				ct.Folds = make(map[FoldKey]Fold, m)
			}
			if _, dup := ct.Folds[fk]; dup {
				d.fail("duplicate fold")
			}
			ct.Folds[fk] = f
		}
		if o.Counters == nil {
			o.Counters = make(map[string]Counter, n)
		}
		o.Counters[k] = ct
	}
	for i, n := 0, d.count(9); i < n && d.err == nil; i++ {
		r, t := d.replica(), d.timestamp()
		if o.Pruned == nil {
			o.Pruned = make(map[ReplicaID]Timestamp, n)
		}
		if _, dup := o.Pruned[r]; dup {
			d.fail("duplicate pruned replica")
		}
		o.Pruned[r] = t
	}
	o.Forgotten = d.timestamp()
}

type decoder struct {
	b    []byte
	off  int
	err  error
	base Timestamp
}

func (d *decoder) timestamp() Timestamp {
	v := d.uvarint()
	if v == 0 || d.err != nil {
		return 0
	}
	v--
	t := Timestamp(uint64(d.base) + uint64(int64(v>>1)^-int64(v&1)))
	if t == 0 {
		d.fail("timestamp 0 written as a value")
	}
	return t
}

func appendTimestamp(b []byte, base, t Timestamp) []byte {
	if t == 0 {
		return append(b, 0)
	}
	delta := int64(t - base)
	return binary.AppendUvarint(b, uint64(delta<<1^(delta>>63))+1)
}

// minTimestamp returns the smallest non-zero timestamp in c, the base of its encoding.
func (c *Context) minTimestamp() Timestamp {
	m := Timestamp(0)
	see := func(t Timestamp) {
		if t != 0 && (m == 0 || t < m) {
			m = t
		}
	}
	see(c.Meta.TS)
	see(c.Meta.Expires)
	see(c.Cleared)
	for _, ct := range c.Counters {
		see(ct.Floor)
		for _, s := range ct.Slots {
			see(s.Gen)
			see(s.Expires)
		}
		for _, f := range ct.Folds {
			see(f.Gen)
			see(f.At)
		}
	}
	for _, t := range c.Pruned {
		see(t)
	}
	see(c.Forgotten)
	for _, m := range c.Maps {
		for _, r := range m {
			see(r.TS)
			see(r.Expires)
		}
	}
	for _, s := range c.Sets {
		for _, dots := range s {
			for _, b := range dots {
				see(b.TS)
				see(b.Expires)
			}
		}
	}
	return m
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w at byte %d: %s", ErrDecode, d.off, msg)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	d.off++
	return v
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad boolean")
	return false
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	d.off += n
	return v
}

func (d *decoder) replica() ReplicaID {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail("truncated replica id")
		return 0
	}
	r := ReplicaID(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	d.off += 8
	if r == 0 {
		d.fail("zero replica id")
	}
	return r
}

func (d *decoder) dot() Dot {
	dot := Dot{Replica: d.replica(), Seq: d.uvarint()}
	if d.err == nil && dot.Seq == 0 {
		d.fail("dot with sequence 0")
	}
	return dot
}

// count reads an element count and checks that the bytes left can hold that many
// elements of at least min bytes each, so a forged count cannot make us allocate.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.fail(fmt.Sprintf("count %d exceeds the bytes left", n))
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > MaxStringBytes || n > uint64(len(d.b)) {
		d.fail(fmt.Sprintf("string of %d bytes", n))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	d.off += int(n)
	return s
}

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

// sortedKeys returns m's keys in order, in one allocation of the right size, none when m
// is empty (slices.Sorted(maps.Keys(m)) grows its slice from nothing: several allocations
// per map, on the write-ahead log's path).
func sortedKeys[K interface{ ~string | ~uint64 }, V any](m map[K]V) []K {
	if len(m) == 0 {
		return nil
	}
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Equal reports whether a and b hold the same state.
func Equal(a, b *Context) bool {
	a, b = a.Clone(), b.Clone()
	a.normalize()
	b.normalize()
	x, _ := a.MarshalBinary()
	y, _ := b.MarshalBinary()
	return string(x) == string(y)
}
