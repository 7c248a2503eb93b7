package headers

import (
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestNewChild covers the participate mode's hop: a new parent-id in the parent's
// trace with its flags, or a new trace with the random flag and the sampled flag for
// the configured fraction.
func TestNewChild(t *testing.T) {
	tid, _ := trace.TraceIDFromHex(specTraceID)
	sid, _ := trace.SpanIDFromHex(specSpanID)
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled, trace.FlagsRandom, trace.FlagsSampled | trace.FlagsRandom} {
		parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true})
		child := NewChild(parent, 0)
		if !child.IsValid() || child.TraceID() != tid || child.SpanID() == sid || child.TraceFlags() != flags {
			t.Errorf("child of %v = %v; want trace %s, a new parent-id, flags %02x", parent, child, tid, byte(flags))
		}
	}

	seen := map[trace.SpanID]bool{}
	for range 1000 {
		c := NewChild(trace.SpanContext{}, 1)
		if !c.IsValid() {
			t.Fatalf("new trace %v is not valid", c)
		}
		if got, want := c.TraceFlags(), trace.FlagsSampled|trace.FlagsRandom; got != want {
			t.Fatalf("new trace at ratio 1 has flags %02x, want %02x", byte(got), byte(want))
		}
		if seen[c.SpanID()] {
			t.Fatalf("parent-id %s given twice", c.SpanID())
		}
		seen[c.SpanID()] = true
		if got, want := NewChild(trace.SpanContext{}, 0).TraceFlags(), trace.FlagsRandom; got != want {
			t.Fatalf("new trace at ratio 0 has flags %02x, want %02x", byte(got), byte(want))
		}
	}

	const n = 4000
	var on int
	for range n {
		if NewChild(trace.SpanContext{}, 0.25).IsSampled() {
			on++
		}
	}
	// 4000 draws at p = 0.25: the standard deviation is 27, so 800..1200 is 7 of them.
	if on < 800 || on > 1200 {
		t.Errorf("%d of %d new traces sampled at ratio 0.25", on, n)
	}
}

// TestSampled_Threshold pins the threshold on the random 56 bits: a trace is sampled
// at ratio p when those bits reach (1-p) of their range, whatever the other bytes.
func TestSampled_Threshold(t *testing.T) {
	id := func(hi byte, low7 uint64) trace.TraceID {
		var tid trace.TraceID
		tid[0], tid[8] = 0xff, hi
		for i := 15; i > 8; i-- {
			tid[i] = byte(low7)
			low7 >>= 8
		}
		return tid
	}
	const half = 1 << 55
	tests := []struct {
		tid   trace.TraceID
		ratio float64
		want  bool
	}{
		{id(0, half), 0.5, true},
		{id(0, half-1), 0.5, false},
		{id(0xff, half-1), 0.5, false}, // byte 8 is not of the random 7
		{id(0, 0), 1, true},
		{id(0, 1<<56-1), 0, false},
		{id(0, 1<<56-1), 0.001, true},
	}
	for _, tt := range tests {
		if got := sampled(tt.tid, tt.ratio); got != tt.want {
			t.Errorf("sampled(%s, %v) = %v, want %v", tt.tid, tt.ratio, got, tt.want)
		}
	}
}
