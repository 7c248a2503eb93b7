package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/ops"
)

// fleetNode is one sidecar process of a replicated fleet, restartable with the same file,
// name and sync address.
type fleetNode struct {
	name string
	env  map[string]string
	mu   sync.Mutex
	proc *sidecarProc
}

func (f *fleetNode) client() *admin.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	return admin.NewClient(f.proc.admin, nil)
}

// ledger records the outcome of every write: acknowledged, or uncertain (an error or a
// timeout: it may or may not have been applied, the Maelstrom rule).
type ledger struct {
	mu               sync.Mutex
	acked, uncertain int64
	ackedMembers     []string
	uncertainMembers []string
}

func TestSync_FleetConvergesThroughKillAndStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five sidecar processes")
	}
	bin := buildSidecar(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keyring")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 5
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freePort(t)
	}
	nodes := make([]*fleetNode, n)
	for i := range nodes {
		nodes[i] = &fleetNode{name: fmt.Sprintf("pod-%d", i), env: map[string]string{
			"CTXPROP_NODE_NAME":     fmt.Sprintf("pod-%d", i),
			"CTXPROP_STORE_PATH":    filepath.Join(dir, fmt.Sprintf("pod-%d.db", i)),
			"CTXPROP_SYNC_ADDRESS":  addrs[i],
			"CTXPROP_SYNC_PEERS":    strings.Join(addrs, ","),
			"CTXPROP_SYNC_KEY_FILE": keyFile,
		}}
		nodes[i].proc = startSidecar(t, bin, nodes[i].env)
	}

	ctx, stop := context.WithCancel(context.Background())
	var led ledger
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ctx.Err() == nil; j++ {
				member := fmt.Sprintf("w%d-%d", i, j)
				list := []ops.Op{
					{Kind: ops.Incr, Key: "orders", By: 1},
					{Kind: ops.Add, Set: "seen", Member: member},
					{Kind: ops.Put, Map: "last", Key: fmt.Sprintf("pod-%d", i), Value: json.RawMessage(fmt.Sprint(j))},
				}
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := nd.client().Ops(rctx, "fleet", list)
				cancel()
				led.mu.Lock()
				if err == nil {
					led.acked++
					led.ackedMembers = append(led.ackedMembers, member)
				} else {
					led.uncertain++
					led.uncertainMembers = append(led.uncertainMembers, member)
				}
				led.mu.Unlock()
				if err != nil && ctx.Err() == nil {
					time.Sleep(50 * time.Millisecond) // back off while the node is down
				}
			}
		}()
	}

	// Under load: SIGKILL pod-1 and restart it with its file; SIGSTOP pod-2 for 2s.
	waitWrites(t, &led, 100)
	nodes[1].proc.kill(t)
	waitWrites(t, &led, 200)
	restarted := startSidecar(t, bin, nodes[1].env)
	nodes[1].mu.Lock()
	nodes[1].proc = restarted
	nodes[1].mu.Unlock()
	waitWrites(t, &led, 300)
	if err := nodes[2].proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitWrites(t, &led, 400)
	if d := 2*time.Second - time.Since(stopped); d > 0 {
		time.Sleep(d) // keep pod-2 stopped for a while, writes going on elsewhere
	}
	if err := nodes[2].proc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitWrites(t, &led, 500)
	stop()
	wg.Wait()
	t.Logf("writes: %d acknowledged, %d uncertain", led.acked, led.uncertain)

	// Convergence: every node reads the same counter, between the acknowledged writes and
	// those plus the uncertain ones; every acknowledged member; the same map.
	var counts []int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		counts = counts[:0]
		var sets [][]string
		var maps []string
		for _, nd := range nodes {
			snap, err := nd.client().Get(context.Background(), "fleet")
			if err != nil {
				counts = append(counts, -1)
				continue
			}
			counts = append(counts, snap.Counters["orders"])
			sets = append(sets, snap.Sets["seen"])
			m, _ := json.Marshal(snap.Maps["last"])
			maps = append(maps, string(m))
		}
		same := len(sets) == n
		for i := 1; same && i < n; i++ {
			same = counts[i] == counts[0] && slices.Equal(sets[i], sets[0]) && maps[i] == maps[0]
		}
		if same {
			if got := counts[0]; got < led.acked || got > led.acked+led.uncertain {
				t.Fatalf("converged counter %d, want between %d acknowledged and %d with every uncertain write", got, led.acked, led.acked+led.uncertain)
			}
			for _, m := range led.ackedMembers {
				if _, ok := slices.BinarySearch(sets[0], m); !ok {
					t.Fatalf("acknowledged set member %s lost", m)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence after 30s: counters %v (acknowledged %d, uncertain %d)", counts, led.acked, led.uncertain)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}

	// SIGTERM right after an acknowledged write: the write reaches the others although
	// the node is gone (Close pushes the last deltas).
	if _, err := nodes[4].client().Incr(context.Background(), "fleet", "final", 1000, 0); err != nil {
		t.Fatal(err)
	}
	if err := nodes[4].proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := <-nodes[4].proc.done
	nodes[4].proc.done <- err // for the cleanup, which waits for it
	if err != nil {
		t.Fatalf("pod-4 exited with %v after SIGTERM\n%s", err, nodes[4].proc.logs)
	}
	waitFinal := time.Now().Add(10 * time.Second)
	for _, nd := range nodes[:4] {
		for {
			v, err := nd.client().Counter(context.Background(), "fleet", "final")
			if err == nil && v == 1000 {
				break
			}
			if time.Now().After(waitFinal) {
				t.Fatalf("%s reads final=%d (%v) after pod-4's SIGTERM, want 1000", nd.name, v, err)
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
	}
	nodes = nodes[:4]

	// A node whose file is lost comes back as a new replica and catches up by full state.
	nodes[3].proc.kill(t)
	if err := os.Remove(nodes[3].env["CTXPROP_STORE_PATH"]); err != nil {
		t.Fatal(err)
	}
	nodes[3].mu.Lock()
	nodes[3].proc = startSidecar(t, bin, nodes[3].env)
	nodes[3].mu.Unlock()
	want, err := nodes[0].client().Get(context.Background(), "fleet")
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := json.Marshal(want)
	caughtUp := time.Now().Add(20 * time.Second)
	for {
		got, err := nodes[3].client().Get(context.Background(), "fleet")
		gotJSON, _ := json.Marshal(got)
		if err == nil && string(gotJSON) == string(wantJSON) {
			break
		}
		if time.Now().After(caughtUp) {
			t.Fatalf("pod-3 restarted without its file did not catch up in 20s: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}

	// Every node lists every other running node alive, and has exchanged traffic.
	listed := time.Now().Add(20 * time.Second)
	for _, nd := range nodes {
		for {
			peers, err := nd.client().Peers(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			alive := map[string]bool{}
			var in, out uint64
			for _, p := range peers {
				if p.State == "alive" {
					alive[strings.SplitN(p.Name, "/", 2)[0]] = true
				}
				in, out = in+p.BytesIn, out+p.BytesOut
			}
			ok := in > 0 && out > 0
			for _, other := range nodes {
				ok = ok && (other == nd || alive[other.name])
			}
			if ok {
				break
			}
			if time.Now().After(listed) {
				t.Fatalf("%s lists %+v, want every other node alive and traffic both ways", nd.name, peers)
			}
			time.Sleep(100 * time.Millisecond) // polling with a deadline
		}
	}
}

// waitWrites waits until at least total writes finished, acknowledged or not.
func waitWrites(t *testing.T, led *ledger, total int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		led.mu.Lock()
		done := led.acked + led.uncertain
		led.mu.Unlock()
		if done >= total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes after 60s, want %d", done, total)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}
