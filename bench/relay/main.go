// Command relay measures replication between clusters through NATS JetStream (issue 15):
// two clusters of sidecars (a store, gossip inside the cluster, and the relay each), an
// in-process NATS server with JetStream on loopback, and a writer in each cluster at a
// fixed rate. It prints, per rate, how long a write takes to be visible on the other
// cluster's sidecars (p50, p99, max; from the write being issued, its local durable commit
// included) and the NATS traffic per cluster (bytes per second in and out of the
// cluster's NATS connections, as the server counts them).
//
//	go run ./bench/relay -rates 100,1000 -duration 10s -sidecars 2
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/relay"
	peersync "github.com/ctxprop/ctxprop/sync"
	"github.com/ctxprop/ctxprop/sync/discovery"
	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "relay bench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	rates := fs.String("rates", "100,1000", "writes per second per cluster, comma-separated")
	duration := fs.Duration("duration", 10*time.Second, "how long each rate is held")
	sidecars := fs.String("sidecars", "2", "sidecars per cluster, comma-separated")
	contexts := fs.Int("contexts", 100, "contexts the writes are spread over")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sidecars/cluster\twrites/s/cluster\tfirst p50\tfirst p99\tevery p50\tevery p99\tmax\tseen\tNATS in B/s/cluster\tNATS out B/s/cluster\tmessages/s/cluster\tKV writes/s/cluster\t")
	for _, ns := range strings.Split(*sidecars, ",") {
		n, err := strconv.Atoi(ns)
		if err != nil || n < 1 {
			return fmt.Errorf("-sidecars %q", ns)
		}
		for _, rs := range strings.Split(*rates, ",") {
			rate, err := strconv.Atoi(rs)
			if err != nil || rate < 1 {
				return fmt.Errorf("-rates %q", rs)
			}
			r, err := measure(n, rate, *contexts, *duration)
			if err != nil {
				return err
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%.0f\t%.0f\t%.1f\t%.1f\t\n", n, rate,
				p(r.first, 0.5), p(r.first, 0.99), p(r.every, 0.5), p(r.every, 0.99), p(r.every, 1), r.seen, r.expected, r.in, r.out, r.msgs, r.kv)
		}
	}
	return tw.Flush()
}

type result struct {
	first    []time.Duration // by write: until the first sidecar of the other cluster sees it, sorted
	every    []time.Duration // by write: until every sidecar of the other cluster sees it, sorted
	seen     int             // observations made
	expected int             // writes times the sidecars that should see them
	in, out  float64         // NATS bytes per second per cluster
	msgs, kv float64         // published messages and KV writes per second per cluster
}

// p is the nearest-rank quantile q of sorted ds.
func p(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)].Round(100 * time.Microsecond)
}

// sidecar is a store, its gossip and its relay.
type sidecar struct {
	cluster string
	store   *localstore.Store
	src     *discovery.Multi
	syncer  *peersync.Syncer
	relay   *relay.Relay
	reg     *prometheus.Registry
}

