package crdt

import (
	"bytes"
	"maps"
	"slices"
	"time"
)

// Context is the replicated state of one named context, and also the shape of every delta
// applied to it. The zero value is an empty context ready to use. A Context is not safe for
// concurrent use; the store serializes access.
type Context struct {
	// Meta holds the context's TTL, last-writer-wins.
	Meta Meta
	// Cleared hides everything written before it (see the package doc). Joined by max.
	Cleared Timestamp
	// CC is the causal context of the set elements: the dots this state has seen.
	CC CausalContext
	// Counters maps a counter key to its state.
	Counters map[string]Counter
	// Maps maps a map name to its entries.
	Maps map[string]map[string]Register
	// Sets maps a set name to its members, each with the dots that added it.
	Sets map[string]map[string]Member
	// Pruned lists the retired replicas whose folds were pruned, with when: their counter
	// slots and folds are dropped on sight, so a late delta of theirs is not counted
	// again. Joined by max; Compact forgets an entry a grace period later.
	Pruned map[ReplicaID]Timestamp
	// Forgotten is how far Compact has forgotten Pruned entries: an entry with a time at
	// or before it is dropped wherever it comes from, so that replicas that forgot an
	// entry do not get it back from one that has not yet. Joined by max.
	Forgotten Timestamp
}

// Meta is the context's time to live. The zero value (TS 0) means "never set".
type Meta struct {
	TS      Timestamp
	Replica ReplicaID
	// TTL is the sliding time to live: each write moves Expires to its timestamp plus TTL
	// unless Fixed. Zero means no expiry.
	TTL time.Duration
	// Expires is the instant the context expires; zero means never.
	Expires Timestamp
	// Fixed stops writes from sliding Expires.
	Fixed bool
}

// Counter is a PN-counter with generations (see the package doc).
type Counter struct {
	// Floor hides every slot of an older generation; set when the store compacts an
	// expired counter. Joined by max.
	Floor Timestamp
	// Slots holds each replica's contribution to the newest generation it wrote.
	Slots map[ReplicaID]Slot
	// Folds records the slots of retired replicas added into live replicas' slots (see
	// "Retiring replicas" in the package doc). Nil for nearly every counter.
	Folds map[FoldKey]Fold
}

// Slot is one replica's contribution to a counter. Only its replica writes it, so a later
// generation replaces it and within a generation P and N only grow.
type Slot struct {
	Gen     Timestamp
	P, N    uint64
	Expires Timestamp
}

// Register is a map entry: the latest write by (TS, Replica) wins. A nil Value is a
// tombstone left by a delete.
type Register struct {
	TS      Timestamp
	Replica ReplicaID
	Value   []byte // JSON; nil for a tombstone
	Expires Timestamp
}

// Member is the set of dots that added one set member, each with its birth and expiry.
type Member map[Dot]Birth

// Birth is when a dot added a member and when that addition expires (zero: never).
type Birth struct {
	TS      Timestamp
	Expires Timestamp
}

// Write says who makes a mutation and when.
type Write struct {
	Replica ReplicaID
	At      Timestamp
}

// ---------------------------------------------------------------------------------------
// Join

