// Package relay replicates contexts between clusters through NATS JetStream (issue 15).
//
// Inside a cluster the sidecars gossip (package sync). Between clusters every sidecar
// with a relay block talks to NATS; no relay is elected:
//
//   - it publishes the deltas of its own local writes, joined per context over a short
//     window (Options.FlushInterval) and encoded with the CRDT binary encoding, to the
//     subject <prefix>.delta.<cluster> of one stream. A publish that fails is joined back
//     and tried again: nothing is dropped while the process lives;
//   - the sidecars of a cluster share one durable pull consumer named after the cluster.
//     JetStream hands each message to one of them; it merges the deltas of the other
//     clusters into its store, acknowledges only after the merge is durable, and its
//     gossip spreads them in its cluster (the merge is recorded as this replica's own
//     change, so the gossip engine pushes it at once). A sidecar killed before it
//     acknowledged leaves the message to be delivered again to another one after
//     Options.AckWait. Joins are idempotent and commutative, so at-least-once, unordered
//     delivery is enough;
//   - a KV bucket holds one full state per context. Every Options.StateInterval a sidecar
//     reads the entry of each context that changed here, and writes the join of it and
//     its own state if that adds anything, with the entry's revision as a compare-and-set
//     (a lost race reads again). Every sidecar watches the bucket and merges what others
//     write. That is how a new cluster, or one cut off for longer than the stream keeps
//     messages (Options.Retention), catches up, and how a delta whose writer was killed
//     before it was published still reaches the other clusters: its cluster's other
//     sidecars hold it through gossip and write it to the bucket.
//
// Store is the small part of the local store the relay uses, in ctxstore's types and with
// the method sets of package sync's State, Merger and Changes: *localstore.Store implements
// it as it is, and the relay imports no store. The relay is a replication backend like the
// gossip engine and passes the same contract tests, ctxstore/replicatest.RunBackend:
// TestRelay_ReplicationContract runs them against a real NATS server with JetStream, each
// store a cluster of its own; sync's TestSyncer_ReplicationContract runs them over gossip.
package relay
