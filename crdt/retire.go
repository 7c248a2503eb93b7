package crdt

import (
	"maps"
	"math"
	"math/bits"
	"slices"
)

// Retirement of replicas: see "Retiring replicas" in the package doc for the argument.

// FoldKey names a fold: the slots of replica From added into those of replica Into.
type FoldKey struct{ From, Into ReplicaID }

// Fold records, in one generation of a counter, how much of From's contribution Into has
// added to its own slot: From's P and N as Into knew them when it folded. Only Into writes
// its folds; they join like slots (a newer generation replaces, within one P and N only
// grow, Undone only turns true).
type Fold struct {
	Gen  Timestamp
	P, N uint64
	// At is when Into last changed the fold in this generation (folded, folded more, or
	// took it back); the fold and From's slot are pruned a grace period after the latest
	// At of From's folds, and the pruned record is forgotten a grace period later. It
	// must be the last change, not the first: a change is a delta naming From, and the
	// record must outlive every such delta in flight (see wholeCounter).
	At Timestamp
	// Undone says Into took its fold back (adding P to its own N and N to its own P)
	// because another replica folded From too and won: the one with the smaller id.
	Undone bool
}

func (f Fold) join(o Fold) Fold {
	switch {
	case o.Gen > f.Gen:
		return o
	case o.Gen < f.Gen:
		return f
	}
	return Fold{Gen: f.Gen, P: max(f.P, o.P), N: max(f.N, o.N), At: max(f.At, o.At), Undone: f.Undone || o.Undone}
}

// folded reports whether counter ct has a fold of replica r in generation gen.
func (ct *Counter) folded(r ReplicaID, gen Timestamp) bool {
	for k, f := range ct.Folds {
		if k.From == r && f.Gen == gen {
			return true
		}
	}
	return false
}

// value is the exact sum of generation gen of ct: the slots of the replicas that no fold
// names as From, plus, for each folded replica, what it holds (the larger of its slot
// and its folds) less every fold of it not undone: that amount sits in the Into slots,
// which are summed as any other.
func (ct *Counter) value(gen Timestamp) wide {
	var sum wide
	for r, s := range ct.Slots {
		if s.Gen == gen && (len(ct.Folds) == 0 || !ct.folded(r, gen)) {
			sum = sum.add(slotValue(s))
		}
	}
	for _, from := range ct.foldedFrom(gen) {
		held := ct.held(from, gen)
		sum = sum.add(slotValue(held))
		for k, f := range ct.Folds {
			if k.From == from && f.Gen == gen && !f.Undone {
				sum = sum.sub(slotValue(Slot{P: f.P, N: f.N}))
			}
		}
	}
	return sum
}

// foldedFrom returns the replicas folded in generation gen, sorted.
func (ct *Counter) foldedFrom(gen Timestamp) []ReplicaID {
	var from []ReplicaID
	for k, f := range ct.Folds {
		if f.Gen == gen && !slices.Contains(from, k.From) {
			from = append(from, k.From)
		}
	}
	slices.Sort(from)
	return from
}

// held is what replica from holds in generation gen as far as ct knows: its slot joined
// with every fold of it (each fold is a copy of its slot at some moment).
func (ct *Counter) held(from ReplicaID, gen Timestamp) Slot {
	s := Slot{Gen: gen}
	if own, ok := ct.Slots[from]; ok && own.Gen == gen {
		s = own
	}
	for k, f := range ct.Folds {
		if k.From == from && f.Gen == gen {
			s.P, s.N = max(s.P, f.P), max(s.N, f.N)
		}
	}
	return s
}

// winner returns the replica whose fold of from in generation gen stands: the smallest
// Into among the folds not undone; ok is false when there is none.
func (ct *Counter) winner(from ReplicaID, gen Timestamp) (into ReplicaID, ok bool) {
	for k, f := range ct.Folds {
		if k.From == from && f.Gen == gen && !f.Undone && (!ok || k.Into < into) {
			into, ok = k.Into, true
		}
	}
	return into, ok
}

