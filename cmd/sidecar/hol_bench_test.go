//go:build linux

// It needs root, iproute2 and iptables.

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
)

// BenchmarkSync_HeadOfLine measures replication between healthy sidecars while one peer
// is cut off but not yet declared dead (issue 11, SPEC §7: "Sends to one slow or
// unreachable peer never delay sends to others").
//
// Five `sidecar run` processes, each in its own network namespace on a bridge, with a
// keyring and the default 200 ms rounds and fan-out 3. Node 0 writes a probe ten times a
// second: a new context holding one map entry of 2 KiB (random, so deflate does not
// shrink it), so that every delta message is over one UDP packet and goes by TCP, as the
// joined deltas of a busy round do. Nodes 1–3 watch every context (GET /v1/watch); a
// probe's latency is from the acknowledgement of its write on node 0 to its event on a
// watcher. First the baseline with every node up, then cycles in which node 4 is cut off
// with iptables inside its namespace (SYNs to it are dropped: a dial to it hangs until
// memberlist's TCPTimeout), probes written until node 0 declares node 4 dead, then heal.
//
//	go test -run '^$' -bench 'BenchmarkSync_HeadOfLine' -benchtime 1x -v ./cmd/sidecar/
//
// It reports p50/p90/p99/max of node 0 → node 1 ("pair") and of node 0 → every healthy
// node (the last of nodes 1–3, "all") for both phases, and the ratios cut/uncut, and
// node 0's send-queue metrics at the end.
func BenchmarkSync_HeadOfLine(b *testing.B) {
	const (
		n        = 5
		cutNode  = n - 1
		baseline = 200 // probes with every node up
		cycles   = 5
		every    = 100 * time.Millisecond
	)
	lab := newNetLab(b, n)
	bin := buildSidecar(b)
	dir := b.TempDir()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		b.Fatal(err)
	}
	keyFile := filepath.Join(dir, "sync.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	peers := make([]string, n)
	for i := range peers {
		peers[i] = lab.ip(i) + ":7403"
	}
	clients := make([]*admin.Client, n)
	for i := range clients {
		clients[i], _ = startInNamespace(b, bin, lab.ns[i], lab.ip(i), map[string]string{
			"CTXPROP_NODE_NAME":     fmt.Sprintf("hol-%d", i),
			"CTXPROP_STORE_PATH":    filepath.Join(dir, fmt.Sprintf("hol-%d.db", i)),
			"CTXPROP_SYNC_PEERS":    strings.Join(peers, ","),
			"CTXPROP_SYNC_KEY_FILE": keyFile,
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// aliveOn counts the peers node i sees alive, and whether the cut node is one.
	aliveOn := func(i int) (int, bool) {
		ps, err := clients[i].Peers(ctx)
		if err != nil {
			return 0, false
		}
		alive, cut := 0, false
		for _, p := range ps {
			if p.State == "alive" {
				alive++
				cut = cut || strings.HasPrefix(p.Name, fmt.Sprintf("hol-%d/", cutNode))
			}
		}
		return alive, cut
	}
	waitAlive := func(what string) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			ok := true
			for i := range clients {
				alive, _ := aliveOn(i)
				ok = ok && alive == n-1
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not every node sees %d alive peers after 60s", what, n-1)
			}
			time.Sleep(100 * time.Millisecond) // polling with a deadline
		}
	}
	waitAlive("at start")

	var mu sync.Mutex
	written := map[string]time.Time{}
	phase := map[string]string{}
	seen := make([]map[string]time.Time, n)
	for i := 1; i < cutNode; i++ {
		seen[i] = map[string]time.Time{}
		w, err := clients[i].Watch(ctx, "", 0)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		go func() {
			for {
				ev, err := w.Next()
				if err != nil {
					return
				}
				now := time.Now()
				if ev.Type != admin.EventChange || !strings.HasPrefix(ev.Context, "probe-") {
					continue
				}
				mu.Lock()
				if _, ok := seen[i][ev.Context]; !ok {
					seen[i][ev.Context] = now
				}
				mu.Unlock()
			}
		}()
	}

	value := make([]byte, 1536)
	seq := 0
	probe := func(ph string) {
		if _, err := rand.Read(value); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("probe-%d", seq)
		seq++
		v, _ := json.Marshal(base64.StdEncoding.EncodeToString(value))
		if err := clients[0].Put(ctx, name, "p", "v", v, 0); err != nil {
			b.Fatalf("write %s on node 0: %v", name, err)
		}
		mu.Lock()
		written[name], phase[name] = time.Now(), ph
		mu.Unlock()
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	b.ResetTimer()
	for range baseline {
		<-tick.C
		probe("uncut")
	}
	var windows []time.Duration
	for c := range cycles {
		lab.cut(cutNode)
		cutAt := time.Now()
		for {
			<-tick.C
			if _, cut := aliveOn(0); !cut {
				break
			}
			probe("cut")
			if time.Since(cutAt) > 60*time.Second {
				b.Fatalf("cycle %d: node 0 still sees node %d alive 60s after the cut", c, cutNode)
			}
		}
		windows = append(windows, time.Since(cutAt).Round(100*time.Millisecond))
		lab.heal(cutNode)
		waitAlive(fmt.Sprintf("after heal %d", c))
	}
	b.StopTimer()

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for i := 1; i < cutNode; i++ {
			missing += len(written) - len(seen[i])
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d probe events not seen on the healthy nodes 60s after the last write", missing)
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
	mu.Lock()
	defer mu.Unlock()
	lat := map[string][]time.Duration{}
	for name, at := range written {
		last := time.Duration(0)
		for i := 1; i < cutNode; i++ {
			last = max(last, seen[i][name].Sub(at))
		}
		lat[phase[name]+"/pair"] = append(lat[phase[name]+"/pair"], seen[1][name].Sub(at))
		lat[phase[name]+"/all"] = append(lat[phase[name]+"/all"], last)
	}
	b.Logf("cut windows (cut until node 0 declared node %d dead): %v", cutNode, windows)
	// What node 0's send queues did (absent before issue 11's send queues).
	if resp, err := http.Get("http://" + lab.ip(0) + ":7400/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "ctxprop_sync_send_") {
				b.Logf("node 0: %s", line)
			}
		}
	}
	b.Logf("%-12s %6s %8s %8s %8s %8s", "latency", "probes", "p50", "p90", "p99", "max")
	for _, to := range []string{"pair", "all"} {
		var base []time.Duration
		for _, ph := range []string{"uncut", "cut"} {
			l := lat[ph+"/"+to]
			slices.Sort(l)
			q := []time.Duration{quantile(l, 0.50), quantile(l, 0.90), quantile(l, 0.99), l[len(l)-1]}
			b.Logf("%-12s %6d %8s %8s %8s %8s", ph+"/"+to, len(l), q[0].Round(time.Millisecond), q[1].Round(time.Millisecond), q[2].Round(time.Millisecond), q[3].Round(time.Millisecond))
			for j, name := range []string{"p50", "p90", "p99", "max"} {
				b.ReportMetric(float64(q[j].Milliseconds()), ph+"_"+to+"_"+name+"_ms")
			}
			if ph == "uncut" {
				base = q
				continue
			}
			ratios := make([]string, len(q))
			for j := range q {
				ratios[j] = strconv.FormatFloat(float64(q[j])/float64(base[j]), 'f', 2, 64) + "×"
			}
			b.Logf("%-12s %6s %8s %8s %8s %8s", "cut/uncut", "", ratios[0], ratios[1], ratios[2], ratios[3])
		}
	}
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
