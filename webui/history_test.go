package webui

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/proxy"
)

// openStore opens a real store in a temporary directory.
func openStore(t *testing.T) *localstore.Store {
	t.Helper()
	s := localstore.New(localstore.Options{
		Path:   filepath.Join(t.TempDir(), "ctxprop.db"),
		Logger: hclog.New(&hclog.LoggerOptions{Name: "store", Output: t.Output(), Level: hclog.Warn}),
	})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	return s
}

// record writes the telemetry of requests of one context as the inbound proxy does
// (proxy/telemetry.go): a request, an error for a failure, its latency in µs and the
// cumulative buckets it falls in.
func record(t *testing.T, s *localstore.Store, name string, latencies []time.Duration, failed int) {
	t.Helper()
	var list []ops.Op
	for i, d := range latencies {
		list = append(list, ops.Op{Kind: ops.Incr, Key: proxy.KeyRequests, By: 1},
			ops.Op{Kind: ops.Incr, Key: proxy.KeyLatencySum, By: d.Microseconds()})
		if i < failed {
			list = append(list, ops.Op{Kind: ops.Incr, Key: proxy.KeyErrors, By: 1})
		}
		for b, le := range proxy.LatencyBuckets {
			if d <= le {
				list = append(list, ops.Op{Kind: ops.Incr, Key: proxy.BucketKeys[b], By: 1})
			}
		}
	}
	if _, err := s.Apply(context.Background(), name, list, localstore.Durable); err != nil {
		t.Fatal(err)
	}
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// times returns n latencies of d.
func times(n int, d time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func newHistory(t *testing.T, opt HistoryOptions) *History {
	t.Helper()
	h, err := NewHistory(opt)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func findContext(a HistoryAnswer, name string) *ContextHistory {
	for i := range a.Contexts {
		if a.Contexts[i].Name == name {
			return &a.Contexts[i]
		}
	}
	return nil
}

// TestHistory_Sample: a sample holds what each context gained since the last read, the
// first read being only the baseline; the latency buckets come back as each bucket's own
// count and the sum in seconds; a context written for the first time counts whole; a
// context deleted and written again counts its new value, as rate() reads a reset.
func TestHistory_Sample(t *testing.T) {
	s := openStore(t)
	record(t, s, "old", times(4, ms(1)), 0) // before the baseline: never charted
	if _, err := s.Apply(context.Background(), "bystander", []ops.Op{{Kind: ops.Incr, Key: "visits", By: 3}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	h := newHistory(t, HistoryOptions{Store: s, Interval: 5 * time.Second, Max: 50})
	t0 := time.Unix(1_800_000_000, 0)
	h.sample(t0)
	if got := h.Answer(); len(got.Times) != 0 || len(got.Contexts) != 0 {
		t.Fatalf("after the baseline: %+v, want no sample", got)
	}

	record(t, s, "old", []time.Duration{ms(3), ms(20), ms(80), ms(300), ms(1000), ms(4000)}, 2)
	record(t, s, "new", times(3, ms(2)), 1)
	h.sample(t0.Add(5 * time.Second))
	if err := s.Delete(context.Background(), "new"); err != nil {
		t.Fatal(err)
	}
	record(t, s, "new", times(2, ms(2)), 0)
	h.sample(t0.Add(10*time.Second + 500*time.Millisecond))

	a := h.Answer()
	if got, want := a.Times, []int64{t0.Add(5 * time.Second).UnixMilli(), t0.Add(10500 * time.Millisecond).UnixMilli()}; !slices.Equal(got, want) {
		t.Errorf("times = %v, want %v", got, want)
	}
	if got, want := a.Seconds, []float64{5, 5.5}; !slices.Equal(got, want) {
		t.Errorf("seconds = %v, want %v", got, want)
	}
	if got, want := a.LatencyBounds, []float64{0.005, 0.025, 0.1, 0.5, 2.5}; !slices.Equal(got, want) {
		t.Errorf("latency bounds = %v, want %v", got, want)
	}
	var names []string
	for _, c := range a.Contexts {
		names = append(names, c.Name)
	}
	if got, want := names, []string{"old", "new"}; !slices.Equal(got, want) {
		t.Fatalf("contexts = %v, want %v (a context without telemetry never shows)", got, want)
	}
	old, nw := a.Contexts[0], a.Contexts[1]
	tests := []struct {
		what      string
		got, want []int64
	}{
		{"old requests", deref(old.Requests), []int64{6, 0}},
		{"old errors", deref(old.Errors), []int64{2, 0}},
		{"old latency buckets", old.Latency, []int64{1, 1, 1, 1, 1, 1}},
		{"new requests (then deleted and written again)", deref(nw.Requests), []int64{3, 2}},
		{"new errors", deref(nw.Errors), []int64{1, 0}},
		{"new latency buckets", nw.Latency, []int64{5, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.what, tt.got, tt.want)
		}
	}
	if got, want := old.LatencySumSeconds, 5.403; math.Abs(got-want) > 1e-9 {
		t.Errorf("old latency sum = %v s, want %v", got, want)
	}
	if got, want := nw.LatencySumSeconds, 0.010; math.Abs(got-want) > 1e-9 {
		t.Errorf("new latency sum = %v s, want %v", got, want)
	}
}

func deref(v []*int64) []int64 {
	out := make([]int64, len(v))
	for i, p := range v {
		if p == nil {
			out[i] = -1
			continue
		}
		out[i] = *p
	}
	return out
}

// TestHistory_Ring: the ring keeps the last Window/Interval samples, oldest first.
func TestHistory_Ring(t *testing.T) {
	s := openStore(t)
	h := newHistory(t, HistoryOptions{Store: s, Interval: time.Second, Window: 3 * time.Second, Max: 5})
	t0 := time.Unix(1_800_000_000, 0)
	h.sample(t0)
	for i := 1; i <= 5; i++ {
		record(t, s, "c", times(i, ms(1)), 0)
		h.sample(t0.Add(time.Duration(i) * time.Second))
	}
	a := h.Answer()
	if got, want := a.Window, 3.0; got != want {
		t.Errorf("window = %v s, want %v", got, want)
	}
	want := []int64{t0.Add(3 * time.Second).UnixMilli(), t0.Add(4 * time.Second).UnixMilli(), t0.Add(5 * time.Second).UnixMilli()}
	if got := a.Times; !slices.Equal(got, want) {
		t.Errorf("times = %v, want the last three %v", got, want)
	}
	if got, want := deref(findContext(a, "c").Requests), []int64{3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
}

// TestHistory_Bound: a sample charts at most Max contexts, allowed ones first, then by
// requests since they exist, the others summed under "_other" with their number; a
// context named "_other" is always folded. A context that enters the top later charts
// what it gained, not its whole count; before, its traffic was in "_other" (null in its
// own series).
func TestHistory_Bound(t *testing.T) {
	s := openStore(t)
	record(t, s, "busy", times(100, ms(1)), 0)
	record(t, s, "mid", times(50, ms(1)), 0)
	record(t, s, "quiet", times(1, ms(1)), 0)
	record(t, s, "small", times(10, ms(1)), 0)
	record(t, s, proxy.OtherContext, times(500, ms(1)), 0)
	h := newHistory(t, HistoryOptions{Store: s, Interval: time.Second, Max: 2, Allow: []string{"quiet"}})
	t0 := time.Unix(1_800_000_000, 0)
	h.sample(t0)
	record(t, s, "busy", times(7, ms(1)), 0)
	record(t, s, "mid", times(5, ms(1)), 0)
	record(t, s, "quiet", times(1, ms(1)), 0)
	record(t, s, "small", times(3, ms(1)), 0)
	record(t, s, proxy.OtherContext, times(2, ms(1)), 0)
	h.sample(t0.Add(time.Second))
	// small overtakes busy: from now on it is charted, and mid is folded.
	record(t, s, "small", times(200, ms(1)), 0)
	h.sample(t0.Add(2 * time.Second))

	a := h.Answer()
	var names []string
	for _, c := range a.Contexts {
		names = append(names, c.Name)
	}
	if got, want := names, []string{"quiet", "small", "busy", "_other"}; !slices.Equal(got, want) {
		t.Fatalf("contexts = %v, want %v", got, want)
	}
	tests := []struct {
		name string
		want []int64 // -1: null, folded into _other at that sample
	}{
		{"quiet", []int64{1, 0}},
		{"busy", []int64{7, -1}},
		{"small", []int64{-1, 200}},
		{"_other", []int64{5 + 3 + 2, 0}},
	}
	for _, tt := range tests {
		if got := deref(findContext(a, tt.name).Requests); !slices.Equal(got, tt.want) {
			t.Errorf("requests of %s = %v, want %v", tt.name, got, tt.want)
		}
	}
	if got, want := a.Folded, 3; got != want {
		t.Errorf("folded contexts = %d, want %d (busy, mid and the context named _other)", got, want)
	}
	if got, want := a.Max, 2; got != want {
		t.Errorf("max_series = %d, want %d", got, want)
	}
}

// TestHistory_Off: Max 0 charts every context's traffic under "_other" and no peer.
func TestHistory_Off(t *testing.T) {
	s := openStore(t)
	peers := staticPeers{{Address: "10.0.0.1:7403", State: "alive", Lag: time.Second}}
	h := newHistory(t, HistoryOptions{Store: s, Peers: peers, Interval: time.Second})
	t0 := time.Unix(1_800_000_000, 0)
	h.sample(t0)
	record(t, s, "a", times(2, ms(1)), 0)
	record(t, s, "b", times(3, ms(1)), 0)
	h.sample(t0.Add(time.Second))
	a := h.Answer()
	if len(a.Contexts) != 1 || a.Contexts[0].Name != proxy.OtherContext {
		t.Fatalf("contexts = %+v, want only _other", a.Contexts)
	}
	if got, want := deref(a.Contexts[0].Requests), []int64{5}; !slices.Equal(got, want) {
		t.Errorf("_other requests = %v, want %v", got, want)
	}
	if len(a.Peers) != 0 || a.Unshown != 1 {
		t.Errorf("peers = %+v, unshown %d; want none charted, 1 unshown", a.Peers, a.Unshown)
	}
}

type staticPeers []admin.PeerStatus

func (p staticPeers) Peers() []admin.PeerStatus { return slices.Clone(p) }

// TestHistory_Peers: each sample keeps the laggiest alive or suspect peers, at most Max;
// dead and departed peers are left out, the others past Max counted.
func TestHistory_Peers(t *testing.T) {
	s := openStore(t)
	peers := staticPeers{
		{Address: "10.0.0.1:7403", Name: "a", State: "alive", Lag: ms(10)},
		{Address: "10.0.0.2:7403", Name: "b", State: "suspect", Lag: ms(900)},
		{Address: "10.0.0.3:7403", Name: "c", State: "dead", Lag: time.Hour},
		{Address: "10.0.0.4:7403", Name: "d", State: "alive", Lag: ms(250)},
		{Address: "10.0.0.5:7403", Name: "e", State: "left", Lag: time.Hour},
	}
	h := newHistory(t, HistoryOptions{Store: s, Peers: peers, Interval: time.Second, Max: 2})
	t0 := time.Unix(1_800_000_000, 0)
	h.sample(t0)
	h.sample(t0.Add(time.Second))
	a := h.Answer()
	var got []string
	for _, p := range a.Peers {
		got = append(got, p.Address+" "+p.Name)
		if len(p.Lag) != 1 || p.Lag[0] == nil {
			t.Errorf("peer %s lag = %v, want one value", p.Address, p.Lag)
		}
	}
	if want := []string{"10.0.0.2:7403 b", "10.0.0.4:7403 d"}; !slices.Equal(got, want) {
		t.Errorf("peers = %v, want %v", got, want)
	}
	if got, want := *a.Peers[0].Lag[0], 0.9; got != want {
		t.Errorf("lag of b = %v s, want %v", got, want)
	}
	if got, want := a.Unshown, 1; got != want {
		t.Errorf("unshown peers = %d, want %d", got, want)
	}
}

func TestNewHistory_Refuses(t *testing.T) {
	s := openStore(t)
	tests := []struct {
		name string
		opt  HistoryOptions
		want string
	}{
		{"no store", HistoryOptions{}, "needs a Store"},
		{"negative max", HistoryOptions{Store: s, Max: -1}, "must not be negative"},
		{"one sample", HistoryOptions{Store: s, Interval: time.Minute, Window: time.Minute}, "keeps 1 samples; want 2 to 1440"},
		{"too many samples", HistoryOptions{Store: s, Interval: time.Second, Window: time.Hour}, "set admin.chart_window to between 2 and 1440 times admin.chart_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewHistory(tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewHistory: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestHistory_LegacyBuckets: a context whose buckets were written under the old names
// (milliseconds, by sidecars from before issue 16, e.g. during a rolling upgrade) charts
// the same latency as one written under the new names, and a context written under both
// adds them.
func TestHistory_LegacyBuckets(t *testing.T) {
	s := openStore(t)
	h := newHistory(t, HistoryOptions{Store: s, Interval: 5 * time.Second, Max: 50})
	t0 := time.Unix(1_800_000_000, 0)
	h.sample(t0)

	// An old sidecar's requests: 10 ms and 300 ms.
	var list []ops.Op
	for _, d := range []time.Duration{ms(10), ms(300)} {
		list = append(list, ops.Op{Kind: ops.Incr, Key: proxy.KeyRequests, By: 1},
			ops.Op{Kind: ops.Incr, Key: proxy.KeyLatencySum, By: d.Microseconds()})
		for b, le := range proxy.LatencyBuckets {
			if d <= le {
				list = append(list, ops.Op{Kind: ops.Incr, Key: proxy.LegacyBucketKeys[b], By: 1})
			}
		}
	}
	if _, err := s.Apply(context.Background(), "mixed", list, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	record(t, s, "mixed", []time.Duration{ms(1)}, 0) // a new sidecar's request
	h.sample(t0.Add(5 * time.Second))

	c := findContext(h.Answer(), "mixed")
	if c == nil {
		t.Fatal("context mixed not charted")
	}
	if got, want := c.Latency, []int64{1, 1, 0, 1, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("latency buckets = %v, want %v (old and new names added)", got, want)
	}
}
