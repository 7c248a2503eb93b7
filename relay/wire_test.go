package relay

import (
	"bytes"
	"testing"

	"github.com/ctxprop/ctxprop/crdt"
)

// TestBatch_RoundTrip a batch decodes to the deltas encoded.
func TestBatch_RoundTrip(t *testing.T) {
	var groups []group
	for _, name := range []string{"a", "order-1", ""} {
		d := &crdt.Context{}
		data, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, group{name: name, delta: d, data: data})
	}
	got, err := decodeBatch(encodeBatch(groups))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(groups) {
		t.Fatalf("%d groups, want %d", len(got), len(groups))
	}
	for i := range got {
		if got[i].name != groups[i].name || !bytes.Equal(got[i].data, groups[i].data) {
			t.Errorf("group %d = %q %x, want %q %x", i, got[i].name, got[i].data, groups[i].name, groups[i].data)
		}
	}
}

// FuzzDecodeBatch a message from NATS is outside input: any bytes are refused or decode to
// groups whose encoding decodes to the same groups (lengths written as longer varints
// than needed decode too), never a panic.
func FuzzDecodeBatch(f *testing.F) {
	d := &crdt.Context{}
	data, _ := d.MarshalBinary()
	f.Add(encodeBatch([]group{{name: "ctx", delta: d, data: data}}))
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		groups, err := decodeBatch(b)
		if err != nil {
			return
		}
		again, err := decodeBatch(encodeBatch(groups))
		if err != nil {
			t.Fatalf("the encoding of %d decoded groups is refused: %v", len(groups), err)
		}
		if len(again) != len(groups) {
			t.Fatalf("%d groups, then %d", len(groups), len(again))
		}
		for i := range again {
			if again[i].name != groups[i].name || !bytes.Equal(again[i].data, groups[i].data) {
				t.Fatalf("group %d: %q %x, then %q %x", i, groups[i].name, groups[i].data, again[i].name, again[i].data)
			}
		}
	})
}