// Absorb is the delta by which w.Replica retires replica from (see the package doc): in
// every counter where from holds something in the visible generation, w.Replica adds to
// its own slot what from holds beyond what w.Replica folded before, and records the
// fold. A counter where another replica's fold of from stands is left to it. Absorb does not slide the context's TTL; on an expired context it does nothing. It
// returns nil when there is nothing to fold, and an error when a fold would overflow
// w.Replica's slot (nothing is folded then).
func (c *Context) Absorb(w Write, from ReplicaID) (*Context, error) {
	if from == w.Replica || c.expired(w.At) {
		return nil, nil
	}
	var d *Context
	for _, k := range sortedKeys(c.Counters) {
		ct := c.Counters[k]
		gen, _, live := ct.generation(c.Cleared)
		if !live {
			continue
		}
		if _, ok := ct.Slots[from]; !ok && !ct.folded(from, gen) {
			continue
		}
		if into, ok := ct.winner(from, gen); ok && into != w.Replica {
			continue // another replica's fold stands; its Settle keeps it complete
		}
		dc, err := ct.fold(w, from, gen)
		if err != nil {
			return nil, withKey(err, k)
		}
		if dc == nil {
			continue
		}
		if d == nil {
			d = &Context{Counters: map[string]Counter{}}
		}
		d.Counters[k] = *dc
	}
	return d, nil
}

// fold is the delta of counter ct that makes w.Replica's fold of from in generation gen
// cover all that from holds there; nil when it already does or was undone.
func (ct *Counter) fold(w Write, from ReplicaID, gen Timestamp) (*Counter, error) {
	key := FoldKey{From: from, Into: w.Replica}
	mine, had := ct.Folds[key]
	if had && mine.Gen != gen {
		mine, had = Fold{}, false
	}
	if mine.Undone {
		return nil, nil
	}
	held := ct.held(from, gen)
	dP, dN := held.P-min(held.P, mine.P), held.N-min(held.N, mine.N)
	if dP == 0 && dN == 0 && had {
		return nil, nil // a fold of nothing is still recorded: it lets from be pruned
	}
	own := ct.ownSlot(w.Replica, gen)
	var c1, c2 uint64
	own.P, c1 = bits.Add64(own.P, dP, 0)
	own.N, c2 = bits.Add64(own.N, dN, 0)
	if c1 != 0 || c2 != 0 {
		return nil, &RangeError{Key: "", Slot: true}
	}
	// The counter lives as long as the latest slot of its generation: from's expiry
	// must outlive from's slot.
	if fs, ok := ct.Slots[from]; ok && fs.Gen == gen {
		own.Expires = max(own.Expires, fs.Expires)
	}
	nf := Fold{Gen: gen, P: max(mine.P, held.P), N: max(mine.N, held.N), At: w.At}
	// The whole counter goes along (see wholeCounter), from's slot with it, so that every
	// state with the new own slot knows what from holds (and a receiver that never saw
	// from's slot does not undercount it).
	return ct.wholeCounter(Counter{Slots: map[ReplicaID]Slot{w.Replica: own}, Folds: map[FoldKey]Fold{key: nf}}), nil
}

// wholeCounter is the delta of counter ct that changes what d holds: all of ct joined
// with d. A delta that names a fold carries the whole counter, not only the writer's
// slot and folds, so that it is a consistent picture of every retired replica it names:
// its slot, every fold of it and every Into slot. A delta naming a fold of From may
// arrive after a replica pruned From and forgot the pruned record (the writer keeps
// sending its folds until it prunes From itself, which may be much later); joined
// there, a part of the picture would count From again (a loser's undone fold alone
// reads as From's amount with nothing standing to take it off), while the whole picture
// adds nothing: sent at least a grace period after the latest change of From's folds
// (Fold.At), it shows them settled, one fold standing and covering all From holds.
func (ct *Counter) wholeCounter(d Counter) *Counter {
	w := ct.clone()
	w.join(d)
	return &w
}

// ownSlot returns replica r's slot of generation gen, or a fresh one in it.
func (ct *Counter) ownSlot(r ReplicaID, gen Timestamp) Slot {
	if s, ok := ct.Slots[r]; ok && s.Gen == gen {
		return s
	}
	var exp Timestamp
	for _, s := range ct.Slots {
		if s.Gen == gen {
			exp = max(exp, s.Expires)
		}
	}
	return Slot{Gen: gen, Expires: exp}
}

// foldsInto reports whether counter ct has a fold into r in generation gen. Every delta of
// r's slot then carries the whole counter (see wholeCounter), its folds with it: a state
// that holds r's slot with a fold in it then knows of the fold, so no state ever counts a
// folded amount twice.
func (ct *Counter) foldsInto(r ReplicaID, gen Timestamp) bool {
	for k, f := range ct.Folds {
		if k.Into == r && f.Gen == gen {
			return true
		}
	}
	return false
}

