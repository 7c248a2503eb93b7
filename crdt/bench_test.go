package crdt

import "testing"

// BenchmarkJoin_TelemetryDelta joins what the proxy writes per request (one delta of seven
// counter increments, see proxy) into a context other replicas also count in: the join
// every request-path write makes, and the one a replica makes per delta received.
func BenchmarkJoin_TelemetryDelta(b *testing.B) {
	state := &Context{}
	keys := []string{"http.requests", "http.2xx", "http.3xx", "http.4xx", "http.5xx", "http.bytes_in", "http.bytes_out"}
	for r := range ReplicaID(20) {
		for _, k := range keys {
			state.Join(state.Incr(Write{Replica: r + 1, At: Timestamp(1 << 16)}, k, 1, 0))
		}
	}
	incs := make([]Inc, len(keys))
	for i, k := range keys {
		incs[i] = Inc{Key: k, By: 1}
	}
	b.ReportAllocs()
	before, _ := state.Counter("http.requests", 0)
	n := 0
	for b.Loop() {
		d, err := state.IncrAll(Write{Replica: 1, At: Timestamp(2<<16 + n)}, incs)
		if err != nil {
			b.Fatal(err)
		}
		state.Join(d)
		n++
	}
	if got, _ := state.Counter("http.requests", 0); got != before+int64(n) {
		b.Fatalf("counter = %d after %d increments from %d", got, n, before)
	}
}

// BenchmarkIncr_OneCounter is the admin API's increment on a context of 16 one-writer
// counters (bench/store/incr.lua): the delta, its join into the state, and the read of
// the value the answer reports.
func BenchmarkIncr_OneCounter(b *testing.B) {
	state := &Context{}
	keys := make([]string, 16)
	for i := range keys {
		keys[i] = "k" + string(rune('a'+i))
		state.Join(state.Incr(Write{Replica: 1, At: Timestamp(1 << 16)}, keys[i], 1, 0))
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		k := keys[n%len(keys)]
		d, err := state.IncrAll(Write{Replica: 1, At: Timestamp(2<<16 + n)}, []Inc{{Key: k, By: 1}})
		if err != nil {
			b.Fatal(err)
		}
		if !state.Alive(0) {
			b.Fatal("not alive")
		}
		state.Join(d)
		if _, ok := state.Counter(k, 0); !ok {
			b.Fatal("no counter")
		}
		n++
	}
}
