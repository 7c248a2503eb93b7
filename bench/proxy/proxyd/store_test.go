package main

import (
	"path/filepath"
	"testing"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/proxy"
)

// telemetryOps are the ops package proxy writes for one request under 5 ms that
// succeeded: the count, the latency sum and the five cumulative buckets.
func telemetryOps() []ops.Op {
	list := []ops.Op{
		{Kind: ops.Incr, Key: proxy.KeyRequests, By: 1},
		{Kind: ops.Incr, Key: proxy.KeyLatencySum, By: 740},
	}
	for _, k := range proxy.BucketKeys {
		list = append(list, ops.Op{Kind: ops.Incr, Key: k, By: 1})
	}
	return list
}

// BenchmarkTelemetryApply measures the "ctxprop+counter" variant's extra work in
// isolation: one request's telemetry applied to the real localstore with the
// request path's windowed durability (what cmd/sidecar does per request), against
// the no-op Store of the "ctxprop" variant.
func BenchmarkTelemetryApply(b *testing.B) {
	list := telemetryOps()
	b.Run("discard", func(b *testing.B) {
		var d discard
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Apply("bench", list); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("localstore", func(b *testing.B) {
		ls := localstore.New(localstore.Options{Path: filepath.Join(b.TempDir(), "bench.db")})
		if err := ls.Open(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			if err := ls.Close(); err != nil {
				b.Error(err)
			}
		}()
		s := windowed{ls}
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Apply("bench", list); err != nil {
				b.Fatal(err)
			}
		}
		if got, err := ls.Counter("bench", proxy.KeyRequests); err != nil || got != int64(b.N) {
			b.Errorf("%s = %d (%v), want %d", proxy.KeyRequests, got, err, b.N)
		}
	})
}
