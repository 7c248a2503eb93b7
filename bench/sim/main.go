// Command sim runs the fleet simulator of package sync (issue 4) and prints a table: time
// until an update is visible on every node, replication bytes per node per second under
// the stated write load, and convergence time after a healed partition.
//
//	go run ./bench/sim -nodes 10,100,1000 -seed 1
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
	if err := fs.Parse(args); err != nil {
		return err
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
