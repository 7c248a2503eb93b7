package localstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/ops"
)

// TestStore_Counters reads a few counters of every context holding the marker, from a
// store whose cache holds one context, before and after a reopen (every context then out
// of the cache): the values are those Counter gives, 0 for a key the context lacks, and a
// context without the marker, or deleted, is left out.
func TestStore_Counters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctx.db")
	ctx := context.Background()
	keys := []string{"req", "err", "absent"}
	want := map[string][]int64{}
	s := New(Options{Path: path, Logger: testLogger(t), CacheContexts: 1})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		name := fmt.Sprintf("c%d", i)
		list := []ops.Op{incr("req", int64(i+1))}
		if i%2 == 0 {
			list = append(list, incr("err", int64(i+10)))
		}
		if _, err := s.Apply(ctx, name, list, Durable); err != nil {
			t.Fatal(err)
		}
		want[name] = []int64{int64(i + 1), 0, 0}
		if i%2 == 0 {
			want[name][1] = int64(i + 10)
		}
	}
	if _, err := s.Apply(ctx, "plain", []ops.Op{incr("visits", 3), put("m", "req", `"not a counter"`)}, Durable); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "c5"); err != nil {
		t.Fatal(err)
	}
	delete(want, "c5")
	check := func(when string, s *Store) {
		t.Helper()
		got := map[string][]int64{}
		for _, cc := range s.Counters("req", keys) {
			got[cc.Name] = cc.Values
			for i, k := range keys {
				if v, err := s.Counter(cc.Name, k); err != nil || v != cc.Values[i] {
					t.Errorf("%s: %s %s = %d, Counter gives %d (%v)", when, cc.Name, k, cc.Values[i], v, err)
				}
			}
		}
		if g, w := sortedString(got), sortedString(want); g != w {
			t.Errorf("%s: Counters = %s, want %s", when, g, w)
		}
		// CountersOf reads the contexts named only, leaving out the deleted one, one
		// without the marker and one never written.
		got = map[string][]int64{}
		for _, cc := range s.CountersOf([]string{"c0", "c3", "c5", "plain", "never"}, "req", keys) {
			got[cc.Name] = cc.Values
		}
		if g, w := sortedString(got), sortedString(map[string][]int64{"c0": want["c0"], "c3": want["c3"]}); g != w {
			t.Errorf("%s: CountersOf = %s, want %s", when, g, w)
		}
		if got := s.CountersOf(nil, "req", keys); len(got) != 0 {
			t.Errorf("%s: CountersOf(nil) = %v, want none", when, got)
		}
	}
	check("open", s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, Options{Path: path, CacheContexts: 1})
	check("reopened", s)
}

func sortedString(m map[string][]int64) string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	out := ""
	for _, name := range names {
		out += fmt.Sprintf("%s=%v ", name, m[name])
	}
	return out
}

// BenchmarkStore_Counters is the store's share of a /metrics scrape of the per-context
// telemetry: 10,000 contexts with the seven telemetry counters, out of the cache but for
// the default 1024, and as many without the marker.
func BenchmarkStore_Counters(b *testing.B) {
	s := New(Options{Path: filepath.Join(b.TempDir(), "ctx.db"), Logger: hclog.NewNullLogger()})
	if err := s.Open(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	keys := []string{"http.requests", "http.errors", "http.latency_us_sum", "http.latency_us_le_5000", "http.latency_us_le_25000", "http.latency_us_le_100000", "http.latency_us_le_500000"}
	for i := range 10_000 {
		list := make([]ops.Op, 0, len(keys))
		for _, k := range keys {
			list = append(list, incr(k, int64(i+1)))
		}
		if _, err := s.Apply(ctx, fmt.Sprintf("t%d", i), list, Windowed); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Apply(ctx, fmt.Sprintf("p%d", i), []ops.Op{incr("visits", 1)}, Windowed); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if got := len(s.Counters("http.requests", keys)); got != 10_000 {
			b.Fatalf("%d contexts, want 10000", got)
		}
	}
}
