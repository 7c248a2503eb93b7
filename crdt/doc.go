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
// # Counter range
//
// A counter's value is an int64 and never wraps: IncrAll refuses an increment that would
// take it, or the replica's own slot, out of range, and a sum of merged increments past
// the range reads saturated at its bound (see RangeError).
package crdt