// Join merges o into c and reports whether that changed c (what a reader or an encoding
// of c can tell; c must be canonical, as every state Join or a mutator leaves is). o is not
// modified and shares no memory with c afterwards. Telling a change costs the size of o,
// not of c, so a replica can cheaply decide whether a delta it received is news.
func (c *Context) Join(o *Context) (changed bool) {
	if o.Meta.after(c.Meta) {
		c.Meta = o.Meta
		changed = true
	}
	cleared := c.Cleared
	c.Cleared = max(c.Cleared, o.Cleared)
	pruned := false
	if o.Forgotten > c.Forgotten {
		c.Forgotten = o.Forgotten
		pruned = true
	}
	for r, at := range o.Pruned {
		if at <= c.Forgotten {
			continue
		}
		if cur, ok := c.Pruned[r]; !ok || at > cur {
			if c.Pruned == nil {
				c.Pruned = make(map[ReplicaID]Timestamp)
			}
			c.Pruned[r] = at
			pruned = pruned || !ok
		}
	}

	// Normalizing can drop what the join just brought in (a slot of an old generation),
	// so the counters o names are compared afterwards: their floors and the slots o
	// names. Slots o does not name are dropped only when a floor rises or a named slot
	// moves to a newer generation, and either shows in what is compared.
	type counterBefore struct {
		key   string
		floor Timestamp
		ok    bool
	}
	type slotBefore struct {
		key  string
		r    ReplicaID
		slot Slot
		ok   bool
	}
	// Buffers on the stack: a request's delta names a handful of counters, and a join on
	// the request path should not allocate to tell its change.
	type foldBefore struct {
		key  string
		k    FoldKey
		fold Fold
		ok   bool
	}
	var counterBuf [8]counterBefore
	var slotBuf [8]slotBefore
	counters, slots := counterBuf[:0], slotBuf[:0]
	var folds []foldBefore // retirement only: rare
	for k, oc := range o.Counters {
		cc, ok := c.Counters[k]
		counters = append(counters, counterBefore{k, cc.Floor, ok})
		for r := range oc.Slots {
			s, ok := cc.Slots[r]
			slots = append(slots, slotBefore{k, r, s, ok})
		}
		for fk := range oc.Folds {
			f, ok := cc.Folds[fk]
			folds = append(folds, foldBefore{k, fk, f, ok})
		}
		cc.join(oc)
		if c.Counters == nil {
			c.Counters = make(map[string]Counter)
		}
		c.Counters[k] = cc
	}
	for name, om := range o.Maps {
		cm := c.Maps[name]
		if cm == nil {
			cm = make(map[string]Register, len(om))
			if c.Maps == nil {
				c.Maps = make(map[string]map[string]Register)
			}
			c.Maps[name] = cm
		}
		for k, or := range om {
			if cr, ok := cm[k]; !ok || or.after(cr) {
				or.Value = bytes.Clone(or.Value)
				cm[k] = or
				// Replacing an entry of canonical c replaces one at or after Cleared with a
				// later one, which normalizing keeps; a new entry stays if not too old.
				changed = changed || ok || or.TS >= c.Cleared
			}
		}
	}
	if c.joinSets(o) {
		changed = true
	}
	if c.CC.Join(&o.CC) {
		changed = true
	}
	// A join costs the size of the delta, not of the state: only a new Cleared or a newly
	// pruned replica can change entries that o does not name (the set removals are
	// normalized in joinSets).
	if c.Cleared != cleared || pruned {
		c.normalize()
		return true
	}
	c.normalizeTouched(o)
	for _, b := range counters {
		after, ok := c.Counters[b.key]
		changed = changed || ok != b.ok || after.Floor != b.floor
	}
	for _, b := range slots {
		after, ok := c.Counters[b.key].Slots[b.r]
		changed = changed || ok != b.ok || after != b.slot
	}
	for _, b := range folds {
		after, ok := c.Counters[b.key].Folds[b.k]
		changed = changed || ok != b.ok || after != b.fold
	}
	return changed
}

// joinSets is the dot-kernel join: a dot survives if both sides have it, or one side has
// it and the other has not seen it. It reports whether it removed a dot of c, added one
// that normalizing will keep, or moved a birth.
func (c *Context) joinSets(o *Context) (changed bool) {
	// Only dots o has seen can be removed by it: nothing to scan when it has seen none,
	// as with counter and map deltas.
	if !o.CC.Empty() {
		for name, cs := range c.Sets {
			os := o.Sets[name]
			for m, cdots := range cs {
				odots := os[m]
				for d := range cdots {
					if _, ok := odots[d]; !ok && o.CC.Contains(d) {
						delete(cdots, d)
						changed = true
					}
				}
				if len(cdots) == 0 {
					delete(cs, m)
				}
			}
			if len(cs) == 0 {
				delete(c.Sets, name)
			}
		}
	}
	for name, os := range o.Sets {
		cs := c.Sets[name]
		for m, odots := range os {
			cdots := cs[m]
			for d, b := range odots {
				if cb, ok := cdots[d]; ok {
					if nb := maxBirth(cb, b); nb != cb {
						cdots[d] = nb
						changed = true
					}
					continue
				}
				if c.CC.Contains(d) {
					continue
				}
				if cs == nil {
					cs = make(map[string]Member)
					if c.Sets == nil {
						c.Sets = make(map[string]map[string]Member)
					}
					c.Sets[name] = cs
				}
				if cdots == nil {
					cdots = make(Member, len(odots))
					cs[m] = cdots
				}
				cdots[d] = b
				changed = changed || b.TS >= c.Cleared
			}
		}
	}
	return changed
}

