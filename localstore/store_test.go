package localstore

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"
)

// fakeClock is a wall clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: tWriter{t}, Level: hclog.Debug})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// openStore opens a store on a file in a fresh temp dir and checks the file's integrity
// when the test ends.
func openStore(t *testing.T, opt Options) *Store {
	t.Helper()
	if opt.Path == "" {
		opt.Path = filepath.Join(t.TempDir(), "ctx.db")
	}
	if opt.Logger == nil {
		opt.Logger = testLogger(t)
	}
	s := New(opt)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		checkFile(t, opt.Path)
	})
	return s
}

func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen for check: %v", err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}

func apply(t *testing.T, s *Store, name string, list ...ops.Op) Result {
	t.Helper()
	res, err := s.Apply(context.Background(), name, list, Durable)
	if err != nil {
		t.Fatalf("apply %v: %v", list, err)
	}
	return res
}

func incr(key string, by int64) ops.Op { return ops.Op{Kind: ops.Incr, Key: key, By: by} }
func put(m, key, v string) ops.Op {
	return ops.Op{Kind: ops.Put, Map: m, Key: key, Value: json.RawMessage(v)}
}
func add(set, member string) ops.Op { return ops.Op{Kind: ops.Add, Set: set, Member: member} }
func rem(set, member string) ops.Op { return ops.Op{Kind: ops.Rem, Set: set, Member: member} }

func TestStore_ApplyAndRead(t *testing.T) {
	s := openStore(t, Options{})
	res := apply(t, s, "order-1", incr("items", 3), incr("items", -1), put("steps", "pay", `"done"`), add("regions", "eu"), add("regions", "us"), rem("regions", "us"))
	if got, want := res.Counters["items"], int64(2); got != want {
		t.Errorf("result counter = %d, want %d", got, want)
	}
	if got, want := res.Sets["regions"], []string{"eu"}; !slices.Equal(got, want) {
		t.Errorf("result set = %v, want %v", got, want)
	}
	snap, err := s.Get("order-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(snap)
	if got, want := string(b), `{"name":"order-1","expires_at":null,"counters":{"items":2},"maps":{"steps":{"pay":"done"}},"sets":{"regions":["eu"]},"replicas":1}`; got != want {
		t.Errorf("snapshot\n got %s\nwant %s", got, want)
	}
	apply(t, s, "order-1", ops.Op{Kind: ops.Del, Map: "steps", Key: "pay"})
	if _, err := s.MapGet("order-1", "steps", "pay"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted entry: err = %v, want ErrNotFound", err)
	}
	if v, _ := s.Counter("order-1", "never"); v != 0 {
		t.Errorf("unwritten counter = %d, want 0", v)
	}
	if _, err := s.Get("absent"); !errors.Is(err, ErrNotFound) {
		t.Errorf("absent context: err = %v, want ErrNotFound", err)
	}
	if err := s.Delete(context.Background(), "order-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("order-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted context: err = %v, want ErrNotFound", err)
	}
	if got := s.List(); len(got) != 0 {
		t.Errorf("list after delete = %v", got)
	}
}

func TestStore_Apply_Invalid(t *testing.T) {
	s := openStore(t, Options{})
	for _, tc := range []struct {
		name string
		ctx  string
		ops  []ops.Op
		want string
	}{
		{"bad context name", "a b", []ops.Op{incr("k", 1)}, "context name"},
		{"empty context name", "", []ops.Op{incr("k", 1)}, "context name"},
		{"bad op", "c", []ops.Op{{Kind: ops.Put, Map: "m", Key: "k", Value: json.RawMessage(`{`)}}, "op 1"},
		{"zero kind", "c", []ops.Op{{Key: "k"}}, "op 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Apply(context.Background(), tc.ctx, tc.ops, Durable)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
	if got := s.List(); len(got) != 0 {
		t.Errorf("invalid writes left contexts: %v", got)
	}
}

func TestStore_Reopen_KeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctx.db")
	s := New(Options{Path: path, Logger: testLogger(t)})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "wf", incr("n", 5), put("m", "k", `{"x":[1,2]}`), add("s", "a"))
	if _, err := s.Apply(context.Background(), "wf", []ops.Op{incr("n", 1)}, Windowed); err != nil {
		t.Fatal(err)
	}
	replica, seq, last := s.Replica(), s.Stats().Seq, s.clock.Last()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	s2 := openStore(t, Options{Path: path})
	if got := s2.Replica(); got != replica {
		t.Errorf("replica id %v after reopen, want %v", got, replica)
	}
	if got := s2.Stats().Seq; got != seq {
		t.Errorf("seq %d after reopen, want %d", got, seq)
	}
	if got := s2.clock.Read(); got <= last {
		t.Errorf("clock %v after reopen, want after %v", got, last)
	}
	if v, _ := s2.Counter("wf", "n"); v != 6 {
		t.Errorf("counter = %d after reopen, want 6 (the windowed write is flushed by Close)", v)
	}
	if v, err := s2.MapGet("wf", "m", "k"); err != nil || string(v) != `{"x":[1,2]}` {
		t.Errorf("map entry = %s, %v", v, err)
	}
}

func TestStore_NewFile_NewReplica(t *testing.T) {
	a := openStore(t, Options{})
	b := openStore(t, Options{})
	if a.Replica() == b.Replica() || a.Replica() == 0 {
		t.Fatalf("replica ids %v and %v", a.Replica(), b.Replica())
	}
}

func TestStore_Locked(t *testing.T) {
	s := openStore(t, Options{})
	other := New(Options{Path: s.opt.Path, OpenTimeout: 50 * time.Millisecond})
	err := other.Open()
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second open: err = %v, want a lock error", err)
	}
}

