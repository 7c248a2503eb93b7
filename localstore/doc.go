// Package localstore keeps a sidecar's contexts in a local bbolt file.
//
// The whole working set lives in memory, each context in its binary encoding, the ones
// used lately also decoded as crdt.Context values in a bounded cache (cache.go: a small
// context takes about 40 bytes encoded and 900 decoded); the file is its durable copy.
// One committer goroutine does all disk writes, in two steps (as etcd keeps its bbolt
// backend behind a write-ahead log):
//
//   - A Durable write (the admin API, merges from peers) returns once its delta is in the
//     write-ahead log, store.path + "-wal": one record per group of writers, carrying the
//     deltas, the replica's sequence number and its hybrid logical clock, made durable by
//     one fdatasync of a preallocated file. Many writers share it (group commit).
//   - A Windowed write (on the request path: telemetry, ctx-ops) waits for nothing; the
//     log takes it within Options.CommitWindow, the deltas of each context in the window
//     joined into one entry.
//   - Within Options.CheckpointInterval of a context's first change, or when the log is
//     half full, a bbolt transaction writes every context changed since the last one, with
//     the sequence, the clock and the last log record it holds; the log then starts again
//     from its beginning. A large context busy with small writes is rewritten that often,
//     not once per write.
//
// Open replays the log records the bbolt file does not hold yet (joins are idempotent, so
// replaying one twice would be harmless too) and commits them before serving, so a crash
// right after an acknowledged write loses nothing. A torn last record was never
// acknowledged and ends the replay.
//
// If a commit or a log sync fails the store stops taking writes (ErrFailed) rather than
// answer for data that may not be on disk; reads go on. Restarting the sidecar reloads the
// file.
//
// Its events, subscriptions, durability levels, results, read models and errors are
// package ctxstore's (the names here are aliases), so that the admin API, flags and the
// replication backends depend on interfaces of their own rather than on this package; it
// passes the store contract of ctxstore/replicatest.
package localstore
