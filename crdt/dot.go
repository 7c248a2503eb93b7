package crdt

import (
	"fmt"
	"maps"
	"slices"
)

// ReplicaID names a replica: random, stored with its data, never reused. Zero is invalid.
type ReplicaID uint64

func (r ReplicaID) String() string { return fmt.Sprintf("%016x", uint64(r)) }

// Dot is one event of one replica: its Seq-th set addition in a context.
type Dot struct {
	Replica ReplicaID
	Seq     uint64
}

// CausalContext is the set of dots a state has seen, kept compact as a version vector
// (every Seq from 1 to VV[r] seen) plus a cloud of dots seen beyond a gap. Its zero value
// is empty and ready to use.
type CausalContext struct {
	vv    map[ReplicaID]uint64
	cloud map[Dot]struct{}
}

// Contains reports whether d has been seen.
func (cc *CausalContext) Contains(d Dot) bool {
	if d.Seq <= cc.vv[d.Replica] {
		return true
	}
	_, ok := cc.cloud[d]
	return ok
}

// Next returns the next dot of replica r: one past every dot of r seen so far.
func (cc *CausalContext) Next(r ReplicaID) Dot {
	max := cc.vv[r]
	for d := range cc.cloud {
		if d.Replica == r && d.Seq > max {
			max = d.Seq
		}
	}
	return Dot{Replica: r, Seq: max + 1}
}

// Add records d as seen.
func (cc *CausalContext) Add(d Dot) {
	if cc.Contains(d) {
		return
	}
	if d.Seq == cc.vv[d.Replica]+1 {
		if cc.vv == nil {
			cc.vv = make(map[ReplicaID]uint64)
		}
		cc.vv[d.Replica] = d.Seq
		cc.compact()
		return
	}
	if cc.cloud == nil {
		cc.cloud = make(map[Dot]struct{})
	}
	cc.cloud[d] = struct{}{}
}

// Join adds every dot of o and reports whether any was new (exactly so for a compact cc,
// as every CausalContext is between calls: a vector entry that grows covers an unseen dot).
func (cc *CausalContext) Join(o *CausalContext) (changed bool) {
	for r, s := range o.vv {
		if s > cc.vv[r] {
			if cc.vv == nil {
				cc.vv = make(map[ReplicaID]uint64)
			}
			cc.vv[r] = s
			changed = true
		}
	}
	for d := range o.cloud {
		if !cc.Contains(d) {
			if cc.cloud == nil {
				cc.cloud = make(map[Dot]struct{})
			}
			cc.cloud[d] = struct{}{}
			changed = true
		}
	}
	cc.compact()
	return changed
}

// compact moves cloud dots that extend the version vector into it and drops cloud dots
// the vector already covers.
func (cc *CausalContext) compact() {
	for changed := true; changed && len(cc.cloud) > 0; {
		changed = false
		for d := range cc.cloud {
			switch v := cc.vv[d.Replica]; {
			case d.Seq == v+1:
				if cc.vv == nil {
					cc.vv = make(map[ReplicaID]uint64)
				}
				cc.vv[d.Replica] = d.Seq
				delete(cc.cloud, d)
				changed = true
			case d.Seq <= v:
				delete(cc.cloud, d)
			}
		}
	}
}

// forget drops replica r from the causal context: its vector entry and its dots in the
// cloud. Only for a retired replica none of whose dots a set member holds (see
// Context.dropPruned).
func (cc *CausalContext) forget(r ReplicaID) {
	delete(cc.vv, r)
	for d := range cc.cloud {
		if d.Replica == r {
			delete(cc.cloud, d)
		}
	}
}

// Empty reports whether no dot has been seen.
func (cc *CausalContext) Empty() bool { return len(cc.vv) == 0 && len(cc.cloud) == 0 }

// Clone returns an independent copy.
func (cc *CausalContext) Clone() CausalContext {
	return CausalContext{vv: maps.Clone(cc.vv), cloud: maps.Clone(cc.cloud)}
}

// VersionVector returns a copy of the compact part: every Seq up to v[r] has been seen.
func (cc *CausalContext) VersionVector() map[ReplicaID]uint64 { return maps.Clone(cc.vv) }

// Cloud returns the dots seen beyond a gap, sorted.
func (cc *CausalContext) Cloud() []Dot {
	ds := slices.Collect(maps.Keys(cc.cloud))
	slices.SortFunc(ds, compareDots)
	return ds
}

// Equal reports whether both have seen exactly the same dots.
func (cc *CausalContext) Equal(o *CausalContext) bool {
	a, b := cc.Clone(), o.Clone()
	a.compact()
	b.compact()
	return mapsEqualNonZero(a.vv, b.vv) && maps.Equal(a.cloud, b.cloud)
}

func mapsEqualNonZero(a, b map[ReplicaID]uint64) bool {
	for k, v := range a {
		if v != 0 && b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if v != 0 && a[k] != v {
			return false
		}
	}
	return true
}

func compareDots(a, b Dot) int {
	if a.Replica != b.Replica {
		if a.Replica < b.Replica {
			return -1
		}
		return 1
	}
	switch {
	case a.Seq < b.Seq:
		return -1
	case a.Seq > b.Seq:
		return 1
	}
	return 0
}
