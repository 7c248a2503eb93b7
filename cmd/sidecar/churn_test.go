package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
)

// TestChurn_RetiresReplacedSidecars runs real `sidecar run` processes as Kubernetes runs
// them through deploys: two stay, and a third slot is replaced again and again by a
// process with a new, empty store (a new replica id, as with an emptyDir). Each writes
// through the admin API and leaves with SIGTERM. Once sync.retire_after and
// store.tombstone_ttl have passed, the contexts on the two that stayed hold state for the
// live replicas only, and every counter reads every increment once.
func TestChurn_RetiresReplacedSidecars(t *testing.T) {
	bin := buildSidecar(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "fleet.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString([]byte("churn-test-fleet-secret-32-bytes"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const generations = 5
	syncAddrs := []string{freePort(t), freePort(t), freePort(t)}
	env := func(name, store, syncAddr string) map[string]string {
		return map[string]string{
			"CTXPROP_NODE_NAME": name, "CTXPROP_STORE_PATH": store, "CTXPROP_SYNC_ADDRESS": syncAddr,
			"CTXPROP_SYNC_PEERS": syncAddrs[0] + "," + syncAddrs[1] + "," + syncAddrs[2], "CTXPROP_SYNC_KEY_FILE": keyFile,
			"CTXPROP_SYNC_RETIRE_AFTER": "2s", "CTXPROP_STORE_TOMBSTONE_TTL": "2s", "CTXPROP_STORE_SWEEP_INTERVAL": "200ms",
			"CTXPROP_STORE_COMMIT_WINDOW": "20ms",
		}
	}
	a := startSidecar(t, bin, env("a", filepath.Join(dir, "a.db"), syncAddrs[0]))
	b := startSidecar(t, bin, env("b", filepath.Join(dir, "b.db"), syncAddrs[1]))
	stayed := []*admin.Client{admin.NewClient(a.admin, nil), admin.NewClient(b.admin, nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var want int64
	for gen := range generations {
		p := startSidecar(t, bin, env(fmt.Sprintf("c-%d", gen), filepath.Join(dir, fmt.Sprintf("c%d.db", gen)), syncAddrs[2]))
		c := admin.NewClient(p.admin, nil)
		for _, cl := range []*admin.Client{c, stayed[gen%2]} {
			if _, err := cl.Incr(ctx, "telemetry", "requests", 5, 0); err != nil {
				t.Fatal(err)
			}
			want += 5
		}
		waitCounter(t, stayed, "telemetry", "requests", want)
		// Deploy: SIGTERM, which pushes the last deltas and leaves the fleet.
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := <-p.done; err != nil {
			t.Fatalf("c-%d did not stop cleanly: %v\n%s", gen, err, p.logs)
		}
		p.done <- nil // for the cleanup
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		settled := true
		for i, cl := range stayed {
			snap, err := cl.Get(ctx, "telemetry")
			if err != nil {
				t.Fatal(err)
			}
			if got := snap.Counters["requests"]; got != want {
				t.Fatalf("sidecar %d reads requests = %d, want %d: an increment was lost or counted twice", i, got, want)
			}
			settled = settled && snap.Replicas == 2
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			for _, cl := range stayed {
				snap, _ := cl.Get(ctx, "telemetry")
				t.Logf("replicas %d", snap.Replicas)
			}
			t.Fatalf("the contexts still hold state of replaced sidecars after %d generations\na:\n%s\nb:\n%s", generations, a.logs, b.logs)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
}

// waitCounter waits until every client reads want.
func waitCounter(t *testing.T, clients []*admin.Client, name, key string, want int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, c := range clients {
			v, err := c.Counter(context.Background(), name, key)
			ok = ok && err == nil && v == want
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s did not reach %d on every sidecar", name, key, want)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}
