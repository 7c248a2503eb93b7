// Package localstore keeps a sidecar's contexts in a local bbolt file.
//
// The whole working set lives in memory as crdt.Context values; the file is its durable
// copy. One committer goroutine writes every change (group commit): each bbolt transaction
// carries every context changed since the previous one, the replica's sequence number and
// its hybrid logical clock, so a mutation and its sequence number are on disk together.
//
// Two durabilities serve SPEC §3: a Durable write returns only after its transaction is
// fsync'd (the admin API), a Windowed write returns at once and is committed within
// Options.CommitWindow (writes made on the request path: telemetry, ctx-ops). Many writes
// share one fsync either way.
//
// If a commit fails the store stops taking writes (ErrFailed) rather than answer for data
// that may not be on disk; reads go on. Restarting the sidecar reloads the file.
package localstore
