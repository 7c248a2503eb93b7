package peersync

import (
	"context"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
)

// Source tells the sync layer where other sidecars may be. Peers returns host:port
// addresses of peer sync listeners (may include this node's own address; the caller
// filters it). It must be safe for concurrent use and must not block longer than ctx.
// Peers listed together with an error are joined too (a stale list, or the peers of the
// sources that did not fail); the error is logged.
type Source interface {
	Peers(ctx context.Context) ([]string, error)
}

// The engine and the syncer need of the store only the replication side of it, in small
// interfaces (ctxstore/replicatest tests the contract every store keeps towards them, and
// the same contract holds for the cross-cluster relay). *localstore.Store implements them
// all; cmd/sidecar wires it. Their methods are called concurrently and may block on disk
// I/O.

// State gives the state of the contexts, for digests and full-state catch-up.
type State interface {
	// Names returns every context held, expired ones included (their clears and
	// expiries must replicate too).
	Names() []string
	// Encoded returns the canonical encoding of a context's state (equal states give
	// equal bytes); ok false if absent.
	Encoded(name string) (data []byte, ok bool)
}

// Merger joins the deltas of other replicas into this one.
type Merger interface {
	// Replica returns this replica's id: the origin of its local changes.
	Replica() crdt.ReplicaID
	// MergeAll joins deltas[i] into context names[i] durably, all or nothing (an error
	// wrapping ctxstore.ErrInvalid for a bad name or delta), and reports which deltas
	// changed the state. A delta that changed nothing makes no change event.
	MergeAll(ctx context.Context, origin crdt.ReplicaID, names []string, deltas []*crdt.Context) (changed []bool, err error)
}

// Changes follows the store's committed changes: Syncer learns the local deltas to push
// from it.
type Changes interface {
	// Watch subscribes to committed changes, local and merged, of context name ("" for
	// all) after event ID after (0: only new ones), until ctx ends.
	Watch(ctx context.Context, name string, after uint64) (ctxstore.Subscription, error)
	// LastEventID is the ID of the latest committed change; Close waits until the
	// changes up to it are pushed.
	LastEventID() uint64
}

// Store is what the Engine needs: the state to compare and the merges.
type Store interface {
	State
	Merger
}

// WatchStore is what the Syncer needs: a Store whose committed changes it follows.
type WatchStore interface {
	Store
	Changes
}
