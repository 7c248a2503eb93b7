package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
)

// refusedMembers reads ctxprop_sync_refused_peers_total{source="membership"} off a
// sidecar's /metrics.
func refusedMembers(t *testing.T, p *sidecarProc) float64 {
	t.Helper()
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ctxprop_sync_refused_peers_total\{source="membership"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no ctxprop_sync_refused_peers_total{source=\"membership\"}:\n%s", body)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSync_MaxPeersFromConfig: sync.max_peers reaches the sidecar's sync layer. A sidecar
// with CTXPROP_SYNC_MAX_PEERS=1 and no key says so at start-up, tracks one of its two
// peers and counts the other as refused on /metrics.
func TestSync_MaxPeersFromConfig(t *testing.T) {
	bin := buildSidecar(t)
	dir := t.TempDir()
	addrs := []string{freePort(t), freePort(t), freePort(t)}
	procs := make([]*sidecarProc, len(addrs))
	for i := range addrs {
		env := map[string]string{
			"CTXPROP_NODE_NAME":    fmt.Sprintf("pod-%d", i),
			"CTXPROP_STORE_PATH":   filepath.Join(dir, fmt.Sprintf("pod-%d.db", i)),
			"CTXPROP_SYNC_ADDRESS": addrs[i],
			"CTXPROP_SYNC_PEERS":   strings.Join(addrs, ","),
		}
		if i == 0 {
			env["CTXPROP_SYNC_MAX_PEERS"] = "1"
		}
		procs[i] = startSidecar(t, bin, env)
		if logs := procs[i].logs.String(); i == 0 && (!strings.Contains(logs, "sync.max_peers") || !strings.Contains(logs, `"max_peers":1`)) {
			t.Errorf("no start-up warning naming sync.max_peers = 1 in:\n%s", logs)
		}
	}
	bounded := procs[0]
	deadline := time.Now().Add(20 * time.Second)
	for refusedMembers(t, bounded) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no refused member counted within 20s\n%s", bounded.logs)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	peers, err := admin.NewClient(bounded.admin, nil).Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) > 1 {
		t.Errorf("pod-0 tracks %d peers with sync.max_peers = 1: %+v", len(peers), peers)
	}
	// The other two, unbounded, see each other and pod-0.
	peers, err = admin.NewClient(procs[1].admin, nil).Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) < 1 {
		t.Errorf("pod-1 tracks no peer")
	}
}
