package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/config"
	"github.com/hashicorp/go-hclog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// runDemo is `sidecar demo`: three tiny services, each behind its own sidecar on loopback,
// call each other in a chain, and the demo walks through the four uses of SPEC §1 against
// them, printing what it does and what it sees. Everything lives in a temporary
// directory that is removed at the end.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chains := fs.Int("requests", 20, "how many requests to send through the chain")
	verbose := fs.Bool("v", false, "show the sidecars' logs")
	clusters := fs.Int("clusters", 0, "instead, run this many clusters of two sidecars sharing a context through an embedded NATS (the relay block)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *clusters != 0 {
		logOut := io.Discard
		if *verbose {
			logOut = stderr
		}
		return runClusterDemo(ctx, *clusters, stdout, logOut)
	}
	dir, err := os.MkdirTemp("", "ctxprop-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	logOut := io.Discard
	if *verbose {
		logOut = stderr
	}
	d := &demo{out: stdout, dir: dir, logOut: logOut}
	defer func() {
		if cerr := d.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := d.start(); err != nil {
		return err
	}
	steps := []func(context.Context) error{d.globalState, func(ctx context.Context) error { return d.telemetry(ctx, *chains) }, d.checkpoint, d.flags, d.trust}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := step(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "\nDone. Each sidecar answered on its own admin API (%s), which stop with the demo.\n", d.adminAddrs())
	fmt.Fprintln(stdout, "`sidecar run` runs one for real, its admin API on http://127.0.0.1:7400 (where `sidecar ctl` looks by default).")
	return nil
}

// service is one demo service: an app and the sidecar in front of and behind it.
type service struct {
	name   string
	next   *service // the service this one calls; nil for the last
	node   *node
	app    *http.Server
	client *admin.Client
	http   *http.Client // the app's HTTP client, through its sidecar's outbound proxy

	mu   sync.Mutex
	seen map[string]http.Header // request headers the app received, by trace-id

	// pause, when set, holds the request of that trace-id in this app until release is
	// closed, after signalling arrived: the demo changes a flag while a chain is in flight.
	pause   string
	arrived chan struct{}
	release chan struct{}
}

type demo struct {
	out      io.Writer
	dir      string
	logOut   io.Writer
	tp       *sdktrace.TracerProvider
	services []*service
}

func (d *demo) start() error {
	// The SDK provider makes every hop start a span: same trace-id, new parent-id. No
	// exporter: the demo only shows the headers.
	d.tp = sdktrace.NewTracerProvider()
	names := []string{"frontend", "orders", "payments"}
	for _, name := range names {
		d.services = append(d.services, &service{name: name})
	}
	for i := range d.services[:len(d.services)-1] {
		d.services[i].next = d.services[i+1]
	}
	// Every sidecar knows the others' peer addresses, as a static list or the DNS of a
	// headless Service would tell it in a cluster.
	syncAddrs := make([]string, len(names))
	for i := range syncAddrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		syncAddrs[i] = ln.Addr().String()
		ln.Close()
	}
	// One secret keys the fleet, as the Secret the Kubernetes injector mounts does: it
	// authenticates and encrypts peer traffic, and each sidecar signs the context it
	// passes on, so the next one can tell it from a forgery (SPEC §4a).
	keyFile := filepath.Join(d.dir, "fleet.key")
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "Starting %d services, each behind its own sidecar on loopback, replicating with each other\n(data in %s)\n\n", len(names), d.dir)
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tAPP\tSIDECAR INBOUND\tOUTBOUND (HTTP_PROXY)\tADMIN API\tPEER SYNC")
	// Start from the end of the chain so each app knows where its callee's sidecar is.
	for i := len(d.services) - 1; i >= 0; i-- {
		s := d.services[i]
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		s.app = &http.Server{Handler: d.appHandler(s), ReadHeaderTimeout: 5 * time.Second}
		go s.app.Serve(ln)

		cfg := config.DefaultConfig()
		cfg.Node.Name = s.name
		cfg.Log.Level = "warn"
		cfg.Store.Path = filepath.Join(d.dir, s.name, "ctxprop.db")
		cfg.Store.CommitWindow = 20 * time.Millisecond
		cfg.Admin.Address = "127.0.0.1:0"
		cfg.Inbound.Address = "127.0.0.1:0"
		cfg.Inbound.App = ln.Addr().String()
		cfg.Outbound.Address = "127.0.0.1:0"
		cfg.Outbound.TransparentAddress = "" // several sidecars in one process, and no rules redirect to any
		cfg.Sync.Address = syncAddrs[i]
		cfg.Sync.Peers = syncAddrs
		cfg.Sync.KeyFile = keyFile
		if i == 0 {
			// frontend is the edge: its callers are outside the fleet, and it takes the
			// context they name in baggage ctx.name (never their ctx.flag.* members).
			cfg.Inbound.ContextBaggage = "ctx.name"
		}
		cfg.Flags.Pinned = []string{"new-checkout"}
		cfg.Flags.TargetingKeyHeader = "X-User"
		log := hclog.New(&hclog.LoggerOptions{Name: s.name, Level: hclog.Warn, Output: d.logOut})
		n, err := startNode(cfg, log, d.tp)
		if err != nil {
			return fmt.Errorf("start sidecar of %s: %w", s.name, err)
		}
		s.node = n
		s.client = admin.NewClient("http://"+n.admin.Addr().String(), nil)
		proxyURL := &url.URL{Scheme: "http", Host: n.proxy.OutboundAddr().String()}
		s.http = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 10 * time.Second}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", s.name, ln.Addr(), n.proxy.InboundAddr(), n.proxy.OutboundAddr(), n.admin.Addr(), syncAddrs[i])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Wait until every sidecar sees the two others alive.
	return waitFor(context.Background(), 15*time.Second, func() bool {
		for _, s := range d.services {
			peers, err := s.client.Peers(context.Background())
			alive := 0
			for _, p := range peers {
				if p.State == "alive" {
					alive++
				}
			}
			if err != nil || alive < len(d.services)-1 {
				return false
			}
		}
		return true
	})
}

