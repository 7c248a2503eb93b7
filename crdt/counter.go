package crdt

import (
	"fmt"
	"math"
	"math/bits"
)

// Counter range (SPEC §4a: arithmetic fails loudly, never wraps).
//
// A counter's value is the sum of its replicas' slots, each P−N with P and N the uint64
// totals of one replica's increments and decrements. Two things could wrap, and neither
// may:
//
//   - A slot. Join keeps the larger P and N of a slot, so a total that wrapped would read
//     as smaller than before and be dropped by every join, with every later increment of
//     that replica in that generation: the increments would be acknowledged and lost.
//     IncrAll refuses an increment that would take P or N past math.MaxUint64 (Incr
//     clamps it there).
//   - The value. IncrAll refuses an increment that would take the value this replica
//     reads past the int64 range. Increments made on several replicas, each within range
//     where it was made, can still sum past it once merged: no replica can refuse what
//     it has not seen yet. The sum is taken in 128 bits and Counter reads it saturated
//     at math.MinInt64 or math.MaxInt64, never wrapped; RangeError.Saturated tells it
//     when the next increment is refused, and an increment that brings the sum back
//     towards the range is always taken, so a saturated counter can be repaired.

// RangeError reports an increment refused because it would take a counter out of range.
// Nothing of the write is applied.
type RangeError struct {
	Key string
	// Value is the counter's value before the increment, as the refusing replica reads
	// it; Saturated says it stands for a sum beyond that int64 bound.
	Value     int64
	Saturated bool
	By        int64
	// Slot says it was this replica's own total of increments (or of decrements) that
	// would wrap, not the value.
	Slot bool
}

func (e *RangeError) Error() string {
	if e.Slot {
		what := "increments"
		if e.By < 0 {
			what = "decrements"
		}
		return fmt.Sprintf("counter %q is %d; adding %d would overflow the total of this replica's %s to it, which is kept as a uint64; nothing was changed; this replica takes no more %s of the counter until it expires or its context is deleted",
			e.Key, e.Value, e.By, what, what)
	}
	sat := ""
	if e.Saturated {
		sat = " (saturated: increments merged from several replicas sum past the int64 range)"
	}
	return fmt.Sprintf("counter %q is %d%s; adding %d would take it past the int64 range [%d, %d]; nothing was changed",
		e.Key, e.Value, sat, e.By, int64(math.MinInt64), int64(math.MaxInt64))
}

// wide is a signed 128-bit integer in two's complement (hi, lo): the exact sum of any
// number of slots a state can hold, each within ±2^64.
type wide struct {
	hi int64
	lo uint64
}

func wideOf(v int64) wide { return wide{hi: v >> 63, lo: uint64(v)} }

// slotValue is P−N of a slot, exactly.
func slotValue(s Slot) wide {
	lo, borrow := bits.Sub64(s.P, s.N, 0)
	return wide{hi: -int64(borrow), lo: lo}
}

func (a wide) add(b wide) wide {
	lo, carry := bits.Add64(a.lo, b.lo, 0)
	return wide{hi: a.hi + b.hi + int64(carry), lo: lo}
}

func (a wide) sub(b wide) wide {
	lo, borrow := bits.Sub64(a.lo, b.lo, 0)
	return wide{hi: a.hi - b.hi - int64(borrow), lo: lo}
}

// int64 returns a, saturated at the int64 bounds, and whether it fits (was not saturated).
func (a wide) int64() (int64, bool) {
	switch {
	case a.hi == 0 && a.lo <= math.MaxInt64, a.hi == -1 && a.lo > math.MaxInt64:
		return int64(a.lo), true
	case a.hi < 0:
		return math.MinInt64, false
	default:
		return math.MaxInt64, false
	}
}

// incrView is what an increment by replica r at instant at sees of counter ct, given the
// context's Cleared: the slot of r it starts from (fresh when a new generation starts)
// and the sum of the other replicas' slots of that generation. It is generation() and the
// value's sum in one pass over the slots, which the request path makes per counter.
func (ct *Counter) incrView(r ReplicaID, cleared, at Timestamp) (mine Slot, others wide) {
	var (
		gen, exp Timestamp
		sum      wide
		own      Slot
		hasOwn   bool
	)
	for id, s := range ct.Slots {
		switch {
		case s.Gen > gen:
			gen, exp, sum = s.Gen, s.Expires, slotValue(s)
		case s.Gen == gen:
			exp = max(exp, s.Expires)
			sum = sum.add(slotValue(s))
		}
		if id == r {
			own, hasOwn = s, true
		}
	}
	switch floor := max(ct.Floor, cleared); {
	case len(ct.Slots) == 0 || gen < floor:
		// No live generation: the next one is named by the floor, and no slot is in it
		// (every slot's generation is below the floor).
		gen, exp, sum = floor, 0, wide{}
	case exp != 0 && at >= exp:
		// Expired: the next generation is named by the old one's expiry, which no slot
		// has reached yet (a slot that had would be the newest generation).
		gen, exp, sum = exp, 0, wide{}
	}
	if len(ct.Folds) > 0 {
		// Retired replicas' parts count through their folds (see Counter.value).
		sum = ct.value(gen)
	}
	if !hasOwn || own.Gen != gen {
		return Slot{Gen: gen, Expires: exp}, sum
	}
	return own, sum.sub(slotValue(own))
}

// addTo adds by to slot s. With check it refuses (ok false) what would take others+P−N
// out of the int64 range, unless by moves a sum already out of range back towards it,
// and then (slot true) what would wrap P or N; without, it clamps P or N at
// math.MaxUint64.
func addTo(s Slot, by int64, others wide, check bool) (_ Slot, ok, slot bool) {
	if check && by != 0 {
		after := others.add(slotValue(s)).add(wideOf(by))
		if _, fits := after.int64(); !fits && (after.hi < 0) == (by < 0) {
			return s, false, false
		}
	}
	var carry uint64
	if by >= 0 {
		s.P, carry = bits.Add64(s.P, uint64(by), 0)
		if carry != 0 {
			s.P = math.MaxUint64
		}
	} else {
		// -uint64(by) is |by|, math.MinInt64 included.
		s.N, carry = bits.Add64(s.N, -uint64(by), 0)
		if carry != 0 {
			s.N = math.MaxUint64
		}
	}
	if check && carry != 0 {
		return s, false, true
	}
	return s, true, false
}
