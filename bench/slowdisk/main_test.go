package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// needFUSE fails the test where FUSE cannot be mounted directly: make test runs these
// tests as root on Linux, where /dev/fuse exists.
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("mounting FUSE with mount(2) needs root: run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("no FUSE device (%v): load the fuse module or run on a kernel with FUSE", err)
	}
}

// mountForTest mounts a fresh backing directory and unmounts it when the test ends.
func mountForTest(t *testing.T, delay time.Duration) (backing, mnt string) {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	backing, mnt = filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	server, err := mount(backing, mnt, delay)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after TempDir's cleanup, so it runs first: the directory must be unmounted
	// before it can be removed.
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return backing, mnt
}

func TestMount_SyncsAreDelayed(t *testing.T) {
	const delay = 40 * time.Millisecond
	_, mnt := mountForTest(t, delay)

	f, err := os.Create(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	syncs := []struct {
		name string
		sync func() error
	}{
		{"fsync", f.Sync},
		{"fdatasync", func() error { return unix.Fdatasync(int(f.Fd())) }},
		{"directory fsync", dir.Sync},
	}
	for _, s := range syncs {
		t.Run(s.name, func(t *testing.T) {
			if _, err := f.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := s.sync(); err != nil {
				t.Fatal(err)
			}
			if got := time.Since(start); got < delay {
				t.Errorf("%s took %s, want at least the delay %s", s.name, got, delay)
			}
		})
	}
}

// TestSleep_SubMillisecond guards the reason sleep exists: a delay under a millisecond must not
// round up to one, or the 500µs disk would be the 1ms disk.
func TestSleep_SubMillisecond(t *testing.T) {
	const d, limit = 300 * time.Microsecond, 900 * time.Microsecond
	took := make([]time.Duration, 21)
	for i := range took {
		start := time.Now()
		sleep(d)
		took[i] = time.Since(start)
	}
	slices.Sort(took)
	if got := took[0]; got < d {
		t.Errorf("shortest sleep(%s) took %s, want at least %s", d, got, d)
	}
	if got := took[len(took)/2]; got > limit {
		t.Errorf("median sleep(%s) took %s, want under %s", d, got, limit)
	}
}

// TestMount_Bolt checks what the store benchmark relies on: bbolt's flock, mmap reads and
// pwrite+fdatasync writes work on the mount, and what it wrote is intact after a reopen.
func TestMount_Bolt(t *testing.T) {
	backing, mnt := mountForTest(t, 0)
	path := filepath.Join(mnt, "bolt.db")
	opts := &bolt.Options{Timeout: time.Second}
	bucket := []byte("b")
	const writers, perWriter = 8, 50

	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	// A second open must wait for the first one's flock and give up.
	if _, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 100 * time.Millisecond}); !errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("second open while the first holds the lock: got %v, want %v", err, bolterrors.ErrTimeout)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				err := db.Batch(func(tx *bolt.Tx) error {
					b, err := tx.CreateBucketIfNotExists(bucket)
					if err != nil {
						return err
					}
					// Values large enough that the file grows and is remapped a few times.
					return b.Put(binary.BigEndian.AppendUint32(nil, uint32(w*perWriter+i)), make([]byte, 4096))
				})
				if err != nil {
					t.Errorf("batch: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = bolt.Open(path, 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("check: %v", err)
		}
		if got, want := tx.Bucket(bucket).Stats().KeyN, writers*perWriter; got != want {
			t.Errorf("keys after reopen: got %d, want %d", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The mount passes through: the backing file is the same file, byte for byte in size.
	onMount, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	onBacking, err := os.Stat(filepath.Join(backing, "bolt.db"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := onBacking.Size(), onMount.Size(); got != want {
		t.Errorf("backing file size %d, want the mount's %d", got, want)
	}
}

// TestRun_UnmountsWhenCancelled checks the command's lifecycle: it announces the mount, and a
// signal (here, the cancelled context) leaves nothing mounted.
func TestRun_UnmountsWhenCancelled(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-backing", backing, "-mount", mnt, "-fsync-delay", "1ms"}, w)
		w.Close()
	}()
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		if !strings.HasPrefix(line, "mounted ") {
			t.Fatalf("first line %q, want one starting %q", line, "mounted ")
		}
	case err := <-done:
		t.Fatalf("run ended before mounting: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no mounted line within 10s")
	}
	if !isMounted(t, mnt) {
		t.Fatalf("%s not in /proc/mounts after the mounted line", mnt)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancellation")
	}
	if isMounted(t, mnt) {
		t.Errorf("%s still mounted after run returned", mnt)
	}
}

func TestRun_RejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no backing", []string{"-mount", "/x"}, "required"},
		{"no mount", []string{"-backing", "/x"}, "required"},
		{"negative delay", []string{"-backing", "/x", "-mount", "/y", "-fsync-delay", "-1ms"}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(mounts)) {
		if fields := strings.Fields(line); len(fields) > 1 && fields[1] == dir {
			return true
		}
	}
	return false
}