// appHandler is a service's application code. It knows nothing of ctxprop beyond
// forwarding `traceparent` (as any OpenTelemetry-instrumented app does) and, to record a
// workflow step, adding a `ctx-ops` header to its response. The sidecar supplies the
// context on the next hop (correlation by trace-id), counts the request, applies the ops,
// and hands the app the flags pinned for the chain as ctx-flag-* headers.
func (d *demo) appHandler(s *service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traceID := traceIDOf(r.Header.Get("traceparent"))
		s.mu.Lock()
		if s.seen == nil {
			s.seen = map[string]http.Header{}
		}
		s.seen[traceID] = r.Header.Clone()
		hold := s.pause != "" && s.pause == traceID
		s.mu.Unlock()
		if hold {
			close(s.arrived)
			<-s.release
		}
		step := fmt.Sprintf(`put;map="steps";key=%q;value="done"`, s.name)
		if s.next != nil {
			req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, "http://"+s.next.node.proxy.InboundAddr().String()+"/"+s.next.name, nil)
			req.Header.Set("traceparent", r.Header.Get("traceparent"))
			// Outbound ctx-ops from the app are applied by its own sidecar, then stripped.
			req.Header.Set("ctx-ops", fmt.Sprintf(`incr;key="calls.%s-to-%s"`, s.name, s.next.name))
			resp, err := s.http.Do(req)
			if err != nil {
				http.Error(w, "calling "+s.next.name+": "+err.Error(), http.StatusBadGateway)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				http.Error(w, s.next.name+" answered "+resp.Status, http.StatusBadGateway)
				return
			}
		}
		w.Header().Set("ctx-ops", step)
		fmt.Fprintf(w, "%s ok\n", s.name)
	})
}

func (d *demo) close() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range d.services {
		if s.node != nil {
			errs = append(errs, s.node.close(ctx))
		}
		if s.app != nil {
			errs = append(errs, s.app.Shutdown(ctx))
		}
	}
	if d.tp != nil {
		errs = append(errs, d.tp.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// adminAddrs names each service's admin API: the demo's listen on random loopback ports,
// not on the 7400 of `sidecar run`.
func (d *demo) adminAddrs() string {
	var parts []string
	for _, s := range d.services {
		parts = append(parts, s.name+" http://"+s.node.admin.Addr().String())
	}
	return strings.Join(parts, ", ")
}

func (d *demo) section(title string) {
	fmt.Fprintf(d.out, "\n== %s\n\n", title)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "  "+format+"\n", args...)
}

// chain sends one request to the first service's sidecar, as a client at the edge would,
// with a context name and pinned flags in baggage and a fresh trace.
func (d *demo) chain(ctx context.Context, name string, flags map[string]string, traceID string) error {
	first := d.services[0]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+first.node.proxy.InboundAddr().String()+"/checkout", nil)
	if err != nil {
		return err
	}
	bag := []string{"ctx.name=" + name, "user.tier=gold"}
	for k, v := range flags {
		bag = append(bag, "ctx.flag."+k+"="+v)
	}
	sort.Strings(bag)
	req.Header.Set("baggage", strings.Join(bag, ","))
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	req.Header.Set("X-User", "user-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("request through the chain: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("request through the chain: %s", resp.Status)
	}
	return nil
}

