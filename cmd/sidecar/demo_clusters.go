package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/config"
	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
)

// clusterDemo is `sidecar demo -clusters N`: N clusters of two sidecars each, gossiping
// only inside their cluster, share a context through an embedded NATS server with
// JetStream (the relay block, issue 15), all on loopback.
type clusterDemo struct {
	out    io.Writer
	dir    string
	logOut io.Writer
	nats   *server.Server
	nodes  []*clusterNode
}

type clusterNode struct {
	cluster, name string
	node          *node
	client        *admin.Client
}

// demoSidecarsPerCluster is the size of each demo cluster.
const demoSidecarsPerCluster = 2

func runClusterDemo(ctx context.Context, clusters int, stdout, logOut io.Writer) (err error) {
	if clusters < 2 || clusters > 8 {
		return fmt.Errorf("%w: -clusters %d: want 2 to 8 clusters", errUsage, clusters)
	}
	dir, err := os.MkdirTemp("", "ctxprop-demo-clusters")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := &clusterDemo{out: stdout, dir: dir, logOut: logOut}
	defer func() {
		if cerr := d.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := d.start(clusters); err != nil {
		return err
	}
	return d.share(ctx)
}

func (d *clusterDemo) start(clusters int) error {
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(d.dir, "nats"),
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("embedded NATS did not start within 10s")
	}
	d.nats = ns
	fmt.Fprintf(d.out, "Starting an embedded NATS server with JetStream at %s and %d clusters of %d sidecars.\n", ns.ClientURL(), clusters, demoSidecarsPerCluster)
	fmt.Fprintf(d.out, "Sidecars gossip only inside their cluster; between clusters every sidecar talks to NATS.\n(data in %s)\n\n", d.dir)
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLUSTER\tSIDECAR\tADMIN API\tPEER SYNC (cluster only)")
	for c := range clusters {
		cluster := fmt.Sprintf("cluster-%c", 'a'+c)
		syncAddrs := make([]string, demoSidecarsPerCluster)
		for i := range syncAddrs {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			syncAddrs[i] = ln.Addr().String()
			ln.Close()
		}
		for i := range demoSidecarsPerCluster {
			name := fmt.Sprintf("%s-%d", cluster, i)
			cfg := config.DefaultConfig()
			cfg.Node.Name = name
			cfg.Log.Level = "warn"
			cfg.Store.Path = filepath.Join(d.dir, name, "ctxprop.db")
			cfg.Store.CommitWindow = 20 * time.Millisecond
			cfg.Admin.Address = "127.0.0.1:0"
			cfg.Inbound.Address = "127.0.0.1:0"
			cfg.Inbound.App = "127.0.0.1:1" // no app: the demo writes through the admin API
			cfg.Outbound.Address = "127.0.0.1:0"
			cfg.Outbound.TransparentAddress = ""
			cfg.Sync.Address = syncAddrs[i]
			cfg.Sync.Peers = syncAddrs
			cfg.Relay.URLs = []string{ns.ClientURL()}
			cfg.Relay.Cluster = cluster
			cfg.Relay.StateInterval = 500 * time.Millisecond
			log := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: d.logOut})
			n, err := startNode(cfg, log, nil)
			if err != nil {
				return fmt.Errorf("start sidecar %s: %w", name, err)
			}
			cn := &clusterNode{cluster: cluster, name: name, node: n, client: admin.NewClient("http://"+n.admin.Addr().String(), nil)}
			d.nodes = append(d.nodes, cn)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", cluster, name, n.admin.Addr(), syncAddrs[i])
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return waitFor(context.Background(), 20*time.Second, func() bool {
		for _, n := range d.nodes {
			if n.node.relay.Ready() != nil {
				return false
			}
		}
		return true
	})
}

