// Package peersync replicates contexts between sidecars (SPEC §7, issue 4). Import it as
// peersync everywhere: the folder name shadows the standard library's sync.
//
// The dissemination logic lives in Engine and never touches a socket or a clock: it is
// driven by calls (Local, Round, PushPull, Handle) that carry the current instant, and it
// sends through a Transport. Syncer is the default implementation: it runs an Engine over
// hashicorp/memberlist, which also gives membership and failure detection (SWIM with
// Lifeguard) and, with a keyring, encryption and authentication of every packet. Simulate
// runs the same Engine over an in-memory network with a fake clock.
//
// The engine and the syncer reach the store only through the small interfaces of
// source.go (State, Merger, Changes), in ctxstore's types: the replication side of a store,
// whose contract ctxstore/replicatest tests. Syncer passes replicatest.RunBackend, the
// contract the cross-cluster relay passes too; cmd/sidecar wires *localstore.Store in.
//
// # Protocol
//
// Every local change is a delta. Deltas of one context made within one round (Options.
// Interval) are joined into one entry of a delta buffer. Each round the engine picks Fanout
// random live peers and sends each the buffer entries that peer has not acknowledged and
// did not itself send (delta-interval anti-entropy with per-peer acks, and no
// back-propagation: Enes et al., "Efficient Synchronization of State-based CRDTs"). A
// receiver merges the groups in one durable commit, acknowledges the interval, and puts
// only the groups that changed its state into its own buffer (removal of redundant
// state): an update spreads epidemically and stops where it is already known. An entry
// stays in the buffer for a few rounds, enough that every node sees it with high
// probability (about ln N + 5 sends per node).
//
// Anti-entropy repairs the rest: every PushPullInterval a node sends one random peer the
// root of its per-context digests; if the roots differ the peer answers with the digests of
// buckets of contexts (about 16 contexts per bucket, up to 4096 buckets), the node sends
// its per-context digests of the buckets that differ, and the two exchange the full state
// of only the contexts that differ. A comparison of many contexts of which few differ
// costs the buckets, not a digest per context. Every step is split into messages under
// the size limit. A new replica (or
// one that was away) holds nothing or old states, so that exchange is its full-state
// catch-up; it starts as soon as the node sees its first peer. A peer coming back alive
// (after a partition or a restart) triggers one at once. Full states are merged, never
// forwarded.
//
// # Sending
//
// Sends to one slow or unreachable peer never delay sends to others (SPEC §7, issue 11).
// A message over one UDP packet goes by a TCP stream, and a dial to a peer that is cut
// off but not yet declared dead waits out the dial timeout. Once open, the engine queues
// every message for its peer and each peer with something to send has its own sender
// goroutine (outbox): a round, an ack or a push-pull answer never waits on a send, and a
// hanging dial holds only that peer's queue. Queues are bounded per peer and in all;
// deltas for a peer that has one waiting are joined into it, and what still does not fit
// is dropped and counted: deltas are pushed again from the last acknowledged point,
// acks and push-pull steps are repeated by the protocol's own timeouts, and anti-entropy
// repairs the rest. The digests and states a push-pull sends wait as names, read from the
// store and split into messages when they are sent.
//
// Messages are versioned, size-checked and decoded in full before anything is merged; a
// malformed or oversized message is refused and counted. Bodies are deflated when that
// makes them smaller.
//
// # Peers
//
// Without a keyring anyone who reaches the sync port can announce members and send
// messages under any replica id (SPEC §4a, issue 10), so nothing a packet claims creates
// state without bound. The engine tracks at most MaxPeers peers and memberlist lists at
// most as many members (Syncer's AliveDelegate); a newcomer past the bound takes only a
// place whose loss costs nothing (a peer gone for a while, or a stranger: a sender
// membership does not name) and is otherwise refused, counted and logged. A peer is
// established once it answered, at its member address, a message this node sent it: a
// membership probe, an ack of a push, or the next step of a push-pull; one that is not
// within UnprovenTTL is forgotten. Per-peer metrics follow the tracked peers, and log
// lines about single packets are rate limited (throttle), the metrics keeping the counts.
package peersync
