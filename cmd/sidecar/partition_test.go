//go:build linux

// It needs root, iproute2 and iptables.

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
)

// netLab is a bridge in the root namespace and one network namespace per node, each
// joined to the bridge by a veth pair. The test process reaches every node through the
// bridge's own address. Everything is named after a random id and removed in Cleanup.
type netLab struct {
	t      testing.TB
	id     string
	bridge string
	subnet string // "10.R.S."
	ns     []string
}

func sh(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newNetLab(t testing.TB, nodes int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install iproute2 iptables)", tool)
		}
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b)
	l := &netLab{t: t, id: id, bridge: "cxb" + id, subnet: fmt.Sprintf("10.%d.%d.", 100+int(b[0])%100, b[1])}
	t.Cleanup(l.remove)
	sh(t, "ip", "link", "add", l.bridge, "type", "bridge")
	sh(t, "ip", "addr", "add", l.subnet+"254/24", "dev", l.bridge)
	sh(t, "ip", "link", "set", l.bridge, "up")
	for i := range nodes {
		ns := fmt.Sprintf("cxn%s%d", id, i)
		host, peer := fmt.Sprintf("cxh%s%d", id, i), fmt.Sprintf("cxp%s%d", id, i)
		l.ns = append(l.ns, ns)
		sh(t, "ip", "netns", "add", ns)
		sh(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
		sh(t, "ip", "link", "set", host, "master", l.bridge)
		sh(t, "ip", "link", "set", host, "up")
		sh(t, "ip", "link", "set", peer, "netns", ns)
		sh(t, "ip", "-n", ns, "addr", "add", l.ip(i)+"/24", "dev", peer)
		sh(t, "ip", "-n", ns, "link", "set", peer, "up")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	return l
}

func (l *netLab) ip(i int) string { return fmt.Sprintf("%s%d", l.subnet, i+1) }

// cut drops, inside node i's namespace, all traffic with the other nodes (the test
// process on the bridge address still reaches it).
func (l *netLab) cut(i int) {
	for j := range l.ns {
		if j == i {
			continue
		}
		sh(l.t, "ip", "netns", "exec", l.ns[i], "iptables", "-A", "INPUT", "-s", l.ip(j), "-j", "DROP")
		sh(l.t, "ip", "netns", "exec", l.ns[i], "iptables", "-A", "OUTPUT", "-d", l.ip(j), "-j", "DROP")
	}
}

func (l *netLab) heal(i int) {
	sh(l.t, "ip", "netns", "exec", l.ns[i], "iptables", "-F")
}

func (l *netLab) remove() {
	for i, ns := range l.ns {
		_ = exec.Command("ip", "netns", "del", ns).Run() // takes the veth pair with it
		_ = exec.Command("ip", "link", "del", fmt.Sprintf("cxh%s%d", l.id, i)).Run()
	}
	_ = exec.Command("ip", "link", "del", l.bridge).Run()
}

// startInNamespace runs `sidecar run` inside a namespace, admin on the node's bridge
// address so that the test reaches it.
func startInNamespace(t testing.TB, bin, ns, ip string, env map[string]string) (*admin.Client, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "run", "-config", "-")
	cmd.Env = append(os.Environ(),
		"CTXPROP_ADMIN_ADDRESS="+ip+":7400",
		"CTXPROP_ADMIN_ALLOW_NON_LOOPBACK=true",
		"CTXPROP_INBOUND_ADDRESS=127.0.0.1:0",
		"CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0",
		"CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS=127.0.0.1:0",
		"CTXPROP_SYNC_ADDRESS="+ip+":7403",
		"CTXPROP_LOG_FORMAT=json",
	)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := startLogged(t, cmd, ns+" logs")
	c := admin.NewClient("http://"+ip+":7400", nil)
	deadline := time.Now().Add(30 * time.Second)
	for c.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("sidecar in %s not ready after 30s\n%s", ns, logs)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	return c, cmd
}

func TestSync_PartitionBetweenNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("creates network namespaces and starts three sidecars")
	}
	const n = 3
	lab := newNetLab(t, n)
	bin := buildSidecar(t)
	dir := t.TempDir()
	peers := make([]string, n)
	for i := range peers {
		peers[i] = lab.ip(i) + ":7403"
	}
	clients := make([]*admin.Client, n)
	for i := range clients {
		clients[i], _ = startInNamespace(t, bin, lab.ns[i], lab.ip(i), map[string]string{
			"CTXPROP_NODE_NAME":  fmt.Sprintf("ns-%d", i),
			"CTXPROP_STORE_PATH": filepath.Join(dir, fmt.Sprintf("ns-%d.db", i)),
			"CTXPROP_SYNC_PEERS": strings.Join(peers, ","),
		})
	}
	ctx := context.Background()
	waitAlive := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok := true
			for _, c := range clients {
				ps, err := c.Peers(ctx)
				alive := 0
				for _, p := range ps {
					if p.State == "alive" {
						alive++
					}
				}
				ok = ok && err == nil && alive >= want
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not every node sees %d alive peers after 30s", what, want)
			}
			time.Sleep(100 * time.Millisecond) // polling with a deadline
		}
	}
	waitAlive("before the partition", n-1)

	var mu sync.Mutex
	acked := make([]int64, n)
	write := func(i, count int) {
		for range count {
			if _, err := clients[i].Incr(ctx, "split", fmt.Sprintf("by-%d", i), 1, 0); err != nil {
				t.Fatalf("write on node %d: %v", i, err)
			}
			if _, err := clients[i].UpdateSet(ctx, "split", "writers", []string{fmt.Sprintf("n%d-%d", i, acked[i])}, nil, 0); err != nil {
				t.Fatalf("set add on node %d: %v", i, err)
			}
			mu.Lock()
			acked[i]++
			mu.Unlock()
		}
	}
	write(0, 10)
	lab.cut(2)
	// Both sides take writes while node 2 is cut off, long enough for memberlist to
	// declare it dead.
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); write(i, 40) }()
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, _ := clients[0].Peers(ctx)
		dead := false
		for _, p := range ps {
			dead = dead || (strings.HasPrefix(p.Name, "ns-2/") && p.State != "alive")
		}
		if dead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 0 still sees node 2 alive 30s into the partition")
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	if v, _ := clients[0].Counter(ctx, "split", "by-2"); v != 0 {
		t.Fatalf("node 0 reads %d writes of node 2 across the partition", v)
	}

	lab.heal(2)
	healed := time.Now()
	waitAlive("after the heal", n-1)
	rejoined := time.Now()
	deadline = time.Now().Add(30 * time.Second)
	for {
		converged := true
		for _, c := range clients {
			snap, err := c.Get(ctx, "split")
			if err != nil {
				converged = false
				break
			}
			for i := range n {
				converged = converged && snap.Counters[fmt.Sprintf("by-%d", i)] == acked[i]
			}
			converged = converged && int64(len(snap.Sets["writers"])) == acked[0]+acked[1]+acked[2]
		}
		if converged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence 30s after the heal; acknowledged %v", acked)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	t.Logf("heal → rejoin %s, rejoin → converged %s (every acknowledged write on every node: %v)",
		rejoined.Sub(healed).Round(time.Millisecond), time.Since(rejoined).Round(time.Millisecond), acked)
	if d := time.Since(rejoined); d > 5*time.Second {
		t.Errorf("converged %s after the rejoin, over the 5s target", d)
	}
}
