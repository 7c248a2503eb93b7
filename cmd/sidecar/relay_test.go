//go:build linux

// It needs root, iproute2, iptables and Debian's nats-server (make tools).

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServer is Debian's nats-server binary run as a child process with JetStream on a
// directory, restartable on the same directory.
type natsServer struct {
	t    *testing.T
	bin  string
	port string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	logs *logTail
}

func natsServerBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("nats-server is not installed; run `make tools` (hack/apt.sh installs Debian's nats-server)")
	return ""
}

func startNATSServer(t *testing.T, port, dir string) *natsServer {
	t.Helper()
	n := &natsServer{t: t, bin: natsServerBinary(t), port: port, dir: dir}
	n.start()
	t.Cleanup(func() { n.kill() })
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	// On every address: cluster east reaches it on loopback, cluster west, in network
	// namespaces, on the bridge.
	n.cmd = exec.Command(n.bin, "-a", "0.0.0.0", "-p", n.port, "-js", "-sd", n.dir)
	n.logs = &logTail{}
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		nc, err := nats.Connect("nats://127.0.0.1:" + n.port)
		if err == nil {
			js, _ := jetstream.New(nc)
			_, err = js.AccountInfo(context.Background())
			nc.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server not serving JetStream after 20s: %v\n%s", err, n.logs)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// kill SIGKILLs the server; safe to call when it is not running.
func (n *natsServer) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// relayFleet writes through the admin APIs and records what was acknowledged.
type relayFleet struct {
	mu    sync.Mutex
	bases map[string]string // admin API base URL by sidecar
	acked map[string]int64  // by writer: increments of counter by-<writer>, one member each
}

func (f *relayFleet) client(name string) *admin.Client { return admin.NewClient(f.base(name), nil) }

func (f *relayFleet) base(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bases[name]
}

func (f *relayFleet) setBase(name, base string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bases[name] = base
}

// write increments by-<name> and adds a member on name's sidecar; every write must be
// acknowledged: a sidecar takes writes whatever happens to NATS.
func (f *relayFleet) write(ctx context.Context, name string) error {
	f.mu.Lock()
	i := f.acked[name]
	f.mu.Unlock()
	c := f.client(name)
	if _, err := c.Incr(ctx, "shared", "by-"+name, 1, 0); err != nil {
		return fmt.Errorf("incr on %s: %w", name, err)
	}
	if _, err := c.UpdateSet(ctx, "shared", "members", []string{fmt.Sprintf("%s-%d", name, i)}, nil, 0); err != nil {
		return fmt.Errorf("set add on %s: %w", name, err)
	}
	f.mu.Lock()
	f.acked[name]++
	f.mu.Unlock()
	return nil
}

// converged checks that every sidecar holds every acknowledged write.
func (f *relayFleet) converged(ctx context.Context) error {
	f.mu.Lock()
	acked := make(map[string]int64, len(f.acked))
	var total int64
	for k, v := range f.acked {
		acked[k] = v
		total += v
	}
	names := make([]string, 0, len(f.bases))
	for n := range f.bases {
		names = append(names, n)
	}
	f.mu.Unlock()
	for _, n := range names {
		snap, err := f.client(n).Get(ctx, "shared")
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		for w, want := range acked {
			if got := snap.Counters["by-"+w]; got != want {
				return fmt.Errorf("%s reads by-%s = %d, want the %d acknowledged", n, w, got, want)
			}
		}
		if got := int64(len(snap.Sets["members"])); got != total {
			return fmt.Errorf("%s holds %d members, want the %d acknowledged", n, got, total)
		}
	}
	return nil
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
}

// TestRelay_TwoClustersThroughNATS runs two clusters of two `sidecar run` processes each,
// peered only inside their cluster, with Debian's nats-server between them: east on
// loopback, west in network namespaces. Counters, sets, maps, flags and TTLs written in
// one reach the other; then, with writers running on three sidecars, a west sidecar is
// SIGKILLed and restarted, NATS is SIGKILLed and restarted on its store, and west is cut
// off from NATS by iptables and healed. Every acknowledged write must reach every sidecar.
func TestRelay_TwoClustersThroughNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four sidecars and a nats-server, and creates network namespaces")
	}
	lab := newNetLab(t, 2)
	bin := buildSidecar(t)
	dir := t.TempDir()
	_, port, _ := net.SplitHostPort(freePort(t))
	ns := startNATSServer(t, port, filepath.Join(dir, "nats"))
	bridge := lab.subnet + "254"

	common := map[string]string{
		"CTXPROP_RELAY_STATE_INTERVAL": "500ms",
		"CTXPROP_RELAY_ACK_WAIT":       "2s",
		// Short, so that a cluster that took the other's live replicas for gone would
		// retire them within the test, and their sidecars would stop taking writes.
		"CTXPROP_SYNC_RETIRE_AFTER": "10s",
	}
	env := func(name string, extra map[string]string) map[string]string {
		e := map[string]string{"CTXPROP_NODE_NAME": name, "CTXPROP_STORE_PATH": filepath.Join(dir, name+".db")}
		for k, v := range common {
			e[k] = v
		}
		for k, v := range extra {
			e[k] = v
		}
		return e
	}
	fleet := &relayFleet{bases: map[string]string{}, acked: map[string]int64{}}

	eastSync := []string{freePort(t), freePort(t)}
	for i, name := range []string{"east-0", "east-1"} {
		p := startSidecar(t, bin, env(name, map[string]string{
			"CTXPROP_SYNC_ADDRESS":  eastSync[i],
			"CTXPROP_SYNC_PEERS":    strings.Join(eastSync, ","),
			"CTXPROP_RELAY_URLS":    "nats://127.0.0.1:" + port,
			"CTXPROP_RELAY_CLUSTER": "east",
		}))
		fleet.setBase(name, p.admin)
	}
	westEnv := func(i int) map[string]string {
		return env(fmt.Sprintf("west-%d", i), map[string]string{
			"CTXPROP_SYNC_PEERS":    lab.ip(0) + ":7403," + lab.ip(1) + ":7403",
			"CTXPROP_RELAY_URLS":    "nats://" + bridge + ":" + port,
			"CTXPROP_RELAY_CLUSTER": "west",
		})
	}
	westCmd := make([]*exec.Cmd, 2)
	for i := range 2 {
		_, westCmd[i] = startInNamespace(t, bin, lab.ns[i], lab.ip(i), westEnv(i))
		fleet.setBase(fmt.Sprintf("west-%d", i), "http://"+lab.ip(i)+":7400")
	}
	ctx := context.Background()

	// Every kind of state, written on one side, read on the other.
	for _, name := range []string{"east-0", "east-1", "west-0", "west-1"} {
		if err := fleet.write(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := fleet.client("west-1").Put(ctx, "shared", "steps", "pay", []byte(`"done"`), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := fleet.client("east-1").Incr(ctx, "with-ttl", "n", 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := fleet.client("east-1").SetTTL(ctx, "with-ttl", time.Hour, false); err != nil {
		t.Fatal(err)
	}
	putFlag(t, fleet.base("east-0"), "relay-flag", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`)
	waitUntil(t, 60*time.Second, "first writes converge", func() error { return fleet.converged(ctx) })
	waitUntil(t, 30*time.Second, "map, TTL and flag cross", func() error {
		for _, name := range []string{"east-0", "east-1", "west-0", "west-1"} {
			c := fleet.client(name)
			if v, err := c.MapGet(ctx, "shared", "steps", "pay"); err != nil || string(v) != `"done"` {
				return fmt.Errorf("%s: map entry %s, %v", name, v, err)
			}
			snap, err := c.Get(ctx, "with-ttl")
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if snap.ExpiresAt == nil || time.Until(*snap.ExpiresAt) < 50*time.Minute {
				return fmt.Errorf("%s: context with-ttl expires at %v, want about an hour from now", name, snap.ExpiresAt)
			}
			if err := getFlag(fleet.base(name), "relay-flag"); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})

	// Writers on three sidecars through every fault; west-0 is the one killed.
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, name := range []string{"east-0", "east-1", "west-1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wctx.Err() == nil {
				if err := fleet.write(ctx, name); err != nil {
					errs <- err
					return
				}
				time.Sleep(10 * time.Millisecond) // pacing, not synchronisation
			}
		}()
	}
	pause := func(d time.Duration) {
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(d):
		}
	}
	pause(time.Second)

	t.Log("SIGKILL west-0 and restart it on its store")
	if err := westCmd[0].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pause(2 * time.Second)
	startInNamespace(t, bin, lab.ns[0], lab.ip(0), westEnv(0))
	pause(time.Second)

	t.Log("SIGKILL nats-server and restart it on its store")
	ns.kill()
	pause(2 * time.Second)
	ns.start()
	pause(2 * time.Second)

	t.Log("cut west off from NATS")
	for i := range 2 {
		sh(t, "ip", "netns", "exec", lab.ns[i], "iptables", "-A", "OUTPUT", "-d", bridge, "-p", "tcp", "--dport", port, "-j", "DROP")
		sh(t, "ip", "netns", "exec", lab.ns[i], "iptables", "-A", "INPUT", "-s", bridge, "-p", "tcp", "--sport", port, "-j", "DROP")
	}
	pause(3 * time.Second)
	if err := fleet.converged(ctx); err == nil {
		t.Fatal("the clusters converged while west was cut off from NATS: the cut did not cut")
	}
	for i := range 2 {
		lab.heal(i)
	}
	t.Log("healed")
	pause(time.Second)
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	healed := time.Now()
	waitUntil(t, 90*time.Second, "every acknowledged write on every sidecar", func() error { return fleet.converged(ctx) })
	fleet.mu.Lock()
	t.Logf("converged %s after the writers stopped; acknowledged %v", time.Since(healed).Round(time.Millisecond), fleet.acked)
	fleet.mu.Unlock()
}

func putFlag(t *testing.T, base, key, def string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, base+"/v1/flags/"+key, bytes.NewBufferString(def))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT flag %s: %s", key, resp.Status)
	}
}

func getFlag(base, key string) error {
	resp, err := http.Get(base + "/v1/flags/" + key)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New("flag " + key + ": " + resp.Status)
	}
	return nil
}
