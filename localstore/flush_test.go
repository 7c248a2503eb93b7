package localstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ops"
)

// TestStore_Sync_LogsTheWindowNow: a Windowed write waits for its CommitWindow, an hour
// here; Sync makes it durable at once (one log record), and a Sync with nothing pending
// writes no record and returns.
func TestStore_Sync_LogsTheWindowNow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctx.db")
	s := New(Options{Path: path, CommitWindow: time.Hour, CheckpointInterval: time.Hour})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync with nothing pending: %v", err)
	}
	if got := s.Stats().LogSyncs; got != 0 {
		t.Errorf("LogSyncs = %d after a Sync with nothing pending, want 0", got)
	}
	for range 3 {
		if _, err := s.Apply(ctx, "w", []ops.Op{{Kind: ops.Incr, Key: "n", By: 2}}, Windowed); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().LogSyncs; got != 0 {
		t.Fatalf("LogSyncs = %d before Sync with a window of an hour, want 0", got)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got, want := s.Stats().LogSyncs, uint64(1); got != want {
		t.Errorf("LogSyncs = %d after Sync, want %d (the window's writes in one record)", got, want)
	}
	if got, want := s.Stats().Changes, uint64(3); got != want {
		t.Errorf("Changes = %d, want %d durable", got, want)
	}
	// In the write-ahead log, not yet in bbolt (CheckpointInterval is an hour).
	if got, want := s.wal.used() > 0, true; got != want {
		t.Errorf("write-ahead log used %v, want %v", got, want)
	}
}
