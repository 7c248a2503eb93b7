package crdt

import (
	"errors"
	"math"
	"math/big"
	"testing"

	"pgregory.net/rapid"
)

// TestIncrAll_Range walks the example (three increments of MaxInt64 answered
// …807, −2, −2, later ones acknowledged and lost) and its neighbours, each sequence on
// one replica.
func TestIncrAll_Range(t *testing.T) {
	type step struct {
		by      int64
		want    int64 // the value after the step
		refused bool
		slot    bool // refused because the replica's own total would wrap
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"up to MaxInt64", []step{
			{by: math.MaxInt64, want: math.MaxInt64},
			{by: math.MaxInt64, want: math.MaxInt64, refused: true},
			{by: 1, want: math.MaxInt64, refused: true},
			{by: -1, want: math.MaxInt64 - 1},
			{by: 1, want: math.MaxInt64},
			{by: -math.MaxInt64, want: 0},
			// Decrements now total 2^63; MaxInt64 more makes 2^64−1, the most a slot holds.
			{by: -math.MaxInt64, want: -math.MaxInt64},
			// The value would be MinInt64, in range, but the total of decrements would wrap.
			{by: -1, want: -math.MaxInt64, refused: true, slot: true},
			{by: 5, want: -math.MaxInt64 + 5},
		}},
		{"down to MinInt64", []step{
			{by: math.MinInt64, want: math.MinInt64},
			{by: -1, want: math.MinInt64, refused: true},
			{by: math.MinInt64, want: math.MinInt64, refused: true},
			{by: 5, want: math.MinInt64 + 5},
			{by: -5, want: math.MinInt64},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Context{}
			at := base
			for i, st := range tc.steps {
				at++
				d, err := c.IncrAll(Write{Replica: 1, At: at}, []Inc{{Key: "k", By: st.by}})
				var re *RangeError
				if st.refused != (err != nil) || (err != nil && !errors.As(err, &re)) {
					t.Fatalf("step %d: by %d: err = %v, want refused=%v with a *RangeError", i, st.by, err, st.refused)
				}
				if re != nil {
					if d != nil {
						t.Fatalf("step %d: a delta with the error %v", i, err)
					}
					if re.Key != "k" || re.By != st.by || re.Value != st.want || re.Slot != st.slot {
						t.Errorf("step %d: %+v: want key k, by %d, value %d, slot %v", i, re, st.by, st.want, st.slot)
					}
				} else if !c.Join(d) {
					t.Fatalf("step %d: by %d: the delta changed nothing: the increment would be lost", i, st.by)
				}
				if got, _ := c.Counter("k", at); got != st.want {
					t.Fatalf("step %d: by %d: value = %d, want %d", i, st.by, got, st.want)
				}
			}
		})
	}
}

// TestIncrAll_RangeIsAtomic: one increment out of range refuses all of them.
func TestIncrAll_RangeIsAtomic(t *testing.T) {
	c := &Context{}
	d, err := c.IncrAll(Write{Replica: 1, At: base}, []Inc{{Key: "a", By: 1}, {Key: "k", By: math.MaxInt64}, {Key: "k", By: 1}})
	var re *RangeError
	if !errors.As(err, &re) || d != nil || re.Key != "k" || re.Value != math.MaxInt64 || re.By != 1 {
		t.Fatalf("IncrAll = %v, %v; want no delta and a RangeError for k at MaxInt64 by 1", d, err)
	}
}

