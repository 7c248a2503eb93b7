package peersync

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ctxstore/replicatest"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/localstore/storetest"
)

// The sidecar wires the store to the syncer in cmd/sidecar; sync imports no store.
var (
	_ WatchStore = (*localstore.Store)(nil)
	_ Retirer    = (*localstore.Store)(nil)
	_ WatchStore = replicatest.Store(nil) // the contract's store is all a Syncer needs
)

// TestSyncer_ReplicationContract: the gossip engine, run by Syncers over real memberlist
// on loopback between real stores, keeps the contract of every replication backend (the
// relay runs the same one).
func TestSyncer_ReplicationContract(t *testing.T) {
	open := func(t *testing.T) replicatest.Store { return storetest.Open(t, testLogger(t, "store")) }
	gossip := func(t *testing.T) func(t *testing.T, s replicatest.Store) {
		var mu sync.Mutex
		var addrs []string // of the syncers joined so far: each new one joins them
		return func(t *testing.T, s replicatest.Store) {
			mu.Lock()
			name := fmt.Sprintf("node%d", len(addrs))
			peers := staticSource(append([]string(nil), addrs...))
			mu.Unlock()
			sy, err := New(Options{Store: s, Name: name, Address: "127.0.0.1:0", Source: peers,
				Interval: 50 * time.Millisecond, PushPullInterval: time.Second, DiscoverInterval: 200 * time.Millisecond,
				Logger: testLogger(t, name+".sync")})
			if err != nil {
				t.Fatal(err)
			}
			if err := sy.Open(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = sy.Close(ctx) // peers may be gone already: an unacknowledged flush is fine here
			})
			mu.Lock()
			addrs = append(addrs, sy.Addr())
			mu.Unlock()
		}
	}
	replicatest.RunBackend(t, open, gossip)
}
