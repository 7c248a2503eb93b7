package localstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ops"
)

// crashCopy copies the store's bbolt file and write-ahead log as they are on disk now,
// as a crash would leave them, into a new directory, and returns the copy's store path.
// The caller makes sure no commit to bbolt runs meanwhile (a long CheckpointInterval).
func crashCopy(t *testing.T, s *Store) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "ctx.db")
	for _, p := range [][2]string{{s.opt.Path, dst}, {walPath(s.opt.Path), walPath(dst)}} {
		in, err := os.Open(p[0])
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(p[1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestWAL_AcknowledgedWritesSurviveACrashBeforeTheCommit(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Hour})
	if _, err := s.Apply(context.Background(), "wf", []ops.Op{incr("n", 1)}, Windowed); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "wf", incr("n", 2), put("steps", "pay", `"done"`), add("s", "a"))
	apply(t, s, "wf", rem("s", "a"), add("s", "b"))
	apply(t, s, "other", incr("x", 7))
	if err := s.Delete(context.Background(), "other"); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Commits != 0 || st.LogSyncs == 0 {
		t.Fatalf("stats %+v: want the writes in the log only", st)
	}
	seq, last := s.Stats().Seq, s.clock.Last()

	path := crashCopy(t, s)
	r := openStore(t, Options{Path: path})
	if got, want := r.Replica(), s.Replica(); got != want {
		t.Errorf("replica %v, want %v", got, want)
	}
	if got := r.Stats().Seq; got != seq {
		t.Errorf("seq %d after replay, want %d", got, seq)
	}
	if got := r.clock.Read(); got <= last {
		t.Errorf("clock %v after replay, want after %v", got, last)
	}
	if v, _ := r.Counter("wf", "n"); v != 3 {
		t.Errorf("counter = %d, want 3 (the windowed write rode with the durable one)", v)
	}
	if v, err := r.MapGet("wf", "steps", "pay"); err != nil || string(v) != `"done"` {
		t.Errorf("map entry = %s, %v", v, err)
	}
	if got, _ := r.Set("wf", "s"); strings.Join(got, ",") != "b" {
		t.Errorf("set = %v, want [b]", got)
	}
	if v, _ := r.Counter("other", "x"); v != 0 {
		t.Errorf("deleted context came back: counter = %d", v)
	}
	// Replay committed what it read and started the log afresh.
	if st := r.Stats(); st.Commits != 1 {
		t.Errorf("commits after open = %d, want 1", st.Commits)
	}
	if r.wal.used() != 0 {
		t.Errorf("log holds %d bytes after the replay's commit", r.wal.used())
	}
}

func TestWAL_TornLastRecordIsDropped(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Hour})
	apply(t, s, "c", incr("n", 1))
	firstEnd := s.wal.off
	apply(t, s, "c", incr("n", 10))
	path := crashCopy(t, s)

	// A crash in the middle of the second record's write: its tail never reached disk.
	f, err := os.OpenFile(walPath(path), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef}, s.wal.off-4); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := openStore(t, Options{Path: path})
	if v, _ := r.Counter("c", "n"); v != 1 {
		t.Errorf("counter = %d, want 1 (the first record only)", v)
	}
	if firstEnd <= walHeaderSize {
		t.Fatalf("first record ends at %d", firstEnd)
	}
}

// A small log wraps many times: records left from before each commit must never be
// replayed as new, and a group too big for the log goes straight to bbolt.
func TestWAL_WrapsAndFallsBackToCommit(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Hour, LogSize: 4096})
	const writes = 300
	for i := range writes {
		apply(t, s, "c", incr(fmt.Sprintf("k%d", i%7), 1))
	}
	big := `"` + strings.Repeat("x", 3000) + `"`
	apply(t, s, "c", put("m", "big", big))
	apply(t, s, "c", incr("after", 1))
	st := s.Stats()
	if st.Commits < 5 {
		t.Errorf("%d commits: the half-full log should have forced many", st.Commits)
	}
	t.Logf("%d writes: %d log syncs, %d commits", writes+2, st.LogSyncs, st.Commits)

	r := openStore(t, Options{Path: crashCopy(t, s), LogSize: 4096})
	total := int64(0)
	for k := range 7 {
		v, _ := r.Counter("c", fmt.Sprintf("k%d", k))
		total += v
	}
	if total != writes {
		t.Errorf("counters sum to %d, want %d", total, writes)
	}
	if v, err := r.MapGet("c", "m", "big"); err != nil || string(v) != big {
		t.Errorf("big value: %d bytes, %v", len(v), err)
	}
	if v, _ := r.Counter("c", "after"); v != 1 {
		t.Errorf("counter after = %d, want 1", v)
	}
}