// TestIncrAll_MergedPastRange: increments made on two replicas, each in range, sum past
// it once merged. The merged value saturates instead of wrapping, further increments
// away from the range are refused as saturated, and increments back towards it are
// taken.
func TestIncrAll_MergedPastRange(t *testing.T) {
	a, b := &Context{}, &Context{}
	at := base
	incr := func(c *Context, r ReplicaID, by int64) error {
		at++
		d, err := c.IncrAll(Write{Replica: r, At: at}, []Inc{{Key: "k", By: by}})
		if err == nil {
			c.Join(d)
		}
		return err
	}
	if err := incr(a, 1, math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if err := incr(b, 2, math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	a.Join(b)
	if v, _ := a.Counter("k", at); v != math.MaxInt64 {
		t.Fatalf("merged 2×MaxInt64 reads %d, want %d (saturated)", v, int64(math.MaxInt64))
	}
	var re *RangeError
	if err := incr(a, 1, 1); !errors.As(err, &re) || !re.Saturated || re.Value != math.MaxInt64 {
		t.Fatalf("increment of a saturated counter: %v, want a RangeError marked saturated", err)
	}
	if err := incr(a, 1, -5); err != nil {
		t.Fatalf("a decrement towards the range: %v", err)
	}
	if err := incr(a, 1, math.MinInt64); err != nil {
		t.Fatalf("a decrement into the range: %v", err)
	}
	if v, _ := a.Counter("k", at); v != math.MaxInt64-6 {
		t.Fatalf("value %d, want %d", v, int64(math.MaxInt64-6))
	}
}

// TestCounter_NeverWraps is the property: replicas increment a counter by amounts drawn
// near the int64 bounds and merge each other's states in any order. Every read equals
// the exact sum of the increments the replica has seen, saturated at the int64 bounds;
// every increment IncrAll takes changes the state (none is lost); and it refuses exactly
// those that would wrap the replica's slot or take the value it reads past the range
// away from it.
func TestCounter_NeverWraps(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const n = 3
		type rep struct {
			state *Context
			seen  [n]int // how many of replica j's taken increments the state holds
		}
		var (
			rs    [n]rep
			taken [n][]int64 // each replica's taken increments, in order
			at    = base
		)
		for i := range rs {
			rs[i].state = &Context{}
		}
		amount := rapid.OneOf(
			rapid.SampledFrom([]int64{math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1, 1 << 62, -(1 << 62), 1, -1}),
			rapid.Int64(),
			rapid.Int64Range(-1000, 1000),
		).Filter(func(by int64) bool { return by != 0 }) // the store refuses 0 before
		// sum returns the exact value replica i reads, and the totals of its own slot.
		sum := func(i int) (v, p, m *big.Int) {
			v, p, m = new(big.Int), new(big.Int), new(big.Int)
			for j := range n {
				for _, by := range taken[j][:rs[i].seen[j]] {
					b := big.NewInt(by)
					v.Add(v, b)
					if j == i && by > 0 {
						p.Add(p, b)
					} else if j == i {
						m.Sub(m, b)
					}
				}
			}
			return v, p, m
		}
		minV, maxV := big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
		maxU := new(big.Int).SetUint64(math.MaxUint64)
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			i := rapid.IntRange(0, n-1).Draw(t, "replica")
			if rapid.IntRange(0, 3).Draw(t, "merge?") == 0 {
				j := rapid.IntRange(0, n-1).Draw(t, "from")
				rs[i].state.Join(rs[j].state)
				for k := range n {
					rs[i].seen[k] = max(rs[i].seen[k], rs[j].seen[k])
				}
			} else {
				by := amount.Draw(t, "by")
				at++
				before, p, m := sum(i)
				after := new(big.Int).Add(before, big.NewInt(by))
				mag := new(big.Int).Abs(big.NewInt(by))
				wraps := (by > 0 && new(big.Int).Add(p, mag).Cmp(maxU) > 0) || (by < 0 && new(big.Int).Add(m, mag).Cmp(maxU) > 0)
				outward := (by > 0 && after.Cmp(maxV) > 0) || (by < 0 && after.Cmp(minV) < 0)
				// A refusal names the value first, and the slot only when the value fits.
				wantSlot := wraps && !outward
				d, err := rs[i].state.IncrAll(Write{Replica: ReplicaID(i + 1), At: at}, []Inc{{Key: "k", By: by}})
				var re *RangeError
				switch {
				case err != nil && !errors.As(err, &re):
					t.Fatalf("by %d: %v is not a *RangeError", by, err)
				case err != nil && !wraps && !outward:
					t.Fatalf("by %d refused (%v) with the value at %s and the slot at +%s/-%s", by, err, before, p, m)
				case err != nil && re.Slot != wantSlot:
					t.Fatalf("by %d refused (%v): slot %v, want %v", by, err, re.Slot, wantSlot)
				case err == nil && (wraps || outward):
					t.Fatalf("by %d taken with the value at %s and the slot at +%s/-%s", by, before, p, m)
				case err == nil:
					if !rs[i].state.Join(d) {
						t.Fatalf("by %d taken but the delta changed nothing: lost", by)
					}
					taken[i] = append(taken[i], by)
					rs[i].seen[i] = len(taken[i])
				}
			}
			for k := range n {
				exact, _, _ := sum(k)
				want := exact
				if want.Cmp(maxV) > 0 {
					want = maxV
				} else if want.Cmp(minV) < 0 {
					want = minV
				}
				if got, _ := rs[k].state.Counter("k", at); got != want.Int64() {
					t.Fatalf("replica %d reads %d; the increments it holds sum to %s, so want %s", k, got, exact, want)
				}
			}
		}
	})
}

// TestMarker_Laws: a live context is never a marker (a store counts live contexts
// toward max_contexts without the scan Marker makes), and a delete after every write
// leaves one (its marker must not count).
func TestMarker_Laws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x, _, _ := drawStates(t)
		now := base + Timestamp(rapid.IntRange(0, 200<<logicalBits).Draw(t, "now"))
		if x.Alive(now) && x.Marker() {
			t.Fatalf("alive at %s and a marker: %s", now, dump(x))
		}
		// Histories stamp at most 40 steps of 3 ms after base.
		y := x.Clone()
		y.Join(y.Clear(Write{Replica: 9, At: base + 1000<<logicalBits}))
		if !y.Marker() {
			t.Fatalf("not a marker after a delete: %s", dump(y))
		}
	})
}
