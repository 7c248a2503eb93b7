package localstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
)

// telemetryOps is what the proxy writes per request (see proxy/telemetry.go): the request
// count, the latency sum and the buckets it falls in.
var telemetryOps = []ops.Op{
	{Kind: ops.Incr, Key: "http.requests", By: 1},
	{Kind: ops.Incr, Key: "http.latency_us_sum", By: 850},
	{Kind: ops.Incr, Key: "http.latency_us_le_5000", By: 1},
	{Kind: ops.Incr, Key: "http.latency_us_le_25000", By: 1},
	{Kind: ops.Incr, Key: "http.latency_us_le_100000", By: 1},
	{Kind: ops.Incr, Key: "http.latency_us_le_500000", By: 1},
	{Kind: ops.Incr, Key: "http.latency_us_le_2500000", By: 1},
}

func benchStore(b *testing.B, opt Options) *Store {
	b.Helper()
	opt.Path = filepath.Join(b.TempDir(), "ctx.db")
	opt.Logger = hclog.NewNullLogger()
	s := New(opt)
	if err := s.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Errorf("close: %v", err)
		}
	})
	return s
}

// BenchmarkStore_Apply_Telemetry is the request path's write: one request's telemetry,
// Windowed, into a context that exists, with the limits of the shipped config.hcl.
func BenchmarkStore_Apply_Telemetry(b *testing.B) {
	s := benchStore(b, Options{Limits: Limits{MaxContexts: 100000, MaxValuesPerContext: 10000, MaxValueBytes: 65536, MaxSetMembers: 10000}})
	ctx := context.Background()
	if _, err := s.Apply(ctx, "checkout", telemetryOps, Windowed); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Apply(ctx, "checkout", telemetryOps, Windowed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStore_Apply_ManyContexts is an admin API's write pattern over a store larger
// than any cache of decoded contexts: one increment, Windowed to leave fsync out, to each
// of 100 000 one-counter contexts in turn.
func BenchmarkStore_Apply_ManyContexts(b *testing.B) {
	const n = 100000
	s := benchStore(b, Options{Limits: Limits{MaxContexts: n}})
	ctx := context.Background()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ctx-%d", i)
		if _, err := s.Apply(ctx, names[i], []ops.Op{{Kind: ops.Incr, Key: "hits", By: 1}}, Windowed); err != nil {
			b.Fatal(err)
		}
	}
	list := []ops.Op{{Kind: ops.Incr, Key: "hits", By: 1}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Apply(ctx, names[i%n], list, Windowed); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
