// Package replicatest is the contract between a store of contexts and the replication
// backends that carry its changes to other replicas, as tests any implementation runs.
//
// A replication backend uses a store through its replication side only (Store): it
// subscribes to the store's committed changes and sends the local ones as deltas
// (Watch, Replica, LastEventID), applies the deltas of other replicas (MergeAll), and
// reads a context's whole state for digests and for catch-up (Names, Encoded). Joins are
// idempotent and commutative, so a backend may deliver a delta more than once and in any
// order.
//
//   - RunStore checks what every store must do for any backend: a local write is an event
//     of this replica carrying a delta; a merge is an event of the remote origin, once; a
//     merge that changes nothing is no event; states are encoded canonically, so that
//     replicas that received the same deltas in any order, or one full state, hold equal
//     bytes; bad input is refused whole. localstore runs it.
//   - RunBackend checks what every backend must do for any store: replicas joined by it
//     converge, on counters, sets and maps written concurrently everywhere, including a
//     replica that joins late and one that wrote before it joined. The gossip engine of
//     package sync runs it over real memberlist on loopback
//     (TestSyncer_ReplicationContract); the cross-cluster relay (NATS JetStream, SPEC §7a)
//     runs the same contract against a real NATS server, each store a cluster of its own
//     (TestRelay_ReplicationContract).
//
// Tests only: it imports package testing.
package replicatest