// Settle is the delta that keeps w.Replica's folds exact: it takes back a fold of
// w.Replica that another fold of the same replica outranks (a smaller Into, not undone),
// and completes a standing fold of w.Replica when the folded replica turns out to hold
// more (a late delta of it arrived). Nil when there is nothing to do.
func (c *Context) Settle(w Write) (*Context, error) {
	if c.expired(w.At) {
		return nil, nil
	}
	var d *Context
	for _, k := range sortedKeys(c.Counters) {
		ct := c.Counters[k]
		if len(ct.Folds) == 0 {
			continue
		}
		gen, _, live := ct.generation(c.Cleared)
		if !live {
			continue
		}
		var dc *Counter
		for _, from := range ct.foldedFrom(gen) {
			mine, ok := ct.Folds[FoldKey{From: from, Into: w.Replica}]
			if !ok || mine.Gen != gen || mine.Undone {
				continue
			}
			work := ct
			if dc != nil {
				work = ct.clone()
				work.join(*dc)
			}
			into, _ := work.winner(from, gen)
			var step *Counter
			var err error
			if into != w.Replica {
				step = work.undo(w, from, gen)
			} else {
				step, err = work.fold(w, from, gen)
			}
			if err != nil {
				return nil, withKey(err, k)
			}
			if step == nil {
				continue
			}
			if dc == nil {
				dc = step
			} else {
				dc.join(*step)
			}
		}
		if dc != nil {
			if d == nil {
				d = &Context{Counters: map[string]Counter{}}
			}
			d.Counters[k] = *dc
		}
	}
	return d, nil
}

// undo is the delta by which replica r takes back its fold of from in generation gen:
// its slot gains the fold's N in P and its P in N, a net of minus what the fold added.
func (ct *Counter) undo(w Write, from ReplicaID, gen Timestamp) *Counter {
	key := FoldKey{From: from, Into: w.Replica}
	f := ct.Folds[key]
	own := ct.ownSlot(w.Replica, gen)
	own.P = satAdd(own.P, f.N)
	own.N = satAdd(own.N, f.P)
	f.Undone, f.At = true, w.At
	return ct.wholeCounter(Counter{Slots: map[ReplicaID]Slot{w.Replica: own}, Folds: map[FoldKey]Fold{key: f}})
}

// withKey names the counter in a RangeError.
func withKey(err error, key string) error {
	if re, ok := err.(*RangeError); ok {
		re.Key = key
	}
	return err
}

func satAdd(a, b uint64) uint64 {
	s, c := bits.Add64(a, b, 0)
	if c != 0 {
		return math.MaxUint64
	}
	return s
}

// prune drops, a grace period after it was folded, every trace of replica from in the
// counters of c, once every counter's fold of it is settled: one fold stands and covers
// all that from holds. It records from in Pruned, with the latest change of its folds (the
// same on every replica, so that every replica forgets the record at the same time), so
// that a late delta of it is ignored. It reports whether it pruned.
func (c *Context) prune(from ReplicaID, horizon Timestamp) bool {
	var latest Timestamp
	for _, ct := range c.Counters {
		gen := ct.newestGen()
		if _, ok := ct.Slots[from]; !ok && !ct.folded(from, gen) {
			continue
		}
		if gen < max(ct.Floor, c.Cleared) {
			continue // an old generation, which normalizing drops with from's part of it
		}
		if !ct.folded(from, gen) {
			return false // a slot of from no fold covers (yet)
		}
		into, ok := ct.winner(from, gen)
		if !ok {
			return false
		}
		f := ct.Folds[FoldKey{From: from, Into: into}]
		held := ct.held(from, gen)
		if f.P != held.P || f.N != held.N {
			return false
		}
		for k, g := range ct.Folds {
			if k.From != from || g.Gen != gen {
				continue
			}
			// Every other fold must be taken back: what a standing one added would be
			// counted twice once from's part is gone. (A replica that folded and died
			// before it could take its fold back keeps from unpruned in this counter;
			// the value stays exact.)
			if (k.Into != into && !g.Undone && (g.P != 0 || g.N != 0)) || g.At == 0 || g.At > horizon {
				return false
			}
			latest = max(latest, g.At)
		}
	}
	if c.Pruned == nil {
		c.Pruned = make(map[ReplicaID]Timestamp)
	}
	c.Pruned[from] = max(c.Pruned[from], latest)
	c.dropPruned()
	return true
}

