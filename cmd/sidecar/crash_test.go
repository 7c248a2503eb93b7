package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
)

// buildSidecar builds the sidecar binary once per test binary run.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func buildSidecar(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sidecar-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "sidecar")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

func freePort(t *testing.T) string {
	t.Helper()
	// Below the kernel's ephemeral range (32768-60999 on Linux): a port it handed out
	// for a ":0" listener would be free again here, and the kernel could give it to
	// another test's listener or connection before the child binds it. The sync address
	// takes UDP too (memberlist), so both must be free.
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12768))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr
	}
	t.Fatal("no free TCP and UDP port on 127.0.0.1 in 20000-32767 after 100 tries")
	return ""
}

// sidecarProc is a sidecar child process.
type sidecarProc struct {
	cmd   *exec.Cmd
	admin string
	done  chan error
	logs  *logTail
}

// startSidecar runs `sidecar run` with no config file, everything set through the
// environment, on loopback ports of its own, and waits until /readyz answers 200.
func startSidecar(t *testing.T, bin string, env map[string]string) *sidecarProc {
	t.Helper()
	adminAddr := freePort(t)
	cmd := exec.Command(bin, "run", "-config", "-")
	cmd.Env = append(os.Environ(),
		"CTXPROP_ADMIN_ADDRESS="+adminAddr,
		"CTXPROP_INBOUND_ADDRESS=127.0.0.1:0",
		"CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0",
		"CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS=127.0.0.1:0",
		"CTXPROP_SYNC_ADDRESS=127.0.0.1:0",
		"CTXPROP_LOG_FORMAT=json",
	)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &logTail{}
	cmd.Stdout = logs
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &sidecarProc{cmd: cmd, admin: "http://" + adminAddr, done: make(chan error, 1), logs: logs}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-p.done:
			p.done <- err // for the cleanup, which waits for it
			t.Fatalf("sidecar exited before ready: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not ready after 30s\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *sidecarProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for the cleanup
}

// logTail keeps the last lines a child wrote, for failure messages.
// startLogged starts cmd with its output kept in a logTail, and kills it when the test
// ends, logging that output under label if the test failed.
func startLogged(t testing.TB, cmd *exec.Cmd, label string) *logTail {
	t.Helper()
	logs := &logTail{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s:\n%s", label, logs)
		}
	})
	return logs
}

