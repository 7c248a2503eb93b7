package peersync

import (
	"fmt"
	"testing"
	"time"
)

// TestSimulate_Targets runs the simulator at a fixed seed (deterministic: not a timed test)
// and checks SPEC §7's targets at 200ms rounds and fan-out 3: an update visible on every
// node within p99 1s at N=10 and 2s at N=100, a healed partition converged within 5s, and
// replication traffic under 40 KB/s per node, with 1% of messages lost. The full table,
// N=1000 included, comes from `go run ./bench/sim`.
func TestSimulate_Targets(t *testing.T) {
	tests := []struct {
		nodes      int
		duration   time.Duration
		visibleMax time.Duration
	}{
		{10, 10 * time.Second, time.Second},
		{100, 5 * time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("N=%d", tt.nodes), func(t *testing.T) {
			opt := SimOptions{Nodes: tt.nodes, Seed: 1, Loss: 0.01, WritesPerSecond: 100, Duration: tt.duration}
			r, err := Simulate(opt)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("N=%d: %d updates, visible p50 %s p99 %s max %s, %.0f B/s per node (max %.0f)",
				r.Nodes, r.Updates, r.VisibleP50, r.VisibleP99, r.VisibleMax, r.BytesPerNodeSecond, r.MaxBytesPerNodeSecond)
			if r.NotVisible != 0 {
				t.Errorf("%d updates never reached every node", r.NotVisible)
			}
			if r.VisibleP99 > tt.visibleMax {
				t.Errorf("visible on every node p99 = %s, target %s", r.VisibleP99, tt.visibleMax)
			}
			if r.MaxBytesPerNodeSecond > 40_000 {
				t.Errorf("busiest node sends %.0f B/s, target 40 KB/s", r.MaxBytesPerNodeSecond)
			}
			if !r.Converged {
				t.Error("the fleet did not converge")
			}

			opt.PartitionAt, opt.PartitionFor, opt.Duration = 2*time.Second, 6*time.Second, 0
			h, err := Simulate(opt)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("N=%d: healed partition converged %s after the heal", h.Nodes, h.HealConverge)
			if !h.Converged || h.HealConverge > 5*time.Second {
				t.Errorf("healed partition: converged=%v after %s, target 5s", h.Converged, h.HealConverge)
			}
		})
	}
}