// share writes a little of everything in each cluster, then waits until every sidecar of
// every cluster reads all of it.
func (d *clusterDemo) share(ctx context.Context) error {
	fmt.Fprintf(d.out, "\n== One context, every cluster\n\n")
	var clusters []string
	began := time.Now()
	for i, n := range d.nodes {
		if i%demoSidecarsPerCluster != 0 {
			continue
		}
		clusters = append(clusters, n.cluster)
		fmt.Fprintf(d.out, "  on %s: incr orders by 10, add %s to set regions, put checkpoints[%s] = \"done\"\n", n.name, n.cluster, n.cluster)
		if _, err := n.client.Incr(ctx, "checkout", "orders", 10, 0); err != nil {
			return err
		}
		if _, err := n.client.UpdateSet(ctx, "checkout", "regions", []string{n.cluster}, nil, 0); err != nil {
			return err
		}
		if err := n.client.Put(ctx, "checkout", "checkpoints", n.cluster, []byte(`"done"`), 0); err != nil {
			return err
		}
	}
	first := d.nodes[0]
	fmt.Fprintf(d.out, "  on %s: set the context's TTL to 1h, and the flag new-checkout (default on)\n", first.name)
	if err := first.client.SetTTL(ctx, "checkout", time.Hour, false); err != nil {
		return err
	}
	if err := putDemoFlag(ctx, first.node, first.name, "new-checkout", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`); err != nil {
		return err
	}
	want := int64(10 * len(clusters))
	slices.Sort(clusters)
	var last string
	err := waitFor(ctx, 30*time.Second, func() bool {
		for _, n := range d.nodes {
			if msg := d.check(ctx, n, want, clusters); msg != "" {
				last = msg
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("the clusters did not converge within 30s: %s", last)
	}
	fmt.Fprintf(d.out, "\n  converged in %s; what each sidecar reads:\n\n", time.Since(began).Round(time.Millisecond))
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SIDECAR\torders\tregions\tcheckpoints\tTTL left\tflag new-checkout")
	for _, n := range d.nodes {
		snap, err := n.client.Get(ctx, "checkout")
		if err != nil {
			return err
		}
		regions := slices.Clone(snap.Sets["regions"])
		slices.Sort(regions)
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%d done\t%s\ton\n", n.name, snap.Counters["orders"], strings.Join(regions, ","), len(snap.Maps["checkpoints"]), time.Until(*snap.ExpiresAt).Round(time.Minute))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\nDone: orders = %d on every sidecar of every cluster.\n", want)
	return nil
}

// check returns "" when n reads everything the demo wrote, else what is missing.
func (d *clusterDemo) check(ctx context.Context, n *clusterNode, orders int64, clusters []string) string {
	snap, err := n.client.Get(ctx, "checkout")
	if err != nil {
		return n.name + ": " + err.Error()
	}
	regions := slices.Clone(snap.Sets["regions"])
	slices.Sort(regions)
	switch {
	case snap.Counters["orders"] != orders:
		return fmt.Sprintf("%s reads orders = %d, want %d", n.name, snap.Counters["orders"], orders)
	case !slices.Equal(regions, clusters):
		return fmt.Sprintf("%s reads regions %v, want %v", n.name, regions, clusters)
	case len(snap.Maps["checkpoints"]) != len(clusters):
		return fmt.Sprintf("%s reads %d checkpoints, want %d", n.name, len(snap.Maps["checkpoints"]), len(clusters))
	case snap.ExpiresAt == nil:
		return n.name + " has no TTL on checkout"
	}
	resp, err := http.Get("http://" + n.node.admin.Addr().String() + "/v1/flags/new-checkout")
	if err != nil {
		return err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"defaultVariant":"on"`) {
		return n.name + " does not serve flag new-checkout yet"
	}
	return ""
}

func (d *clusterDemo) close() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range d.nodes {
		errs = append(errs, n.node.close(ctx))
	}
	if d.nats != nil {
		d.nats.Shutdown()
		d.nats.WaitForShutdown()
	}
	return errors.Join(errs...)
}