type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		l.lines = append(l.lines, sc.Text())
		if len(l.lines) > 50 {
			l.lines = l.lines[1:]
		}
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestCrash_KillLosesNoAcknowledgedWrite streams writes from several clients to a real
// sidecar process, SIGKILLs it at a random moment, restarts it on the same file, and
// checks that every acknowledged write is there. The counter check follows Maelstrom's
// rule: the value read equals the acknowledged increments plus some subset of those whose
// outcome is unknown (sent, no answer). Set members and map entries must all be present.
// CTXPROPTEST_CRASH_CYCLES sets the number of kill cycles (default 25).
func TestCrash_KillLosesNoAcknowledgedWrite(t *testing.T) {
	bin := buildSidecar(t)
	cycles := 25
	if v, err := strconv.Atoi(os.Getenv("CTXPROPTEST_CRASH_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	env := map[string]string{"CTXPROP_STORE_PATH": filepath.Join(t.TempDir(), "ctx.db")}
	const writers = 8
	var (
		acked, uncertain int64 // counter increments
		members          []string
		entries          = map[string]string{}
		totalAcked       int64
		replays          int // restarts that found acknowledged writes only in the write-ahead log
	)
	ctx := context.Background()
	for cycle := 0; cycle <= cycles; cycle++ {
		// Every other cycle the bbolt file takes the log every 20 ms, so that kills land
		// during and between its commits too; the others leave everything in the log.
		env["CTXPROP_STORE_CHECKPOINT_INTERVAL"] = "10s"
		if cycle%2 == 1 {
			env["CTXPROP_STORE_CHECKPOINT_INTERVAL"] = "20ms"
		}
		p := startSidecar(t, bin, env)
		if strings.Contains(p.logs.String(), "replayed write-ahead log") {
			replays++
		}
		c := admin.NewClient(p.admin, &http.Client{Timeout: 10 * time.Second})

		// Verify everything acknowledged before the last kill.
		v, err := c.Counter(ctx, "crash", "n")
		if err != nil {
			t.Fatalf("cycle %d: read counter: %v", cycle, err)
		}
		if v < acked || v > acked+uncertain {
			t.Fatalf("cycle %d: counter = %d; want %d acknowledged plus at most %d uncertain", cycle, v, acked, uncertain)
		}
		acked, uncertain = v, 0
		got, err := c.Set(ctx, "crash", "members")
		if err != nil {
			t.Fatalf("cycle %d: read set: %v", cycle, err)
		}
		have := make(map[string]bool, len(got))
		for _, m := range got {
			have[m] = true
		}
		for _, m := range members {
			if !have[m] {
				t.Fatalf("cycle %d: acknowledged set member %q lost", cycle, m)
			}
		}
		gotEntries, err := c.Map(ctx, "crash", "entries")
		if err != nil {
			t.Fatalf("cycle %d: read map: %v", cycle, err)
		}
		// Each writer puts increasing numbers under its own key: the value read must be
		// the last acknowledged one or a later, unacknowledged one.
		for k, want := range entries {
			got, _ := strconv.Atoi(string(gotEntries[k]))
			if w, _ := strconv.Atoi(want); got < w {
				t.Fatalf("cycle %d: map entry %q = %s; the acknowledged %s is lost", cycle, k, gotEntries[k], want)
			}
		}
		if cycle == cycles {
			break
		}

		// Stream writes until the kill.
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			stop     atomic.Bool
			ackedInc atomic.Int64
			unknown  atomic.Int64
		)
		for w := range writers {
			wg.Go(func() {
				for n := 0; !stop.Load(); n++ {
					var err error
					switch n % 3 {
					case 0:
						_, err = c.Incr(ctx, "crash", "n", 1, 0)
						if err == nil {
							ackedInc.Add(1)
						} else {
							unknown.Add(1)
						}
					case 1:
						m := fmt.Sprintf("m-%d-%d-%d", cycle, w, n)
						if _, err = c.UpdateSet(ctx, "crash", "members", []string{m}, nil, 0); err == nil {
							mu.Lock()
							members = append(members, m)
							mu.Unlock()
						}
					case 2:
						k, v := fmt.Sprintf("w%d", w), strconv.Itoa(cycle*1_000_000+n)
						if err = c.Put(ctx, "crash", "entries", k, []byte(v), 0); err == nil {
							mu.Lock()
							entries[k] = v
							mu.Unlock()
						}
					}
					if err != nil {
						return // the process is gone
					}
				}
			})
		}
		time.Sleep(time.Duration(30+rand.IntN(200)) * time.Millisecond)
		p.kill(t)
		stop.Store(true)
		wg.Wait()
		c.CloseIdleConnections()
		acked += ackedInc.Load()
		uncertain += unknown.Load()
		totalAcked += ackedInc.Load()
		if ackedInc.Load() == 0 {
			t.Logf("cycle %d: no increment acknowledged before the kill\n%s", cycle, p.logs)
		}
	}
	t.Logf("%d kill cycles: %d increments, %d set members, %d map entries acknowledged; none lost; %d restarts replayed the write-ahead log", cycles, totalAcked, len(members), len(entries), replays)
	if totalAcked == 0 || len(members) == 0 {
		t.Fatal("no write was acknowledged: the test checked nothing")
	}
	if replays == 0 {
		// Kills land within the 100 ms commit window nearly always; never replaying would
		// mean the log's recovery path went untested.
		t.Fatal("no restart replayed the write-ahead log: the kills all fell after a commit to bbolt")
	}
}

var _ io.Writer = (*logTail)(nil)
