package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestCodec_CounterDeltaSize(t *testing.T) {
	now := base + 12345<<logicalBits
	for _, tc := range []struct {
		name string
		ctx  *Context
		ttl  time.Duration
	}{
		{"plain", &Context{}, 0},
		{"with counter ttl", &Context{}, time.Hour},
		{"sliding context ttl", (&Context{}).tap(func(c *Context) { c.Join(c.SetTTL(Write{1, base}, time.Hour, false)) }), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.ctx.Incr(Write{Replica: 0xfedcba9876543210, At: now}, "http.requests", 1, tc.ttl)
			b, err := d.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if got, limit := len(b), 64; got > limit {
				t.Fatalf("counter delta encodes in %d bytes, want <= %d", got, limit)
			}
			t.Logf("%d bytes", len(b))
		})
	}
}

func (c *Context) tap(f func(*Context)) *Context { f(c); return c }

func TestCodec_Rejects(t *testing.T) {
	good, _ := (&Context{}).Put(Write{1, base}, "m", "k", []byte(`"v"`), 0).MarshalBinary()
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"future version", append([]byte{2}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(append([]byte{}, good...), 0)},
		{"not json", func() []byte {
			b := append([]byte{}, good...)
			b[len(b)-2] = '!'
			return b
		}()},
		{"huge count", []byte{1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Context
			err := c.UnmarshalBinary(tc.data)
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("UnmarshalBinary(%x) = %v; want ErrDecode", tc.data, err)
			}
		})
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	c := &Context{}
	w := Write{Replica: 3, At: base}
	for _, d := range []*Context{
		c.Incr(w, "k", 5, time.Minute),
		c.Put(w, "m", "k", []byte(`{"a":[1,2]}`), time.Second),
		c.Del(w, "m", "k"),
		c.Add(w, "s", "x", 0),
		c.Remove(w, "s", "x"),
		c.SetTTL(w, time.Hour, true),
		c.Clear(w),
	} {
		b, _ := d.MarshalBinary()
		f.Add(b)
		c.Join(d)
	}
	b, _ := c.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Context
		if err := c.UnmarshalBinary(data); err != nil {
			return
		}
		// Whatever decodes must re-encode to a state that decodes to the same state, and
		// must be joinable and readable without panicking.
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var d Context
		if err := d.UnmarshalBinary(b); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !Equal(&c, &d) {
			t.Fatal("re-encoding changed the state")
		}
		x := (&Context{}).Incr(w, "k", 1, 0)
		x.Join(&c)
		x.Alive(base)
		x.Compact(base, time.Second)
	})
}

// TestAppendBinary_Allocs: encoding a delta of local increments (the write-ahead log's
// record of a group of admin API writes) costs an allocation per sorted list of keys, not
// one per counter: a counter with one slot needs no sorted copy of its replicas.
func TestAppendBinary_Allocs(t *testing.T) {
	var c Context
	var incs []Inc
	for i := range 16 {
		incs = append(incs, Inc{Key: fmt.Sprintf("k%d", i), By: 1})
	}
	d, err := c.IncrAll(Write{Replica: 7, At: 1000}, incs)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	want, err := d.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if buf, err = d.AppendBinary(buf[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if !bytes.Equal(buf, want) {
		t.Fatalf("encodings differ")
	}
	if allocs > 2 {
		t.Errorf("AppendBinary of 16 one-slot counters: %.0f allocations, want at most 2 (the sorted counter keys and replicas)", allocs)
	}
}