func measure(perCluster, rate, contexts int, d time.Duration) (result, error) {
	dir, err := os.MkdirTemp("", "ctxprop-relay-bench")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true})
	if err != nil {
		return result{}, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return result{}, errors.New("nats-server did not start")
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	clusters := []string{"east", "west"}
	var all []*sidecar
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range all {
			_ = s.relay.Close(ctx)
			_ = s.syncer.Close(ctx)
			_ = s.src.Close()
			_ = s.store.Close()
		}
	}()
	byCluster := map[string][]*sidecar{}
	for _, c := range clusters {
		addrs := make([]string, perCluster)
		for i := range addrs {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return result{}, err
			}
			addrs[i] = ln.Addr().String()
			ln.Close()
		}
		for i := range perCluster {
			s, err := startSidecar(dir, c, i, addrs, ns.ClientURL())
			if s != nil {
				all = append(all, s)
				byCluster[c] = append(byCluster[c], s)
			}
			if err != nil {
				return result{}, err
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range all {
		for s.relay.Ready() != nil {
			if time.Now().After(deadline) {
				return result{}, errors.New("relays not connected within 20s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Each cluster's first sidecar writes; every sidecar of the other cluster observes.
	tracks := map[string]*track{}
	for _, c := range clusters {
		tracks[c] = &track{issued: map[string][]time.Time{}}
	}
	type wkey struct {
		ctx string
		k   int64
	}
	var latMu sync.Mutex
	seenAt := map[wkey][]time.Duration{} // by write of either cluster: its visibility on each observer
	observed := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var obs sync.WaitGroup
	for _, c := range clusters {
		other := clusters[0]
		if c == other {
			other = clusters[1]
		}
		key := "by-" + other
		for _, s := range byCluster[c] {
			sub, err := s.store.Watch(ctx, "", 0)
			if err != nil {
				return result{}, err
			}
			obs.Add(1)
			go func() {
				defer obs.Done()
				seen := map[string]int64{}
				for ev := range sub.Events() {
					v, err := s.store.Counter(ev.Context, key)
					if err != nil || v <= seen[ev.Context] {
						continue
					}
					now := time.Now()
					tr := tracks[other]
					tr.mu.Lock()
					issued := tr.issued[ev.Context]
					latMu.Lock()
					for k := seen[ev.Context]; k < v && int(k) < len(issued); k++ {
						w := wkey{other + "/" + ev.Context, k}
						seenAt[w] = append(seenAt[w], now.Sub(issued[k]))
						observed++
					}
					latMu.Unlock()
					tr.mu.Unlock()
					seen[ev.Context] = v
				}
			}()
		}
	}

	before := natsBytes(ns)
	beforeMetrics := map[string][2]float64{}
	for _, c := range clusters {
		beforeMetrics[c] = relayCounts(byCluster[c])
	}
	start := time.Now()
	var writers sync.WaitGroup
	writeErr := make(chan error, len(clusters))
	total := int(float64(rate) * d.Seconds())
	for _, c := range clusters {
		writers.Add(1)
		go func() {
			defer writers.Done()
			if err := write(byCluster[c][0].store, "by-"+c, tracks[c].issue, rate, total, contexts); err != nil {
				writeErr <- err
			}
		}()
	}
	writers.Wait()
	elapsed := time.Since(start)
	close(writeErr)
	if err := <-writeErr; err != nil {
		return result{}, err
	}
	after := natsBytes(ns)
	var res result
	res.expected = total * perCluster * len(clusters)
	for _, c := range clusters {
		in, out := after[c][0]-before[c][0], after[c][1]-before[c][1]
		res.in += in / elapsed.Seconds() / float64(len(clusters))
		res.out += out / elapsed.Seconds() / float64(len(clusters))
		m := relayCounts(byCluster[c])
		res.msgs += (m[0] - beforeMetrics[c][0]) / elapsed.Seconds() / float64(len(clusters))
		res.kv += (m[1] - beforeMetrics[c][1]) / elapsed.Seconds() / float64(len(clusters))
	}
	// Wait for the stragglers (a few seconds at most), then stop observing.
	wait := time.Now().Add(15 * time.Second)
	for time.Now().Before(wait) {
		latMu.Lock()
		n := observed
		latMu.Unlock()
		if n >= res.expected {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	obs.Wait()
	res.seen = observed
	for _, ds := range seenAt {
		res.first = append(res.first, slices.Min(ds))
		if len(ds) == perCluster {
			res.every = append(res.every, slices.Max(ds))
		}
	}
	slices.Sort(res.first)
	slices.Sort(res.every)
	return res, nil
}

// track records when each write of a cluster was issued.
type track struct {
	mu     sync.Mutex
	issued map[string][]time.Time // by context: when its k-th write was issued
}

func (t *track) issue(name string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.issued[name] = append(t.issued[name], at)
}

// write issues total increments of key at rate per second, spread round-robin over the
// contexts; the writes of one context are sequential (one worker per context group), so
// the k-th write of a context is the one that makes its counter k.
func write(st *localstore.Store, key string, issued func(name string, at time.Time), rate, total, contexts int) error {
	const workers = 32
	chans := make([]chan int, workers)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range chans {
		chans[w] = make(chan int, 4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range chans[w] {
				name := fmt.Sprintf("ctx-%d", i%contexts)
				issued(name, time.Now())
				if _, err := st.Apply(context.Background(), name, []ops.Op{{Kind: ops.Incr, Key: key, By: 1}}, localstore.Durable); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		chans[(i%contexts)%workers] <- i
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func startSidecar(dir, cluster string, i int, peers []string, url string) (*sidecar, error) {
	name := fmt.Sprintf("%s-%d", cluster, i)
	log := hclog.NewNullLogger()
	s := &sidecar{cluster: cluster, reg: prometheus.NewRegistry()}
	s.store = localstore.New(localstore.Options{Path: filepath.Join(dir, name+".db"), Logger: log})
	if err := s.store.Open(); err != nil {
		return nil, err
	}
	src, err := discovery.FromConfig(peers, "", "", discovery.Options{NodeID: name})
	if err != nil {
		return nil, err
	}
	if err := src.Open(context.Background()); err != nil {
		return nil, err
	}
	s.src = src
	if s.syncer, err = peersync.New(peersync.Options{Store: s.store, Logger: log, Source: src, Name: name, Address: peers[i]}); err != nil {
		return nil, err
	}
	if err := s.syncer.Open(); err != nil {
		return nil, err
	}
	if s.relay, err = relay.New(relay.Options{Store: s.store, Logger: log, URLs: []string{url}, Cluster: cluster}); err != nil {
		return nil, err
	}
	if err := s.relay.Open(); err != nil {
		return nil, err
	}
	s.reg.MustRegister(s.relay)
	return s, nil
}

// relayCounts sums the published messages and KV writes of a cluster's relays.
func relayCounts(ss []*sidecar) [2]float64 {
	var c [2]float64
	for _, s := range ss {
		mfs, _ := s.reg.Gather()
		for _, mf := range mfs {
			switch mf.GetName() {
			case "ctxprop_relay_published_messages_total":
				c[0] += mf.GetMetric()[0].GetCounter().GetValue()
			case "ctxprop_relay_states_written_total":
				c[1] += mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
	}
	return c
}

// natsBytes returns, by cluster, the bytes the server received from and sent to the
// cluster's relay connections (named "ctxprop-relay <cluster>").
func natsBytes(ns *server.Server) map[string][2]float64 {
	out := map[string][2]float64{}
	cz, err := ns.Connz(&server.ConnzOptions{Limit: 1024})
	if err != nil {
		return out
	}
	for _, c := range cz.Conns {
		cluster, ok := strings.CutPrefix(c.Name, "ctxprop-relay ")
		if !ok {
			continue
		}
		v := out[cluster]
		v[0] += float64(c.InBytes)
		v[1] += float64(c.OutBytes)
		out[cluster] = v
	}
	return out
}
