package peersync

import (
	"testing"
	"time"
)

// TestSimulateChurn: pods replaced again and again leave the state of every context
// bounded by the live fleet when retirement is on, and growing with every pod that ever
// lived when it is off; in both, every counter reads every increment exactly once.
func TestSimulateChurn(t *testing.T) {
	opt := ChurnOptions{Nodes: 5, Generations: 16, Seed: 1, Every: time.Second, RetireAfter: 5 * time.Second,
		Grace: 5 * time.Second, SweepEvery: time.Second, Contexts: 4, Samples: 5}
	on := opt
	on.Retire = true
	with, err := SimulateChurn(on)
	if err != nil {
		t.Fatal(err)
	}
	without, err := SimulateChurn(opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []ChurnResult{with, without} {
		t.Logf("replaced %d, replica ids %d, retired %d, increments %d, wrong %d", r.Replaced, r.ReplicaIDs, r.Retired, r.Increments, r.Wrong)
		for _, s := range r.Samples {
			t.Logf("  %6s replaced %3d: %5.1f replicas/context (%.1f slots, %.1f folds, %.1f pruned), %6.0f B/context, %7.0f B/node",
				s.At, s.Replaced, s.Replicas, s.Slots, s.Folds, s.Pruned, s.BytesPerContext, s.BytesPerNode)
		}
		if r.Wrong != 0 {
			t.Errorf("%d counters read wrong after the run settled", r.Wrong)
		}
		if r.Replaced != opt.Nodes*(opt.Generations-1) {
			t.Errorf("replaced %d pods, want %d", r.Replaced, opt.Nodes*(opt.Generations-1))
		}
	}
	last := func(r ChurnResult) ChurnSample { return r.Samples[len(r.Samples)-1] }
	if got := last(with).Replicas; got > float64(opt.Nodes) {
		t.Errorf("with retirement a context holds state for %.1f replicas at the end, want at most the %d live ones", got, opt.Nodes)
	}
	if got := last(without).Replicas; got < float64(opt.Nodes*opt.Generations)/2 {
		t.Errorf("without retirement a context holds state for %.1f replicas at the end; the run should show growth", got)
	}
	if with.Retired == 0 {
		t.Error("no replica was retired")
	}
}
