// Package crdt holds ctxprop's replicated data types: one delta-state CRDT per context
// (Almeida, Shoker, Baquero, "Delta State Replicated Data Types") made of PN-counters,
// maps of last-writer-wins registers ordered by a hybrid logical clock, and add-wins
// observed-remove sets with dots and a causal context (no tombstones, as in Riak's ORSWOT),
// with expiry instants that are part of the replicated state.
//
// A delta is a Context too: every mutator returns the smallest Context that, joined into the
// state, performs the mutation (m(X) = X ⊔ mδ(X)). Join is commutative, associative and
// idempotent, so deltas may be duplicated, reordered and grouped freely.
//
// Time never comes from the package itself: callers pass the current instant (a Timestamp
// from a Clock) so that reads and mutations are deterministic and testable.
//
// # Expiry and clearing
//
// Every replica hides the same things because every rule below is a function of the state
// and the reader's instant only:
//
//   - A context carries Meta (TTL and expiry instant, last-writer-wins) and Cleared, an
//     instant joined by max. Anything written before Cleared is hidden. Deleting a context
//     sets Cleared to the delete's timestamp; the first write after a context expired sets
//     Cleared to the expiry instant, so the data of the expired life never comes back.
//   - Map entries and set members carry their own expiry instant.
//   - A counter's increments live in generations. Each replica owns one slot per counter
//     (its increments and decrements in the current generation, and an expiry). The
//     counter's expiry is the latest expiry of the slots of its newest generation; after it
//     the counter reads as absent, and the next increment starts a new generation whose id
//     is that expiry instant. Replicas that restart a counter concurrently compute the same
//     id, so none of their increments are lost. An increment made by a replica whose clock
//     or state still puts it in the old generation is counted in that generation, which is
//     hidden: under clock skew an increment racing an expiry can be lost. Increments made
//     concurrently with a context delete (timestamped before it) are dropped with it.
//   - An expiry only moves later for a counter (slots join by max), while a map entry's
//     expiry is that of its latest write.
//
// # Retiring replicas
//
// Every replica that ever incremented a counter owns a slot in it, and every replica
// that ever added a set member has an entry in the causal context. Pods come and go, so
// without retirement a long-lived context grows by a slot per pod that ever lived. A
// replica gone for good (the sync layer decides: dead or left for sync.retire_after, with
// no delta from it since) is retired in three steps, in the spirit of Akka Distributed
// Data's removed-node pruning, adapted to delta-state counters:
//
//  1. Fold. A live replica L absorbs the gone replica R (Context.Absorb): in each counter
//     where R holds something, L adds what R holds (its P and its N) to L's own slot
//     and records a Fold {From: R, Into: L} with those amounts, in one delta that also
//     carries R's slot. That delta, and every later delta of L's slot while L holds a
//     fold, carries the whole counter, so no state ever holds L's grown slot without
//     knowing of the fold, and a late one is a consistent picture of R (see below).
//  2. Settle. The value of a counter is the sum of the slots of the replicas no fold
//     names, plus, for each folded replica, what it holds (its slot joined with every
//     fold of it: each fold is a copy of its slot at some moment) less every fold of it
//     not taken back. The amount folded sits in L's slot, so it is counted exactly once
//     whatever state a replica has seen: the folds and the slots join by max, and the
//     formula subtracts exactly what each Into slot added. Two replicas that fold R at
//     once are both counted right, and the one with the larger id takes its fold back
//     (Context.Settle: its slot gains the fold's P in N and its N in P, and the fold is
//     marked Undone), so that one fold stands. A late delta of R that brings more than
//     was folded is counted through R's slot until the standing folder, settling, folds
//     the rest too.
//  3. Prune. A grace period (store.tombstone_ttl) after the last change of R's folds (a
//     fold, a completion, a take-back: Fold.At), once in every counter
//     one fold stands and covers all that R holds, Compact drops R's slots and folds and
//     records R in Pruned, so that a delta of R still in flight is ignored rather than
//     counted again; the value is unchanged, since the standing fold's amount is in L's
//     slot. Pruned entries are forgotten after another grace period. L still sends
//     deltas naming R until it prunes R itself, which may be much later; one that
//     arrives after the record is forgotten is sent at least a grace period after the
//     last change of R's folds, so it shows them settled, and as it carries the whole
//     counter it adds nothing (a part of it would: a loser's undone fold alone reads as
//     R's amount with no standing fold to take it off). The causal context
//     forgets R too when no set member holds a dot of R.
//
// What stays: a member added by R keeps its dot (its birth) and with it R's entry in the
// causal context, until it is removed; a delta of R delayed by more than two grace
// periods may be counted again, as an older delta may bring back deleted data; and when
// a replica that folded R dies before it could settle (a losing fold not taken back, or
// a standing fold that a late delta of R outgrew), R is not pruned from that counter:
// the value stays exact and a few entries stay. Map entries name a replica only to break
// ties between writes, which costs nothing per replica.
//
// # Counter range
//
// A counter's value is an int64 and never wraps: IncrAll refuses an increment that would
// take it, or the replica's own slot, out of range, and a sum of merged increments past
// the range reads saturated at its bound (see RangeError).
package crdt
