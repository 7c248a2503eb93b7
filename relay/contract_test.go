package relay_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ctxstore/replicatest"
	"github.com/ctxprop/ctxprop/localstore/storetest"
	"github.com/ctxprop/ctxprop/relay"
)

// TestRelay_ReplicationContract: the relay, over a real NATS server with JetStream on a
// temp dir, keeps the contract of every replication backend, the same one the gossip
// engine keeps (sync's TestSyncer_ReplicationContract). Each joined store is a cluster of
// its own, as no gossip runs here: a relay leaves its own cluster's deltas to gossip, so
// two stores of one cluster would meet only through the KV bucket.
func TestRelay_ReplicationContract(t *testing.T) {
	open := func(t *testing.T) replicatest.Store { return storetest.Open(t, testLogger(t, "store")) }
	nats := func(t *testing.T) func(t *testing.T, s replicatest.Store) {
		url := startNATS(t, t.TempDir(), 0).ClientURL()
		var mu sync.Mutex
		clusters := 0
		return func(t *testing.T, s replicatest.Store) {
			mu.Lock()
			cluster := fmt.Sprintf("c%d", clusters)
			clusters++
			mu.Unlock()
			r, err := relay.New(relay.Options{Store: s, Logger: testLogger(t, cluster+".relay"), URLs: []string{url}, Cluster: cluster,
				StateInterval: 100 * time.Millisecond, AckWait: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Open(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := r.Close(ctx); err != nil {
					t.Errorf("close the relay of %s: %v", cluster, err)
				}
			})
		}
	}
	replicatest.RunBackend(t, open, nats)
}