// dropPruned removes the slots and folds of the replicas in Pruned, and their entries in
// the causal context when no set member holds a dot of theirs.
func (c *Context) dropPruned() {
	if len(c.Pruned) == 0 {
		return
	}
	for k, ct := range c.Counters {
		for r := range c.Pruned {
			delete(ct.Slots, r)
		}
		for fk := range ct.Folds {
			if _, ok := c.Pruned[fk.From]; ok {
				delete(ct.Folds, fk)
			}
		}
		if len(ct.Folds) == 0 {
			ct.Folds = nil
		}
		c.Counters[k] = ct
	}
	for r := range c.Pruned {
		if !c.holdsDotOf(r) {
			c.CC.forget(r)
		}
	}
}

// holdsDotOf reports whether a set member of c was added by replica r.
func (c *Context) holdsDotOf(r ReplicaID) bool {
	for _, s := range c.Sets {
		for _, dots := range s {
			for d := range dots {
				if d.Replica == r {
					return true
				}
			}
		}
	}
	return false
}

// compactRetired is Compact's part for retirement: it prunes the replicas whose folds
// are settled and older than horizon, and forgets the Pruned records whose folds are
// older than forget, a second grace period later, when no late delta is expected any
// more.
func (c *Context) compactRetired(horizon, forget Timestamp) bool {
	changed := false
	var froms []ReplicaID
	for _, ct := range c.Counters {
		for k := range ct.Folds {
			if !slices.Contains(froms, k.From) {
				froms = append(froms, k.From)
			}
		}
	}
	slices.Sort(froms)
	for _, from := range froms {
		if c.prune(from, horizon) {
			changed = true
		}
	}
	for r, at := range c.Pruned {
		if at <= forget {
			delete(c.Pruned, r)
			c.Forgotten = max(c.Forgotten, forget)
			changed = true
		}
	}
	if len(c.Pruned) == 0 {
		c.Pruned = nil
	}
	return changed
}

// Replicas returns the number of replica ids c holds state for: counter slots, folds,
// causal-context entries and set dots. It is what retirement keeps bounded by the live
// replicas (map entries name a replica only to break ties between writes, which costs
// nothing per replica).
func (c *Context) Replicas() int {
	seen := map[ReplicaID]struct{}{}
	for _, ct := range c.Counters {
		for r := range ct.Slots {
			seen[r] = struct{}{}
		}
		for k := range ct.Folds {
			seen[k.From] = struct{}{}
			seen[k.Into] = struct{}{}
		}
	}
	for r := range c.CC.vv {
		seen[r] = struct{}{}
	}
	for d := range c.CC.cloud {
		seen[d.Replica] = struct{}{}
	}
	for _, s := range c.Sets {
		for _, dots := range s {
			for d := range dots {
				seen[d.Replica] = struct{}{}
			}
		}
	}
	return len(seen)
}

// HoldsReplica reports whether c holds counter state of replica r that retirement would
// fold: a slot of it, or a fold of it, in a counter.
func (c *Context) HoldsReplica(r ReplicaID) bool {
	for _, ct := range c.Counters {
		if _, ok := ct.Slots[r]; ok {
			return true
		}
		for k := range ct.Folds {
			if k.From == r {
				return true
			}
		}
	}
	return false
}

// CounterReplicas calls f for every replica id that holds a slot in a counter of c, once
// each; retirement candidates are found this way.
func (c *Context) CounterReplicas(f func(ReplicaID)) {
	var seen []ReplicaID
	for _, ct := range c.Counters {
		for r := range ct.Slots {
			if !slices.Contains(seen, r) {
				seen = append(seen, r)
				f(r)
			}
		}
	}
}

// Retires reports whether c says that replica r was retired: a fold of it, or its id
// pruned. A replica that learns so of itself was cut off longer than the fleet waits.
func (c *Context) Retires(r ReplicaID) bool {
	if _, ok := c.Pruned[r]; ok {
		return true
	}
	for _, ct := range c.Counters {
		for k := range ct.Folds {
			if k.From == r {
				return true
			}
		}
	}
	return false
}

// HasFolds reports whether a counter of c records a fold, which Settle may have work for.
func (c *Context) HasFolds() bool {
	for _, ct := range c.Counters {
		if len(ct.Folds) > 0 {
			return true
		}
	}
	return false
}

func (ct Counter) clone() Counter {
	return Counter{Floor: ct.Floor, Slots: maps.Clone(ct.Slots), Folds: maps.Clone(ct.Folds)}
}