// maxBirth joins two records of the same dot. A dot is made once, so they are equal in
// practice; taking the maximum keeps the join a lattice even for hand-made states.
func maxBirth(a, b Birth) Birth {
	return Birth{TS: max(a.TS, b.TS), Expires: max(a.Expires, b.Expires)}
}

// normalizeTouched is normalize restricted to the entries o names, for a join that did not
// move Cleared into a state that was normal before it.
func (c *Context) normalizeTouched(o *Context) {
	for k := range o.Counters {
		c.normalizeCounter(k)
	}
	for name, om := range o.Maps {
		m := c.Maps[name]
		for k := range om {
			if r, ok := m[k]; ok && r.TS < c.Cleared {
				delete(m, k)
			}
		}
		if m != nil && len(m) == 0 {
			delete(c.Maps, name)
		}
	}
	for name, os := range o.Sets {
		s := c.Sets[name]
		for m := range os {
			dots := s[m]
			for d, b := range dots {
				if b.TS < c.Cleared {
					delete(dots, d)
				}
			}
			if dots != nil && len(dots) == 0 {
				delete(s, m)
			}
		}
		if s != nil && len(s) == 0 {
			delete(c.Sets, name)
		}
	}
}

// normalize drops what can never be seen again, whatever is joined later: data written
// before Cleared, dots that add nothing, counter slots of superseded generations and empty
// containers. It keeps states canonical so equal states encode to equal bytes.
func (c *Context) normalize() {
	for k := range c.Counters {
		c.normalizeCounter(k)
	}
	for r, at := range c.Pruned {
		if at <= c.Forgotten {
			delete(c.Pruned, r)
		}
	}
	if len(c.Pruned) == 0 {
		c.Pruned = nil
	} else {
		c.dropPruned()
	}
	for name, m := range c.Maps {
		for k, r := range m {
			if r.TS < c.Cleared {
				delete(m, k)
			}
		}
		if len(m) == 0 {
			delete(c.Maps, name)
		}
	}
	for name, s := range c.Sets {
		for m, dots := range s {
			for d, b := range dots {
				if b.TS < c.Cleared {
					delete(dots, d)
				}
			}
			if len(dots) == 0 {
				delete(s, m)
			}
		}
		if len(s) == 0 {
			delete(c.Sets, name)
		}
	}
}

// normalizeCounter drops counter k's slots and folds of superseded generations and those
// of pruned replicas, and the counter itself when nothing is left.
func (c *Context) normalizeCounter(k string) {
	ct, ok := c.Counters[k]
	if !ok {
		return
	}
	floor := max(ct.Floor, c.Cleared)
	var gen Timestamp
	if len(ct.Slots) > 1 {
		// A lone slot is of the newest generation: no pass to find it.
		gen = ct.newestGen()
	}
	for r, s := range ct.Slots {
		_, pruned := c.Pruned[r]
		if s.Gen < floor || s.Gen < gen || pruned {
			delete(ct.Slots, r)
		}
	}
	for fk, f := range ct.Folds {
		_, pruned := c.Pruned[fk.From]
		if f.Gen < floor || f.Gen < gen || pruned {
			delete(ct.Folds, fk)
		}
	}
	if len(ct.Folds) == 0 && ct.Folds != nil {
		ct.Folds = nil
		c.Counters[k] = ct
	}
	if len(ct.Slots) == 0 && ct.Floor == 0 {
		delete(c.Counters, k)
	}
}

