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

// Store is the replicated state the engine reads and merges into. *localstore.Store
// implements it. Its methods are called concurrently and may block on disk I/O.
type Store interface {
	// Replica returns this replica's id.
	Replica() crdt.ReplicaID
	// Names returns every context held, expired ones included.
	Names() []string
	// Encoded returns the canonical encoding of a context's state; ok false if absent.
	Encoded(name string) (data []byte, ok bool)
	// MergeAll joins deltas[i] into context names[i] durably, all or nothing, and reports
	// which deltas changed the state.
	MergeAll(ctx context.Context, origin crdt.ReplicaID, names []string, deltas []*crdt.Context) (changed []bool, err error)
}

// WatchStore is a Store whose committed changes can be followed: Syncer learns the local
// deltas to push from it.
type WatchStore interface {
	Store
	Watch(ctx context.Context, name string, after uint64) (ctxstore.Subscription, error)
	// LastEventID is the ID of the latest committed change; Close waits until the
	// changes up to it are pushed.
	LastEventID() uint64
}