// waitFor polls until cond holds: request-path writes are committed within the store's
// commit window, so a read right after a request may not see them yet.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for the sidecars")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// 1. Global state: shared maps, sets and counters through the admin API, replicated.
func (d *demo) globalState(ctx context.Context) error {
	d.section("1. Global state: maps, sets and counters any service reads and writes, fleet-wide")
	first, last := d.services[0], d.services[len(d.services)-1]
	d.say("on %s: PUT  /v1/contexts/fleet/maps/config/checkout-timeout  {\"value\":\"2s\"}", first.name)
	if err := first.client.Put(ctx, "fleet", "config", "checkout-timeout", json.RawMessage(`"2s"`), 0); err != nil {
		return err
	}
	d.say("on %s: POST /v1/contexts/fleet/sets/regions  {\"add\":[\"eu-west\",\"us-east\"]}", first.name)
	if _, err := first.client.UpdateSet(ctx, "fleet", "regions", []string{"eu-west", "us-east"}, nil, 0); err != nil {
		return err
	}
	for _, s := range d.services {
		d.say("on %s: POST /v1/contexts/fleet/counters/deploys  {\"by\":1}", s.name)
		if _, err := s.client.Incr(ctx, "fleet", "deploys", 1, 0); err != nil {
			return err
		}
	}
	want := int64(len(d.services))
	for _, s := range d.services {
		if err := waitFor(ctx, 10*time.Second, func() bool {
			v, err := s.client.Counter(ctx, "fleet", "deploys")
			m, _ := s.client.Set(ctx, "fleet", "regions")
			return err == nil && v == want && len(m) == 2
		}); err != nil {
			return fmt.Errorf("%s: replication of fleet: %w", s.name, err)
		}
	}
	snap, err := last.client.Get(ctx, "fleet")
	if err != nil {
		return err
	}
	b, _ := json.Marshal(snap)
	d.say("on %s: GET /v1/contexts/fleet  → %s", last.name, b)
	d.say("deploys = %d on every sidecar: one increment made on each, summed fleet-wide.", want)
	d.say("Every write was on disk (fsync) before its API call answered, then replicated as a delta.")
	return nil
}

