package localstore

import (
	"testing"

	"github.com/ctxprop/ctxprop/ctxstore/replicatest"
)

// TestStore_ReplicationContract: the store keeps the contract every replication backend
// (the gossip engine, the relay) relies on, on a real bbolt file.
func TestStore_ReplicationContract(t *testing.T) {
	replicatest.RunStore(t, func(t *testing.T) replicatest.Store { return openStore(t, Options{}) })
}
