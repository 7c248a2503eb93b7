package peersync

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

// startRetiringNode starts a node whose syncer retires replicas gone for retireAfter and
// whose store prunes their folds after grace.
func startRetiringNode(t *testing.T, name, addr string, peers []string, key []byte, retireAfter, grace time.Duration) *testNode {
	t.Helper()
	st := localstore.New(localstore.Options{
		Path: filepath.Join(t.TempDir(), "ctx.db"), Logger: testLogger(t, name+".store"),
		TombstoneTTL: grace, SweepInterval: 100 * time.Millisecond, CommitWindow: 10 * time.Millisecond,
	})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Store: st, Name: name, Address: addr, Source: staticSource(peers), Keyring: [][]byte{key},
		Interval: 50 * time.Millisecond, PushPullInterval: 500 * time.Millisecond, DiscoverInterval: 200 * time.Millisecond,
		Retirer: st, RetireAfter: retireAfter, Logger: testLogger(t, name+".sync")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	nd := &testNode{store: st, sync: s}
	t.Cleanup(func() { nd.stop(t) })
	return nd
}

func (nd *testNode) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = nd.sync.Close(ctx)
	if err := nd.store.Close(); err != nil {
		t.Error(err)
	}
}

// TestSyncer_RetiresGoneReplicas: pods come and go; each leaves a slot in the counters it
// touched. Once a replica has been gone for sync.retire_after, a live sidecar folds it,
// and once the grace period passes its slots are gone from every sidecar, while every
// counter still reads every increment exactly once.
func TestSyncer_RetiresGoneReplicas(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	const retireAfter, grace = 500 * time.Millisecond, 500 * time.Millisecond
	ctx := context.Background()
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)}
	a := startRetiringNode(t, "a", addrs[0], addrs, key, retireAfter, grace)
	b := startRetiringNode(t, "b", addrs[1], addrs, key, retireAfter, grace)
	var want int64
	var gone []crdt.ReplicaID
	// Three generations of a third pod, each a new replica: write, replicate, leave.
	for i, addr := range addrs[2:] {
		p := startRetiringNode(t, fmt.Sprintf("gen%d", i), addr, addrs, key, retireAfter, grace)
		for range 5 {
			if _, err := p.store.Apply(ctx, "telemetry", []ops.Op{{Kind: ops.Incr, Key: "requests", By: 3}}, localstore.Durable); err != nil {
				t.Fatal(err)
			}
			want += 3
		}
		waitFor(t, 10*time.Second, "the pod's increments on a and b", func() bool {
			va, _ := a.store.Counter("telemetry", "requests")
			vb, _ := b.store.Counter("telemetry", "requests")
			return va == want && vb == want
		})
		gone = append(gone, p.store.Replica())
		p.stop(t)
	}
	for _, nd := range []*testNode{a, b} {
		if _, err := nd.store.Apply(ctx, "telemetry", []ops.Op{{Kind: ops.Incr, Key: "requests", By: 1}}, localstore.Durable); err != nil {
			t.Fatal(err)
		}
		want++
	}
	waitFor(t, 30*time.Second, "the gone replicas to be retired and pruned on a and b", func() bool {
		for _, nd := range []*testNode{a, b} {
			holders := nd.store.CounterReplicas()
			for _, r := range gone {
				if holders[r] > 0 {
					return false
				}
			}
			if v, _ := nd.store.Counter("telemetry", "requests"); v != want {
				t.Fatalf("%s reads %d, want %d: an increment was lost or counted twice", nd.sync.opt.Name, v, want)
			}
		}
		return true
	})
	for _, nd := range []*testNode{a, b} {
		snap, err := nd.store.Get("telemetry")
		if err != nil {
			t.Fatal(err)
		}
		if snap.Replicas != 2 {
			t.Errorf("%s: the context holds state for %d replicas, want the 2 live ones", nd.sync.opt.Name, snap.Replicas)
		}
		if snap.Counters["requests"] != want {
			t.Errorf("%s: requests = %d, want %d", nd.sync.opt.Name, snap.Counters["requests"], want)
		}
	}
	if a.sync.retiring.retired.Load()+b.sync.retiring.retired.Load() == 0 {
		t.Error("no replica retired")
	}
}

// TestSyncer_RetiresNoLiveReplica: a replica alive in membership is never retired, however
// long it stays quiet.
func TestSyncer_RetiresNoLiveReplica(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	ctx := context.Background()
	addrs := []string{freeAddr(t), freeAddr(t)}
	a := startRetiringNode(t, "a", addrs[0], addrs, key, 200*time.Millisecond, time.Hour)
	b := startRetiringNode(t, "b", addrs[1], addrs, key, 200*time.Millisecond, time.Hour)
	if _, err := b.store.Apply(ctx, "c", []ops.Op{{Kind: ops.Incr, Key: "k", By: 1}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b's increment on a", func() bool {
		v, _ := a.store.Counter("c", "k")
		return v == 1
	})
	// An hour of quiet, far past retire_after: b is alive, so nothing may happen.
	a.sync.retireGone(ctx, time.Now().Add(time.Hour))
	if n := a.sync.retiring.retired.Load() + b.sync.retiring.retired.Load(); n != 0 {
		t.Fatalf("%d live replicas retired", n)
	}
	if holders := a.store.CounterReplicas(); holders[b.store.Replica()] != 1 {
		t.Errorf("b's slot on a: %v", holders)
	}
}