// 2. Telemetry: the sidecars count requests per context with no app code.
func (d *demo) telemetry(ctx context.Context, n int) error {
	d.section(fmt.Sprintf("2. Telemetry: %d requests through frontend → orders → payments, counted by each sidecar", n))
	for i := range n {
		if err := d.chain(ctx, "checkout", nil, fmt.Sprintf("4bf92f3577b34da6a3ce929d%08x", i+1)); err != nil {
			return err
		}
	}
	// Each hop's sidecar counts once; replication sums them into one fleet-wide counter.
	hops := int64(n * len(d.services))
	for _, s := range d.services {
		if err := waitFor(ctx, 10*time.Second, func() bool {
			v, err := s.client.Counter(ctx, "checkout", "http.requests")
			return err == nil && v >= hops
		}); err != nil {
			return fmt.Errorf("%s: telemetry: %w", s.name, err)
		}
	}
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SIDECAR\tCONTEXT\tCOUNTERS")
	for _, s := range d.services {
		snap, err := s.client.Get(ctx, "checkout")
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(snap.Counters))
		for k := range snap.Counters {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, snap.Counters[k]))
		}
		fmt.Fprintf(tw, "  %s\tcheckout\t%s\n", s.name, strings.Join(parts, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	d.say("http.requests = %d on every sidecar: %d requests × %d hops, each counted by its inbound", hops, n, len(d.services))
	d.say("proxy and summed fleet-wide. calls.* come from ctx-ops headers the apps sent.")
	// The claim below is checked, not assumed: the edge client's baggage carried user.tier,
	// which no app forwards, so a hop that sees ctx.name without it got the context from
	// the sidecars.
	last := fmt.Sprintf("4bf92f3577b34da6a3ce929d%08x", n)
	for _, s := range d.services[1:] {
		s.mu.Lock()
		bag := s.seen[last].Get("baggage")
		s.mu.Unlock()
		if !strings.Contains(bag, "ctx.name=checkout") || strings.Contains(bag, "user.tier") {
			return fmt.Errorf("telemetry: %s's app saw baggage %q, want ctx.name=checkout added by the sidecars and no user.tier", s.name, bag)
		}
	}
	d.say("frontend's and orders' apps forwarded only traceparent (and ctx-ops for their own sidecar):")
	d.say("each app's sidecar matched its outbound call to the inbound request in flight by trace-id and")
	d.say("added the context (baggage ctx.name=checkout, signed) for the next hop.")
	return nil
}

// 3. Workflow checkpoints: each hop records its step; any pod can read where to resume.
func (d *demo) checkpoint(ctx context.Context) error {
	d.section("3. Workflow checkpoints: each hop records its step in the context order-1001")
	c := d.services[0].client
	d.say("PUT /v1/contexts/order-1001/ttl {\"ttl\":\"1h\"}  (the checkpoint cleans itself up)")
	if err := c.SetTTL(ctx, "order-1001", time.Hour, false); err != nil {
		return err
	}
	if err := d.chain(ctx, "order-1001", nil, "0af7651916cd43dd8448eb211c80319c"); err != nil {
		return err
	}
	for _, s := range d.services {
		var steps map[string]json.RawMessage
		if err := waitFor(ctx, 10*time.Second, func() bool {
			var err error
			steps, err = s.client.Map(ctx, "order-1001", "steps")
			return err == nil && len(steps) == len(d.services)
		}); err != nil {
			return fmt.Errorf("%s: checkpoint: %w", s.name, err)
		}
		b, _ := json.Marshal(steps)
		d.say("%-9s sidecar: steps = %s", s.name, b)
	}
	snap, err := c.Get(ctx, "order-1001")
	if err != nil {
		return err
	}
	if snap.ExpiresAt != nil {
		d.say("order-1001 expires at %s", snap.ExpiresAt.Format(time.RFC3339))
	}
	d.say("Each step was written by one sidecar and is read from every one: after a crash, any pod")
	d.say("reads the steps map to know where to resume.")
	return nil
}

// 4. Feature flags: a flag pinned at the edge stays the same on every hop of a chain, even
// when it changes while the chain runs.
func (d *demo) flags(ctx context.Context) error {
	d.section("4. Feature flags: pinned at the edge, the same on every hop even across a flip")
	first, middle, last := d.services[0], d.services[1], d.services[len(d.services)-1]
	def := func(variant string) string {
		return `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"` + variant + `"}`
	}
	d.say("on %s: PUT /v1/flags/new-checkout %s", first.name, def("off"))
	if err := d.putFlag(ctx, first, "new-checkout", def("off")); err != nil {
		return err
	}
	if err := d.waitFlag(ctx, "new-checkout", `"off"`); err != nil {
		return err
	}

	// Chain A starts and is held in the orders app while the flag flips.
	const chainA, chainB = "11111111111111111111111111111111", "22222222222222222222222222222222"
	middle.mu.Lock()
	middle.pause, middle.arrived, middle.release = chainA, make(chan struct{}), make(chan struct{})
	middle.mu.Unlock()
	errA := make(chan error, 1)
	go func() { errA <- d.chain(ctx, "checkout", nil, chainA) }()
	select {
	case <-middle.arrived:
	case err := <-errA:
		return fmt.Errorf("chain A ended early: %v", err)
	case <-time.After(10 * time.Second):
		return errors.New("chain A did not reach orders")
	}
	d.say("chain A entered frontend (the edge pinned new-checkout there) and is held in orders")
	d.say("on %s: PUT /v1/flags/new-checkout %s   ← the flip, while chain A is in flight", last.name, def("on"))
	if err := d.putFlag(ctx, last, "new-checkout", def("on")); err != nil {
		return err
	}
	if err := d.waitFlag(ctx, "new-checkout", `"on"`); err != nil {
		return err
	}
	d.say("the flip reached every sidecar; releasing chain A")
	close(middle.release)
	if err := <-errA; err != nil {
		return err
	}
	middle.mu.Lock()
	middle.pause = ""
	middle.mu.Unlock()
	d.say("chain B starts after the flip")
	if err := d.chain(ctx, "checkout", nil, chainB); err != nil {
		return err
	}

	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CHAIN\tAPP\tctx-flag-new-checkout\ttraceparent\tbaggage")
	for _, chain := range []struct{ name, trace string }{{"A", chainA}, {"B", chainB}} {
		for _, s := range d.services {
			s.mu.Lock()
			h := s.seen[chain.trace]
			s.mu.Unlock()
			if h == nil {
				return fmt.Errorf("%s saw no request of chain %s", s.name, chain.name)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", chain.name, s.name, h.Get("ctx-flag-new-checkout"), h.Get("traceparent"), h.Get("baggage"))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	d.say("Chain A kept the value pinned at its edge on every hop although the flag flipped mid-chain;")
	d.say("chain B sees the new value. Same trace-id on every hop, a new parent-id per sidecar span.")
	d.say("Apps read the flag from a plain header; OpenFeature SDKs evaluate it over OFREP on their")
	d.say("sidecar's admin API (%s).", d.adminAddrs())
	return nil
}

func (d *demo) putFlag(ctx context.Context, s *service, key, definition string) error {
	return putDemoFlag(ctx, s.node, s.name, key, definition)
}

// putDemoFlag defines flag key on the sidecar n (named name in errors) through its admin API,
// as an operator would with curl.
func putDemoFlag(ctx context.Context, n *node, name, key, definition string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+n.admin.Addr().String()+"/v1/flags/"+key, strings.NewReader(definition))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json") // a write without it is refused (SPEC §4a)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("PUT /v1/flags/%s on %s: %s: %s", key, name, resp.Status, b)
	}
	return nil
}

// waitFlag waits until every sidecar serves key with the given default variant.
func (d *demo) waitFlag(ctx context.Context, key, variant string) error {
	return waitFor(ctx, 10*time.Second, func() bool {
		for _, s := range d.services {
			resp, err := http.Get("http://" + s.node.admin.Addr().String() + "/v1/flags/" + key)
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"defaultVariant":`+variant) {
				return false
			}
		}
		return true
	})
}

// traceIDOf returns the trace-id of a traceparent value, or "".
func traceIDOf(traceparent string) string {
	if len(traceparent) >= 35 {
		return traceparent[3:35]
	}
	return ""
}

// 5. Trust: a caller outside the fleet that names a context or pins a flag on an inner
// service gets neither; only what a sidecar of the fleet signed is believed.
func (d *demo) trust(ctx context.Context) error {
	d.section("5. Trust: context from outside the fleet is removed, not believed")
	middle := d.services[1]
	const traceID = "33333333333333333333333333333333"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+middle.node.proxy.InboundAddr().String()+"/orders", nil)
	if err != nil {
		return err
	}
	req.Header.Set("baggage", "ctx.name=forged-ctx,ctx.flag.new-checkout=false,user.tier=gold")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	d.say("an outsider calls orders directly: baggage: ctx.name=forged-ctx,ctx.flag.new-checkout=false,user.tier=gold")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	middle.mu.Lock()
	h := middle.seen[traceID]
	middle.mu.Unlock()
	if h == nil {
		return errors.New("orders saw no request from the outsider")
	}
	d.say("orders' app saw baggage %q and ctx-flag-new-checkout %q: the forged value was", h.Get("baggage"), h.Get("ctx-flag-new-checkout"))
	d.say("removed and orders, as the edge of this chain, evaluated the flag itself.")
	if strings.Contains(h.Get("baggage"), "ctx.") {
		return fmt.Errorf("orders' app saw the outsider's context members: %q", h.Get("baggage"))
	}
	if _, err := middle.client.Get(ctx, "forged-ctx"); err == nil {
		return errors.New("the outsider's request created the context forged-ctx")
	}
	d.say("no context forged-ctx exists: the members were removed (ctxprop_proxy_refused_members_total),")
	d.say("the request itself went through. frontend, the edge, takes ctx.name from its callers")
	d.say("(inbound.context_baggage); the sidecars behind it believe only what a sidecar of the fleet")
	d.say("signed with the fleet's key (the ctx-sig header; sync.key_file).")
	return nil
}