// A Windowed write is on disk, in the write-ahead log, within the commit window, without
// waiting for a commit to bbolt.
func TestStore_Windowed_LoggedWithinWindow(t *testing.T) {
	s := openStore(t, Options{CommitWindow: 20 * time.Millisecond, CheckpointInterval: time.Hour})
	for range 50 {
		if _, err := s.Apply(context.Background(), "tel", []ops.Op{incr("http.requests", 1)}, Windowed); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for s.Stats().Changes < 50 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("windowed writes not on disk within 5s: %+v", s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := s.Stats()
	if st.Commits != 0 {
		t.Errorf("%d commits to bbolt within the checkpoint interval, want none", st.Commits)
	}
	t.Logf("50 windowed writes in %d log syncs, %d bytes of log", st.LogSyncs, s.wal.used())
	if st.LogSyncs == 1 && s.wal.used() > 100 {
		t.Errorf("one window of 50 increments took %d bytes of log: the deltas were not joined", s.wal.used())
	}
	r := openStore(t, Options{Path: crashCopy(t, s)})
	if v, _ := r.Counter("tel", "http.requests"); v != 50 {
		t.Errorf("counter = %d after a crash, want the 50 logged writes", v)
	}
}

// The bbolt file takes the changes within the checkpoint interval.
func TestStore_CheckpointWithinInterval(t *testing.T) {
	s := openStore(t, Options{CommitWindow: 5 * time.Millisecond, CheckpointInterval: 20 * time.Millisecond})
	if _, err := s.Apply(context.Background(), "tel", []ops.Op{incr("http.requests", 1)}, Windowed); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var onDisk bool
		if err := s.db.View(func(tx *bolt.Tx) error {
			onDisk = tx.Bucket(bucketContexts).Get([]byte("tel")) != nil
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if onDisk {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("windowed write not in the bbolt file within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStore_Concurrent_GroupCommit(t *testing.T) {
	s := openStore(t, Options{})
	const writers, each = 16, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range each {
				d := Durable
				if w%2 == 1 {
					d = Windowed
				}
				if _, err := s.Apply(context.Background(), "hot", []ops.Op{incr("n", 1)}, d); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if v, _ := s.Counter("hot", "n"); v != writers*each {
		t.Fatalf("counter = %d, want %d", v, writers*each)
	}
	st := s.Stats()
	if syncs := st.Commits + st.LogSyncs; syncs >= writers*each/2 {
		t.Errorf("%d commits and %d log syncs for %d writes: no group commit", st.Commits, st.LogSyncs, writers*each)
	}
	t.Logf("%d writes in %d log syncs and %d commits", st.Changes, st.LogSyncs, st.Commits)
}

func TestStore_Limits(t *testing.T) {
	s := openStore(t, Options{Limits: Limits{MaxContexts: 2, MaxValuesPerContext: 3, MaxValueBytes: 10, MaxSetMembers: 2}})
	apply(t, s, "a", incr("x", 1))
	apply(t, s, "b", incr("x", 1))
	for _, tc := range []struct {
		name  string
		ctx   string
		ops   []ops.Op
		limit string
	}{
		{"contexts", "c", []ops.Op{incr("x", 1)}, "max_contexts"},
		{"value bytes", "a", []ops.Op{put("m", "k", `"0123456789"`)}, "max_value_bytes"},
		{"set members", "a", []ops.Op{add("s", "1"), add("s", "2"), add("s", "3")}, "max_set_members"},
		{"values", "a", []ops.Op{incr("y", 1), incr("z", 1), incr("w", 1)}, "max_values_per_context"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Get("a")
			_, err := s.Apply(context.Background(), tc.ctx, tc.ops, Durable)
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != tc.limit {
				t.Fatalf("err = %v, want LimitError %s", err, tc.limit)
			}
			after, _ := s.Get("a")
			if b1, b2 := mustJSON(before), mustJSON(after); b1 != b2 {
				t.Errorf("refused write changed the context:\n%s\n%s", b1, b2)
			}
		})
	}
	// Within limits still works after refusals.
	apply(t, s, "a", add("s", "1"), add("s", "2"))
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestStore_TTL_ExpiryAndSweep(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, Options{Now: clk.Now, TombstoneTTL: time.Minute})
	ctx := context.Background()
	apply(t, s, "wf", ops.Op{Kind: ops.Put, Map: "steps", Key: "a", Value: json.RawMessage(`1`), TTL: 10 * time.Second},
		ops.Op{Kind: ops.Add, Set: "s", Member: "m", TTL: 20 * time.Second}, incr("n", 1))
	if err := s.SetTTL(ctx, "wf", 30*time.Second, false); err != nil {
		t.Fatal(err)
	}
	clk.Advance(11 * time.Second)
	if _, err := s.MapGet("wf", "steps", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("entry after its TTL: %v", err)
	}
	if m, _ := s.Set("wf", "s"); !slices.Equal(m, []string{"m"}) {
		t.Errorf("set member before its TTL: %v", m)
	}
	// A write slides the context's TTL.
	apply(t, s, "wf", incr("n", 1))
	clk.Advance(25 * time.Second)
	if _, err := s.Get("wf"); err != nil {
		t.Errorf("context within its slid TTL: %v", err)
	}
	clk.Advance(10 * time.Second)
	if _, err := s.Get("wf"); !errors.Is(err, ErrNotFound) {
		t.Errorf("context after its TTL: %v", err)
	}
	// A write after expiry starts a fresh context: nothing of the old life shows.
	apply(t, s, "wf", incr("fresh", 1))
	snap, err := s.Get("wf")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mustJSON(snap.Counters), `{"fresh":1}`; got != want {
		t.Errorf("counters after restart = %s, want %s", got, want)
	}
	// The sweeper reclaims a dead context once the grace period has passed.
	clk.Advance(31 * time.Second)
	clk.Advance(2 * time.Minute)
	s.Sweep()
	if st := s.Stats(); st.Contexts != 0 {
		t.Errorf("%d contexts after sweep, want 0", st.Contexts)
	}
}

func TestStore_Watch(t *testing.T) {
	s := openStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := s.Watch(ctx, "w", 0)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, "other", incr("x", 1))
	apply(t, s, "w", incr("x", 1))
	e := <-sub.Events()
	if e.Context != "w" || e.Origin != s.Replica() {
		t.Fatalf("event %+v", e)
	}
	// Resume after the first event: the second is replayed.
	apply(t, s, "w", incr("x", 2))
	sub2, err := s.Watch(ctx, "w", e.ID)
	if err != nil {
		t.Fatal(err)
	}
	e2 := <-sub2.Events()
	if v, _ := e2.Delta.Counter("x", crdt.TimestampOf(time.Now())); e2.ID <= e.ID || v != 3 { // the delta carries the replica's slot: 1+2
		t.Fatalf("resumed event %+v value %d", e2, v)
	}
}

// TestStore_Merge_Converges replicates two stores through their watch streams.
func TestStore_Merge_Converges(t *testing.T) {
	a, b := openStore(t, Options{}), openStore(t, Options{})
	ctx := context.Background()
	subA, _ := a.Watch(ctx, "", 0)
	subB, _ := b.Watch(ctx, "", 0)
	apply(t, a, "fleet", incr("n", 2), add("s", "x"), put("m", "k", `"a"`))
	apply(t, b, "fleet", incr("n", 3), add("s", "y"), rem("s", "x"), put("m", "k", `"b"`))
	for range 1 {
		e := <-subA.Events()
		if err := b.Merge(ctx, e.Context, e.Delta, e.Origin); err != nil {
			t.Fatal(err)
		}
		e = <-subB.Events()
		if err := a.Merge(ctx, e.Context, e.Delta, e.Origin); err != nil {
			t.Fatal(err)
		}
	}
	sa, _ := a.Get("fleet")
	sb, _ := b.Get("fleet")
	if mustJSON(sa) != mustJSON(sb) {
		t.Fatalf("diverged:\n%s\n%s", mustJSON(sa), mustJSON(sb))
	}
	if sa.Counters["n"] != 5 || !slices.Equal(sa.Sets["s"], []string{"x", "y"}) {
		t.Fatalf("merged state %s: want n=5 and add-wins x,y", mustJSON(sa))
	}
}

func TestStore_ClosedRefusesWrites(t *testing.T) {
	s := openStore(t, Options{})
	s.Close()
	if _, err := s.Apply(context.Background(), "c", []ops.Op{incr("x", 1)}, Durable); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
}