func (m Meta) after(o Meta) bool {
	if m.TS != o.TS {
		return m.TS > o.TS
	}
	if m.Replica != o.Replica {
		return m.Replica > o.Replica
	}
	// Equal stamps come from one write in practice; order the rest so join stays a lattice.
	if m.Expires != o.Expires {
		return m.Expires > o.Expires
	}
	if m.TTL != o.TTL {
		return m.TTL > o.TTL
	}
	return m.Fixed && !o.Fixed
}

func (r Register) after(o Register) bool {
	if r.TS != o.TS {
		return r.TS > o.TS
	}
	if r.Replica != o.Replica {
		return r.Replica > o.Replica
	}
	if (r.Value == nil) != (o.Value == nil) {
		return r.Value == nil // a delete beats a put with the same stamp
	}
	if c := bytes.Compare(r.Value, o.Value); c != 0 {
		return c > 0
	}
	return r.Expires > o.Expires
}

func (ct *Counter) join(o Counter) {
	ct.Floor = max(ct.Floor, o.Floor)
	for k, of := range o.Folds {
		if ct.Folds == nil {
			ct.Folds = make(map[FoldKey]Fold, len(o.Folds))
		}
		if cf, ok := ct.Folds[k]; ok {
			ct.Folds[k] = cf.join(of)
		} else {
			ct.Folds[k] = of
		}
	}
	for r, os := range o.Slots {
		cs, ok := ct.Slots[r]
		switch {
		case !ok || os.Gen > cs.Gen:
			cs = os
		case os.Gen == cs.Gen:
			cs = Slot{Gen: cs.Gen, P: max(cs.P, os.P), N: max(cs.N, os.N), Expires: max(cs.Expires, os.Expires)}
		default:
			continue
		}
		if ct.Slots == nil {
			ct.Slots = make(map[ReplicaID]Slot)
		}
		ct.Slots[r] = cs
	}
}

func (ct *Counter) newestGen() Timestamp {
	var g Timestamp
	for _, s := range ct.Slots {
		g = max(g, s.Gen)
	}
	return g
}

// generation returns the counter's visible generation given the context's Cleared: its id,
// its expiry (zero: never), and whether it has any slot.
func (ct *Counter) generation(cleared Timestamp) (gen, expires Timestamp, live bool) {
	floor := max(ct.Floor, cleared)
	// One pass for the newest generation and its expiry: every read of a counter (and
	// every write, through Alive) takes it, and a map iteration costs more than it does.
	for _, s := range ct.Slots {
		switch {
		case s.Gen > gen:
			gen, expires = s.Gen, s.Expires
		case s.Gen == gen:
			expires = max(expires, s.Expires)
		}
	}
	if gen < floor || len(ct.Slots) == 0 {
		return floor, 0, false
	}
	return gen, expires, true
}

// ---------------------------------------------------------------------------------------
// Reads. Every read takes the reader's instant so that expiry is deterministic.

// Alive reports whether the context exists at now: it has not expired and holds a visible
// value or a TTL set since its last clear.
func (c *Context) Alive(now Timestamp) bool {
	if c.expired(now) {
		return false
	}
	if c.Meta.TS != 0 && c.Meta.TS >= c.Cleared && c.Meta.TTL > 0 {
		return true
	}
	for k := range c.Counters {
		if _, ok := c.Counter(k, now); ok {
			return true
		}
	}
	for name := range c.Maps {
		if len(c.MapEntries(name, now)) > 0 {
			return true
		}
	}
	for name := range c.Sets {
		if len(c.SetMembers(name, now)) > 0 {
			return true
		}
	}
	return false
}

