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

// startPeered starts n real sidecars, unkeyed, each listing all n sync addresses as its
// peers, with extra[i] added to sidecar i's environment.
func startPeered(t *testing.T, n int, extra map[int]map[string]string) []*sidecarProc {
	t.Helper()
	bin := buildSidecar(t)
	dir := t.TempDir()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freePort(t)
	}
	procs := make([]*sidecarProc, n)
	for i := range addrs {
		env := map[string]string{
			"CTXPROP_NODE_NAME":    fmt.Sprintf("pod-%d", i),
			"CTXPROP_STORE_PATH":   filepath.Join(dir, fmt.Sprintf("pod-%d.db", i)),
			"CTXPROP_SYNC_ADDRESS": addrs[i],
			"CTXPROP_SYNC_PEERS":   strings.Join(addrs, ","),
		}
		for k, v := range extra[i] {
			env[k] = v
		}
		procs[i] = startSidecar(t, bin, env)
	}
	return procs
}

// TestSync_MaxPeersFromConfig: sync.max_peers reaches the sidecar's sync layer. A sidecar
// with CTXPROP_SYNC_MAX_PEERS=1 and no key says so at start-up, tracks one of its two
// peers and counts the other as refused on /metrics.
func TestSync_MaxPeersFromConfig(t *testing.T) {
	procs := startPeered(t, 3, map[int]map[string]string{0: {"CTXPROP_SYNC_MAX_PEERS": "1"}})
	if logs := procs[0].logs.String(); !strings.Contains(logs, "sync.max_peers") || !strings.Contains(logs, `"max_peers":1`) {
		t.Errorf("no start-up warning naming sync.max_peers = 1 in:\n%s", logs)
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

// scrape returns a sidecar's /metrics, read as Prometheus would.
func scrape(t *testing.T, p *sidecarProc) string {
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
	return string(body)
}

// metricValue returns the value of the series named exactly by series (name and labels
// as /metrics writes them), and whether there is one.
func metricValue(body, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestSync_PeerMetricsOptIn: by default a sidecar's /metrics has replication series for
// the fleet as a whole (bytes in and out, errors, the lag over peers) and none per peer,
// so that N sidecars scraped export O(N) series, not O(N²) (issue 11); with
// sync.peer_metrics = true the series per peer come back. /v1/peers lists each peer
// either way.
func TestSync_PeerMetricsOptIn(t *testing.T) {
	procs := startPeered(t, 3, map[int]map[string]string{1: {"CTXPROP_SYNC_PEER_METRICS": "true"}})
	plain, opted := procs[0], procs[1]
	ctx := context.Background()
	// Writes on every node, so that each receives from both others.
	for i, p := range procs {
		if _, err := admin.NewClient(p.admin, nil).Incr(ctx, "fleet", fmt.Sprintf("by-%d", i), 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		body := scrape(t, plain)
		in, _ := metricValue(body, "ctxprop_sync_received_bytes_total")
		peers, _ := metricValue(body, "ctxprop_sync_lag_seconds_count")
		v, _ := admin.NewClient(plain.admin, nil).Counter(ctx, "fleet", "by-2")
		if in > 0 && peers == 2 && v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod-0 did not receive from its two peers within 30s:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}

	body := scrape(t, plain)
	for _, series := range []string{"ctxprop_sync_sent_bytes_total", "ctxprop_sync_errors_total", "ctxprop_sync_lag_max_seconds",
		`ctxprop_sync_lag_seconds{quantile="0.99"}`, `ctxprop_sync_peers{state="alive"}`} {
		if _, ok := metricValue(body, series); !ok {
			t.Errorf("default /metrics has no %s", series)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, `peer="`) || strings.HasPrefix(line, "ctxprop_sync_peer_") {
			t.Errorf("default /metrics has a series per peer: %s", line)
		}
	}
	peers, err := admin.NewClient(plain.admin, nil).Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Errorf("/v1/peers lists %d peers, want 2: %+v", len(peers), peers)
	}

	// Opted in: the same fleet-wide series, and one series per peer and metric.
	deadline = time.Now().Add(30 * time.Second)
	for {
		body = scrape(t, opted)
		// A peer is named node.name/replica-id.
		n := 0
		for _, peer := range []string{"pod-0", "pod-2"} {
			m := regexp.MustCompile(`(?m)^ctxprop_sync_peer_received_bytes_total\{peer="` + peer + `/[0-9a-f]+"\} (\S+)$`).FindStringSubmatch(body)
			if m != nil && m[1] != "0" {
				n++
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod-1, with sync.peer_metrics, shows no received bytes per peer for pod-0 and pod-2 within 30s:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	for _, name := range []string{"ctxprop_sync_peer_sent_bytes_total", "ctxprop_sync_peer_errors_total", "ctxprop_sync_peer_lag_seconds"} {
		if got := strings.Count(body, "\n"+name+`{peer="`); got != 2 {
			t.Errorf("opted-in /metrics has %d series of %s, want 2 (one per peer)", got, name)
		}
	}
	if v, ok := metricValue(body, "ctxprop_sync_received_bytes_total"); !ok || v == 0 {
		t.Errorf("opted-in /metrics has no fleet-wide ctxprop_sync_received_bytes_total (%v)", v)
	}
}
