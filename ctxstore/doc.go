// Package ctxstore holds what a store of contexts and the parts around it say to each
// other: committed changes (Event) and the Subscription that carries them, how durable a
// write must be before it returns (Durability), what a write leaves behind (Result), what
// a read shows (Summary, Snapshot), the errors every store reports in the same way, and a
// replication peer as a replication backend reports it (PeerStatus).
//
// It holds no behaviour beyond the rule for context names, and imports nothing of ours but
// the CRDT types, so that the admin API, flags and the replication backends (the gossip
// engine of package sync, the cross-cluster relay) depend on small interfaces they own,
// written in these types, and not on *localstore.Store: any store that speaks them can
// serve. localstore keeps its names for these types as aliases.
//
// The contract a store must keep towards a replication backend is tested, for every store
// and every backend, by package ctxstore/replicatest.
package ctxstore