// Marker reports whether c holds nothing but instants: no counter slot, map register or
// set member, and no TTL set in its current life. A delete leaves a marker (its instant
// must reach the other replicas), and so does the sweeper of an expired context once the
// grace period has passed. It depends on the state alone, not on the time, so a store can
// keep an exact count of the contexts that are not markers as states change. A context
// that is Alive is never a marker.
func (c *Context) Marker() bool {
	if c.Meta.TTL > 0 && c.Meta.TS >= c.Cleared {
		return false
	}
	for _, ct := range c.Counters {
		if len(ct.Slots) > 0 {
			return false
		}
	}
	for _, m := range c.Maps {
		if len(m) > 0 {
			return false
		}
	}
	for _, s := range c.Sets {
		if len(s) > 0 {
			return false
		}
	}
	return true
}

// Expires returns the context's expiry instant; zero means never.
func (c *Context) Expires() Timestamp { return c.Meta.Expires }

func (c *Context) expired(now Timestamp) bool {
	return c.Meta.Expires != 0 && now >= c.Meta.Expires
}

// Counter returns a counter's value and whether it exists at now. A value past the int64
// range (increments of several replicas merged, see RangeError) reads as the bound it
// passed.
func (c *Context) Counter(key string, now Timestamp) (int64, bool) {
	if c.expired(now) {
		return 0, false
	}
	ct, ok := c.Counters[key]
	if !ok {
		return 0, false
	}
	gen, exp, live := ct.generation(c.Cleared)
	if !live || (exp != 0 && now >= exp) {
		return 0, false
	}
	// Summed in 128 bits and saturated, never wrapped (see RangeError).
	v, _ := ct.value(gen).int64()
	return v, true
}

