package main

import (
	"math"
	"path/filepath"
	"testing"
)

// TestGC_DefaultTarget: the real binary runs its collector at defaultGCPercent unless
// GOGC is set, and GOGC wins when it is (issue 14's RSS bound; README "Memory"). The
// runtime's own view of the target is on /metrics (go_gc_gogc_percent).
func TestGC_DefaultTarget(t *testing.T) {
	bin := buildSidecar(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		gogc string
		want float64
	}{
		{"", defaultGCPercent},
		{"80", 80},
		{"off", math.MaxUint64}, // the runtime metric's "no target"
	} {
		p := startSidecar(t, bin, map[string]string{"GOGC": tc.gogc, "CTXPROP_STORE_PATH": filepath.Join(dir, "gc"+tc.gogc+".db")})
		got, ok := metricValue(scrape(t, p), "go_gc_gogc_percent")
		if !ok || got != tc.want {
			t.Errorf("GOGC=%q: go_gc_gogc_percent = %v (found %v), want %v", tc.gogc, got, ok, tc.want)
		}
		p.kill(t)
	}
}
