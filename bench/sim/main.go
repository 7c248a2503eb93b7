// Command sim runs the fleet simulator of package sync (issue 4) and prints a table: time
// until an update is visible on every node, replication bytes per node per second under
// the stated write load, and convergence time after a healed partition.
//
//	go run ./bench/sim -nodes 10,100,1000 -seed 1
//
// With -churn it runs a fleet whose pods are replaced again and again instead (issue 11),
// with and without replica retirement side by side, and prints the state the live nodes
// hold over time:
//
//	go run ./bench/sim -churn -nodes 20 -generations 50
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	peersync "github.com/ctxprop/ctxprop/sync"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	nodes := fs.String("nodes", "10,100,1000", "fleet sizes, comma separated")
	seed := fs.Uint64("seed", 1, "random seed")
	writes := fs.Float64("writes", 0, "counter increments per second, fleet-wide; 0 means 100 (spread over all nodes)")
	contexts := fs.Int("contexts", 10, "contexts written to")
	loss := fs.Float64("loss", 0.01, "fraction of messages lost")
	dur := fs.Duration("duration", 20*time.Second, "simulated write period")
	interval := fs.Duration("interval", 200*time.Millisecond, "gossip round")
	fanout := fs.Int("fanout", 3, "peers per round")
	pp := fs.Duration("pushpull", 5*time.Second, "anti-entropy period")
	churn := fs.Bool("churn", false, "replace pods again and again; compare the state held with and without retirement")
	gens := fs.Int("generations", 50, "with -churn: pods each node slot sees in turn")
	every := fs.Duration("every", 2*time.Second, "with -churn: one replacement every")
	retireAfter := fs.Duration("retire-after", 30*time.Second, "with -churn: sync.retire_after")
	grace := fs.Duration("grace", 60*time.Second, "with -churn: store.tombstone_ttl")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *churn {
		n, err := strconv.Atoi(strings.TrimSpace(*nodes))
		if err != nil {
			return fmt.Errorf("-nodes %q: with -churn, one fleet size: %w", *nodes, err)
		}
		opt := peersync.ChurnOptions{Nodes: n, Generations: *gens, Seed: *seed, Every: *every, RetireAfter: *retireAfter,
			Grace: *grace, Contexts: *contexts, WritesPerSecond: *writes, Interval: *interval, Fanout: *fanout, PushPull: *pp, Loss: *loss}
		return runChurn(opt)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "N\twrites/s\tupdates\tvisible p50\tvisible p99\tvisible max\tnot visible\tB/s/node mean\tB/s/node max\theal converge\t")
	for _, f := range strings.Split(*nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("-nodes %q: %w", f, err)
		}
		rate := *writes
		if rate == 0 {
			rate = 100
		}
		opt := peersync.SimOptions{Nodes: n, Seed: *seed, Interval: *interval, Fanout: *fanout, PushPullInterval: *pp,
			Loss: *loss, Contexts: *contexts, WritesPerSecond: rate, Duration: *dur}
		start := time.Now()
		r, err := peersync.Simulate(opt)
		if err != nil {
			return err
		}
		opt.PartitionAt, opt.PartitionFor, opt.Duration = 5*time.Second, 10*time.Second, 0
		h, err := peersync.Simulate(opt)
		if err != nil {
			return err
		}
		heal := "not converged"
		if h.Converged {
			heal = h.HealConverge.String()
		}
		fmt.Fprintf(w, "%d\t%.0f\t%d\t%s\t%s\t%s\t%d\t%.0f\t%.0f\t%s\t\n", n, rate, r.Updates,
			r.VisibleP50.Round(time.Millisecond), r.VisibleP99.Round(time.Millisecond), r.VisibleMax.Round(time.Millisecond),
			r.NotVisible, r.BytesPerNodeSecond, r.MaxBytesPerNodeSecond, heal)
		fmt.Fprintf(os.Stderr, "N=%d simulated in %s\n", n, time.Since(start).Round(time.Millisecond))
	}
	return w.Flush()
}

// runChurn prints the state held over a churn run, with retirement and without it.
func runChurn(opt peersync.ChurnOptions) error {
	start := time.Now()
	without, err := peersync.SimulateChurn(opt)
	if err != nil {
		return err
	}
	opt.Retire = true
	with, err := peersync.SimulateChurn(opt)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "time	replaced	replicas/ctx before	replicas/ctx after	B/ctx before	B/ctx after	B/node before	B/node after	after ÷ before (B/node)	")
	for i := range with.Samples {
		a, b := without.Samples[i], with.Samples[i]
		fmt.Fprintf(w, "%s\t%d\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t\n", b.At.Round(time.Second), b.Replaced,
			a.Replicas, b.Replicas, a.BytesPerContext, b.BytesPerContext, a.BytesPerNode, b.BytesPerNode, b.BytesPerNode/a.BytesPerNode)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("%d nodes, %d pods replaced (%d replica ids), %d increments; counters wrong at the end: %d before, %d after; replicas retired: %d\n",
		opt.Nodes, with.Replaced, with.ReplicaIDs, with.Increments, without.Wrong, with.Wrong, with.Retired)
	fmt.Fprintf(os.Stderr, "simulated in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