// CounterKeys returns the keys of the counters that exist at now, sorted.
func (c *Context) CounterKeys(now Timestamp) []string {
	var ks []string
	for k := range c.Counters {
		if _, ok := c.Counter(k, now); ok {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

// MapGet returns a map entry's JSON value and whether it exists at now.
func (c *Context) MapGet(name, key string, now Timestamp) ([]byte, bool) {
	if c.expired(now) {
		return nil, false
	}
	r, ok := c.Maps[name][key]
	if !ok || !r.visible(c.Cleared, now) {
		return nil, false
	}
	return r.Value, true
}

// MapEntries returns the entries of a map that exist at now. The values alias the state:
// copy them before the state changes.
func (c *Context) MapEntries(name string, now Timestamp) map[string][]byte {
	if c.expired(now) {
		return nil
	}
	var out map[string][]byte
	for k, r := range c.Maps[name] {
		if r.visible(c.Cleared, now) {
			if out == nil {
				out = make(map[string][]byte)
			}
			out[k] = r.Value
		}
	}
	return out
}

// MapNames returns the names of the maps with at least one entry at now, sorted.
func (c *Context) MapNames(now Timestamp) []string {
	var ns []string
	for name := range c.Maps {
		if len(c.MapEntries(name, now)) > 0 {
			ns = append(ns, name)
		}
	}
	slices.Sort(ns)
	return ns
}

func (r Register) visible(cleared, now Timestamp) bool {
	return r.Value != nil && r.TS >= cleared && (r.Expires == 0 || now < r.Expires)
}

// SetMembers returns the members of a set at now, sorted.
func (c *Context) SetMembers(name string, now Timestamp) []string {
	if c.expired(now) {
		return nil
	}
	var ms []string
	for m, dots := range c.Sets[name] {
		if dots.visible(c.Cleared, now) {
			ms = append(ms, m)
		}
	}
	slices.Sort(ms)
	return ms
}

// SetNames returns the names of the sets with at least one member at now, sorted.
func (c *Context) SetNames(now Timestamp) []string {
	var ns []string
	for name := range c.Sets {
		if len(c.SetMembers(name, now)) > 0 {
			ns = append(ns, name)
		}
	}
	slices.Sort(ns)
	return ns
}

func (m Member) visible(cleared, now Timestamp) bool {
	for _, b := range m {
		if b.TS >= cleared && (b.Expires == 0 || now < b.Expires) {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------------------
// Delta mutators. Each returns the delta of one mutation made by w on c; c is unchanged.
// Join the delta into c to perform the mutation. Every write also slides the context's
// TTL and, on a context that has expired, clears its previous life (see the package doc).

// prepare returns the delta every write starts from and the Cleared the write must see.
func (c *Context) prepare(w Write) (*Context, Timestamp) {
	d := &Context{}
	cleared := c.Cleared
	switch {
	case c.expired(w.At):
		// The first write after expiry starts a new life; the TTL setting itself survives.
		d.Cleared = c.Meta.Expires
		cleared = max(cleared, d.Cleared)
		if c.Meta.TTL > 0 {
			d.Meta = Meta{TS: w.At, Replica: w.Replica, TTL: c.Meta.TTL, Expires: w.At.Add(c.Meta.TTL), Fixed: c.Meta.Fixed}
		} else {
			d.Meta = Meta{TS: w.At, Replica: w.Replica}
		}
	case c.Meta.TTL > 0 && !c.Meta.Fixed:
		d.Meta = Meta{TS: w.At, Replica: w.Replica, TTL: c.Meta.TTL, Expires: w.At.Add(c.Meta.TTL)}
	}
	return d, cleared
}

// Incr adds by to counter key. A positive ttl sets the expiry of the counter to now+ttl
// (it only moves later); zero keeps the counter's expiry. It is IncrAll of one increment
// without the range check, for callers whose increments are small (simulations, tests):
// an increment IncrAll would refuse is clamped so that the slot never wraps (see
// RangeError). Use IncrAll where by comes from outside.
func (c *Context) Incr(w Write, key string, by int64, ttl time.Duration) *Context {
	d, _ := c.incrAll(w, []Inc{{Key: key, By: by, TTL: ttl}}, false)
	return d
}

// Inc is one increment of IncrAll.
type Inc struct {
	Key string
	By  int64
	TTL time.Duration
}

// IncrAll is the delta of the increments incs made by w at once, equal to the join of
// their Incr deltas made one after the other, for the cost of one: the proxy's telemetry
// is several counters per request. If one of them would take its counter out of range
// (see RangeError) it returns a *RangeError and no delta: none of incs is made.
func (c *Context) IncrAll(w Write, incs []Inc) (*Context, error) {
	return c.incrAll(w, incs, true)
}

func (c *Context) incrAll(w Write, incs []Inc, check bool) (*Context, error) {
	d, cleared := c.prepare(w)
	d.Counters = make(map[string]Counter, len(incs))
	for _, in := range incs {
		// The other replicas' part is read from c even for a key incs names twice: only
		// this replica's slot moves.
		ct := c.Counters[in.Key]
		s, others := ct.incrView(w.Replica, cleared, w.At)
		if prev, seen := d.Counters[in.Key]; seen {
			s = prev.Slots[w.Replica]
		}
		next, ok, slot := addTo(s, in.By, others, check)
		if !ok {
			v, fits := others.add(slotValue(s)).int64()
			return nil, &RangeError{Key: in.Key, Value: v, Saturated: !fits, By: in.By, Slot: slot}
		}
		if in.TTL > 0 {
			next.Expires = max(next.Expires, w.At.Add(in.TTL))
		}
		dc := Counter{Slots: map[ReplicaID]Slot{w.Replica: next}}
		if len(ct.Folds) > 0 && ct.foldsInto(w.Replica, next.Gen) {
			// What this slot holds of retired replicas goes with it, and with it the
			// whole counter (see wholeCounter).
			dc = *ct.wholeCounter(dc)
		}
		d.Counters[in.Key] = dc
	}
	return d, nil
}

// Put sets a map entry to a JSON value. A positive ttl makes the entry expire at now+ttl;
// zero means it never expires.
func (c *Context) Put(w Write, name, key string, value []byte, ttl time.Duration) *Context {
	d, _ := c.prepare(w)
	r := Register{TS: w.At, Replica: w.Replica, Value: bytes.Clone(value)}
	if r.Value == nil {
		r.Value = []byte{}
	}
	if ttl > 0 {
		r.Expires = w.At.Add(ttl)
	}
	d.Maps = map[string]map[string]Register{name: {key: r}}
	return d
}

// Del deletes a map entry, leaving a timestamped tombstone.
func (c *Context) Del(w Write, name, key string) *Context {
	d, _ := c.prepare(w)
	d.Maps = map[string]map[string]Register{name: {key: {TS: w.At, Replica: w.Replica}}}
	return d
}

// Add adds member to a set with a new dot, replacing the dots that added it before (so
// its expiry is that of this addition). A positive ttl makes the addition expire at
// now+ttl; zero means never.
func (c *Context) Add(w Write, name, member string, ttl time.Duration) *Context {
	d, _ := c.prepare(w)
	dot := c.CC.Next(w.Replica)
	b := Birth{TS: w.At}
	if ttl > 0 {
		b.Expires = w.At.Add(ttl)
	}
	for old := range c.Sets[name][member] {
		d.CC.Add(old)
	}
	d.CC.Add(dot)
	d.Sets = map[string]map[string]Member{name: {member: {dot: b}}}
	return d
}

// Remove removes member from a set: the delta covers every dot that added it here, so a
// concurrent addition elsewhere survives (add wins).
func (c *Context) Remove(w Write, name, member string) *Context {
	d, _ := c.prepare(w)
	for old := range c.Sets[name][member] {
		d.CC.Add(old)
	}
	return d
}

// SetTTL sets the context's time to live: zero removes the expiry. With fixed, later
// writes do not slide it.
func (c *Context) SetTTL(w Write, ttl time.Duration, fixed bool) *Context {
	d, _ := c.prepare(w)
	d.Meta = Meta{TS: w.At, Replica: w.Replica}
	if ttl > 0 {
		d.Meta.TTL = ttl
		d.Meta.Expires = w.At.Add(ttl)
		d.Meta.Fixed = fixed
	}
	return d
}

// Clear deletes everything in the context written before w.At, on every replica, and
// removes its TTL.
func (c *Context) Clear(w Write) *Context {
	return &Context{Cleared: w.At, Meta: Meta{TS: w.At, Replica: w.Replica}}
}

// ---------------------------------------------------------------------------------------
// Compaction

// Compact reclaims space at instant now without changing what any replica reads, except
// that a delta delayed by more than grace after an expiry or a delete may be ignored:
// expired map entries become tombstones, expired set additions are dropped (their dots stay
// in the causal context), and once grace has passed, tombstones, expired counters and an
// expired context's data are dropped. It reports whether anything changed.
func (c *Context) Compact(now Timestamp, grace time.Duration) bool {
	before := c.Size()
	changed := false
	horizon := Timestamp(0)
	if g := Timestamp(uint64(grace.Milliseconds()) << logicalBits); now > g {
		horizon = now - g
	}
	if c.Meta.Expires != 0 && c.Meta.Expires <= horizon && c.Cleared < c.Meta.Expires {
		c.Cleared = c.Meta.Expires
		changed = true
	}
	for k, ct := range c.Counters {
		_, exp, live := ct.generation(c.Cleared)
		if live && exp != 0 && exp <= horizon {
			ct.Floor = max(ct.Floor, exp)
			c.Counters[k] = ct
			changed = true
		} else if !live && ct.Floor != 0 && ct.Floor <= horizon {
			delete(c.Counters, k)
			changed = true
		}
	}
	for _, m := range c.Maps {
		for k, r := range m {
			switch {
			case r.Value != nil && r.Expires != 0 && now >= r.Expires:
				r.Value, r.Expires = nil, 0
				m[k] = r
				changed = true
			case r.Value == nil && r.TS <= horizon:
				delete(m, k)
				changed = true
			}
		}
	}
	for _, s := range c.Sets {
		for _, dots := range s {
			for d, b := range dots {
				if b.Expires != 0 && now >= b.Expires {
					delete(dots, d)
					changed = true
				}
			}
		}
	}
	forget := Timestamp(0)
	if horizon > now-horizon {
		forget = horizon - (now - horizon) // two grace periods back
	}
	if c.compactRetired(horizon, forget) {
		changed = true
	}
	c.normalize()
	return changed || c.Size() != before
}

// Size returns the number of entries the state holds, visible or not: counter slots, map
// registers (tombstones included) and set dots.
func (c *Context) Size() int {
	n := len(c.Pruned)
	for _, ct := range c.Counters {
		n += len(ct.Slots) + len(ct.Folds)
	}
	for _, m := range c.Maps {
		n += len(m)
	}
	for _, s := range c.Sets {
		for _, dots := range s {
			n += len(dots)
		}
	}
	return n
}

// Clone returns a deep copy.
func (c *Context) Clone() *Context {
	o := &Context{Meta: c.Meta, Cleared: c.Cleared, CC: c.CC.Clone(), Pruned: maps.Clone(c.Pruned), Forgotten: c.Forgotten}
	if c.Counters != nil {
		o.Counters = make(map[string]Counter, len(c.Counters))
		for k, ct := range c.Counters {
			o.Counters[k] = ct.clone()
		}
	}
	if c.Maps != nil {
		o.Maps = make(map[string]map[string]Register, len(c.Maps))
		for name, m := range c.Maps {
			om := make(map[string]Register, len(m))
			for k, r := range m {
				r.Value = bytes.Clone(r.Value)
				om[k] = r
			}
			o.Maps[name] = om
		}
	}
	if c.Sets != nil {
		o.Sets = make(map[string]map[string]Member, len(c.Sets))
		for name, s := range c.Sets {
			os := make(map[string]Member, len(s))
			for m, dots := range s {
				os[m] = maps.Clone(dots)
			}
			o.Sets[name] = os
		}
	}
	return o
}

// Project returns the part of c that the mutators read for the given counters and set
// members: Meta, Cleared, the causal context, those counters and those members' dots.
// Mutating the projection yields the same deltas as mutating c, at the cost of the touched
// entries instead of the whole context. It shares no memory with c.
func (c *Context) Project(counters []string, members map[string][]string) *Context {
	p := &Context{Meta: c.Meta, Cleared: c.Cleared, CC: c.CC.Clone()}
	for _, k := range counters {
		if ct, ok := c.Counters[k]; ok {
			if p.Counters == nil {
				p.Counters = make(map[string]Counter, len(counters))
			}
			p.Counters[k] = ct.clone()
		}
	}
	for set, ms := range members {
		for _, m := range ms {
			if dots, ok := c.Sets[set][m]; ok {
				if p.Sets == nil {
					p.Sets = make(map[string]map[string]Member)
				}
				if p.Sets[set] == nil {
					p.Sets[set] = make(map[string]Member)
				}
				p.Sets[set][m] = maps.Clone(dots)
			}
		}
	}
	return p
}

// Touched names what a delta changes.
type Touched struct {
	Counters []string            // counter keys
	Maps     map[string][]string // map name → keys
	Sets     []string            // set names, removals included
	Context  bool                // the TTL or a clear
}

// Touches returns what joining d into c would touch. Removals carry only dots, so the sets
// they touch are found in c: call it before joining d.
func (c *Context) Touches(d *Context) Touched {
	var t Touched
	t.Context = d.Meta.TS != 0 || d.Cleared > c.Cleared
	for k := range d.Counters {
		t.Counters = append(t.Counters, k)
	}
	slices.Sort(t.Counters)
	for name, m := range d.Maps {
		if t.Maps == nil {
			t.Maps = make(map[string][]string, len(d.Maps))
		}
		for k := range m {
			t.Maps[name] = append(t.Maps[name], k)
		}
		slices.Sort(t.Maps[name])
	}
	sets := map[string]bool{}
	for name := range d.Sets {
		sets[name] = true
	}
	if !d.CC.Empty() {
		for name, s := range c.Sets {
			if sets[name] {
				continue
			}
		members:
			for m, dots := range s {
				for dot := range dots {
					if _, kept := d.Sets[name][m][dot]; !kept && d.CC.Contains(dot) {
						sets[name] = true
						break members
					}
				}
			}
		}
	}
	for name := range sets {
		t.Sets = append(t.Sets, name)
	}
	slices.Sort(t.Sets)
	return t
}