// A log left by another bbolt file (the database was deleted and the sidecar restarted)
// must not pour that file's writes into the new one.
func TestWAL_ForeignLogIsIgnored(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Hour})
	apply(t, s, "c", incr("n", 5))
	path := crashCopy(t, s)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r := openStore(t, Options{Path: path})
	if r.Replica() == s.Replica() {
		t.Fatal("same replica id for a new file")
	}
	if v, _ := r.Counter("c", "n"); v != 0 {
		t.Errorf("a write of the deleted file's log came back: counter = %d", v)
	}
}

// A record whose CRC is good but which does not decode is not a torn write: the open
// fails, naming the log, instead of silently dropping acknowledged writes.
func TestWAL_UndecodableRecordFailsOpen(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Hour})
	apply(t, s, "c", incr("n", 5))
	path := crashCopy(t, s)

	w, fresh, err := openWAL(walPath(path), walSize, s.Replica())
	if err != nil || fresh {
		t.Fatalf("open copy's log: fresh %v, %v", fresh, err)
	}
	if _, _, _, err := w.replay(0, func(walEntry) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// Append a record with a valid frame and CRC but an entry that is not a delta.
	bad := &crdt.Context{}
	if err := w.append(99, 0, []walEntry{{name: "c", delta: bad}}); err != nil {
		t.Fatal(err)
	}
	w.close()
	corruptRecordPayload(t, walPath(path), s.wal.off, w.off)

	r := New(Options{Path: path, Logger: testLogger(t)})
	err = r.Open()
	if err == nil {
		r.Close()
		t.Fatal("open succeeded over an undecodable record")
	}
	if !strings.Contains(err.Error(), "-wal") || !strings.Contains(err.Error(), "move the file aside") {
		t.Errorf("error %q should name the log and say what to do", err)
	}
}

// corruptRecordPayload rewrites the payload of the record at [start, end) of the log
// with bytes that are not a valid payload, and fixes its CRC so that only decoding
// can tell.
func corruptRecordPayload(t *testing.T, path string, start, end int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := make([]byte, end-start)
	if _, err := f.ReadAt(rec, start); err != nil {
		t.Fatal(err)
	}
	payload := rec[walRecordHead:]
	for i := range payload {
		payload[i] = 0xff // overlong varints
	}
	binary.BigEndian.PutUint32(rec[4:8], crcOf(rec[8:]))
	if _, err := f.WriteAt(rec, start); err != nil {
		t.Fatal(err)
	}
}

// FuzzWALReplay: whatever bytes the log holds, replay neither panics nor applies a
// record that does not check out.
func FuzzWALReplay(f *testing.F) {
	dir := f.TempDir()
	w, _, err := openWAL(filepath.Join(dir, "seed-wal"), 4096, 1)
	if err != nil {
		f.Fatal(err)
	}
	d := &crdt.Context{}
	d.Join(d.Incr(crdt.Write{Replica: 1, At: 5 << 16}, "n", 3, 0))
	if err := w.append(1, 5<<16, []walEntry{{name: "c", delta: d}}); err != nil {
		f.Fatal(err)
	}
	seed := make([]byte, w.off)
	if _, err := w.f.ReadAt(seed, 0); err != nil {
		f.Fatal(err)
	}
	w.close()
	f.Add(seed[walHeaderSize:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(t.TempDir(), "x-wal")
		w, _, err := openWAL(path, 4096, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer w.close()
		if len(body) > 4096-walHeaderSize {
			body = body[:4096-walHeaderSize]
		}
		if _, err := w.f.WriteAt(body, walHeaderSize); err != nil {
			t.Fatal(err)
		}
		_, _, _, _ = w.replay(0, func(e walEntry) error {
			if e.delta == nil {
				t.Fatal("nil delta")
			}
			return nil
		})
	})
}

// A log of another size (the store was opened with another LogSize before the crash) is
// replayed before it is resized.
func TestWAL_OtherSizeIsReplayedThenResized(t *testing.T) {
	s := openStore(t, Options{CheckpointInterval: time.Hour, LogSize: 8192})
	apply(t, s, "c", incr("n", 4))
	path := crashCopy(t, s)
	r := openStore(t, Options{Path: path, CheckpointInterval: time.Hour})
	if v, _ := r.Counter("c", "n"); v != 4 {
		t.Errorf("counter = %d, want 4 from the smaller log", v)
	}
	fi, err := os.Stat(walPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Size(), int64(walSize); got != want {
		t.Errorf("log size %d after open, want %d", got, want)
	}
	apply(t, r, "c", incr("n", 1))
	r2 := openStore(t, Options{Path: crashCopy(t, r)})
	if v, _ := r2.Counter("c", "n"); v != 5 {
		t.Errorf("counter = %d after a crash on the resized log, want 5", v)
	}
}
