// Command slowdisk mounts a passthrough (loopback) view of a directory whose fsync and
// fdatasync are slower by a fixed delay, so that a benchmark can see how a durable store
// behaves on a disk like a cloud block volume (0.5–2+ ms per flush) on a machine whose own disk
// flushes in a fraction of that.
//
// Every other operation is the backing file system's own: reads, writes and mmap go to the
// backing file (by FUSE passthrough where the kernel offers it), flock is the kernel's, and the
// delayed sync is still the real fsync or fdatasync of the backing file.
//
// Usage (as root; it mounts with mount(2) directly, so no fusermount is needed):
//
//	slowdisk -backing DIR -mount DIR [-fsync-delay 1ms]
//
// It prints one line starting "mounted" once the mount is usable, and unmounts on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "slowdisk:", err)
		os.Exit(1)
	}
}

// run mounts, reports, and serves until ctx ends or the mount goes away.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("slowdisk", flag.ContinueOnError)
	backing := flags.String("backing", "", "directory whose contents the mount shows (required)")
	mountpoint := flags.String("mount", "", "empty directory to mount on (required)")
	delay := flags.Duration("fsync-delay", time.Millisecond, "added to every fsync, fdatasync and directory fsync")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *backing == "" || *mountpoint == "" {
		return errors.New("both -backing and -mount are required")
	}
	if *delay < 0 {
		return fmt.Errorf("-fsync-delay %s: must not be negative", *delay)
	}

	server, err := mount(*backing, *mountpoint, *delay)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mounted %s on %s with fsync delay %s\n", *backing, *mountpoint, *delay)

	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()
	select {
	case <-served:
		return fmt.Errorf("%s was unmounted from outside", *mountpoint)
	case <-ctx.Done():
	}
	if err := server.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w (close the files open under it, or run umount -l %s)", *mountpoint, err, *mountpoint)
	}
	<-served
	return nil
}

// mount serves backing at mountpoint with every sync delayed by delay. The mount is usable when
// it returns; stop it with the server's Unmount.
func mount(backing, mountpoint string, delay time.Duration) (*fuse.Server, error) {
	loopback, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("backing directory: %w", err)
	}
	root := &node{LoopbackNode: loopback.(*fs.LoopbackNode)}

	second := time.Second
	opts := &fs.Options{
		EntryTimeout: &second,
		AttrTimeout:  &second,
		MountOptions: fuse.MountOptions{
			FsName: backing,
			Name:   "slowdisk",
			// As root, mount(2) works by itself; failing beats silently needing fusermount.
			DirectMountStrict: true,
			// Otherwise the kernel asks for security.capability on every write to check whether
			// it must drop it: a round trip per bbolt page write that no real disk has.
			// Answering ENOSYS once makes the kernel stop asking.
			DisableXAttrs: true,
		},
	}
	raw := &slowSync{RawFileSystem: fs.NewNodeFS(root, opts), delay: delay}
	server, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount on %s: %w (it needs root and /dev/fuse)", mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount on %s: %w", mountpoint, err)
	}
	return server, nil
}

// slowSync adds the delay at the protocol level, where every FSYNC and FSYNCDIR passes:
// go-fuse answers FSYNCDIR from the loopback's directory handle, an unexported type that a node
// wrapper never sees.
type slowSync struct {
	fuse.RawFileSystem
	delay time.Duration
}

func (s *slowSync) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	sleep(s.delay)
	return s.RawFileSystem.Fsync(cancel, in)
}

func (s *slowSync) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	sleep(s.delay)
	return s.RawFileSystem.FsyncDir(cancel, in)
}

// sleep blocks its thread for d with nanosleep(2). Go's timers wake through the network
// poller, whose wait is in whole milliseconds, so time.Sleep(500µs) lasts ~1.1 ms here and would
// make 500µs and 1ms the same disk; nanosleep overshoots by well under 0.1 ms.
func sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	// The runtime's preemption signals interrupt it; ts then holds what is left.
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

// fsyncFdatasync is FUSE_FSYNC_FDATASYNC: the caller asked for fdatasync.
const fsyncFdatasync = 1

// node is a loopback node whose fsync does what the caller asked for. go-fuse's LoopbackFile
// turns fdatasync into a full fsync, which on ext4 also commits the journal for the mtime that
// every write changes; bbolt calls fdatasync, so that would charge it for a flush it never asked
// for.
type node struct {
	*fs.LoopbackNode
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeFsyncer     = (*node)(nil)
)

// WrapChild makes every node below the root a node too.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode)}
}

func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	// LoopbackFile shows its descriptor only through PassthroughFd. The kernel holds the open
	// file for the length of the call, so the descriptor cannot be released meanwhile.
	if pf, ok := f.(fs.FilePassthroughFder); ok {
		if fd, ok := pf.PassthroughFd(); ok {
			if flags&fsyncFdatasync != 0 {
				return fs.ToErrno(unix.Fdatasync(fd))
			}
			return fs.ToErrno(unix.Fsync(fd))
		}
	}
	if fsyncer, ok := f.(fs.FileFsyncer); ok {
		return fsyncer.Fsync(ctx, flags)
	}
	return syscall.ENOTSUP
}
