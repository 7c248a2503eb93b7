package main

import (
	"context"
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
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
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
	steps := []func(context.Context) error{d.globalState, func(ctx context.Context) error { return d.telemetry(ctx, *chains) }, d.checkpoint, d.flags}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := step(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, "\nDone. Each sidecar answered on its own admin API; `sidecar run` runs one for real.")
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
	seen []http.Header // request headers the app received, for the demo to print
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
	fmt.Fprintf(d.out, "Starting %d services, each behind its own sidecar on loopback (data in %s)\n\n", len(names), d.dir)
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tAPP\tSIDECAR INBOUND\tOUTBOUND (HTTP_PROXY)\tADMIN API")
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
		cfg.Sync.Address = "127.0.0.1:0"
		log := hclog.New(&hclog.LoggerOptions{Name: s.name, Level: hclog.Warn, Output: d.logOut})
		n, err := startNode(cfg, log, d.tp)
		if err != nil {
			return fmt.Errorf("start sidecar of %s: %w", s.name, err)
		}
		s.node = n
		s.client = admin.NewClient("http://"+n.admin.Addr().String(), nil)
		proxyURL := &url.URL{Scheme: "http", Host: n.proxy.OutboundAddr().String()}
		s.http = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 10 * time.Second}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.name, ln.Addr(), n.proxy.InboundAddr(), n.proxy.OutboundAddr(), n.admin.Addr())
	}
	return tw.Flush()
}

// appHandler is a service's application code. It knows nothing of ctxprop beyond
// forwarding `traceparent` (as any OpenTelemetry-instrumented app does) and, to record a
// workflow step, adding a `ctx-ops` header to its response. The sidecar supplies the
// context on the next hop (correlation by trace-id), counts the request, applies the ops,
// and hands the app the flags pinned for the chain as ctx-flag-* headers.
func (d *demo) appHandler(s *service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.Header.Clone())
		s.mu.Unlock()
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
func waitFor(ctx context.Context, cond func() bool) error {
	deadline := time.Now().Add(5 * time.Second)
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

// 1. Global state: shared maps, sets and counters through the admin API.
func (d *demo) globalState(ctx context.Context) error {
	d.section("1. Global state: maps, sets and counters any service can read and write")
	c := d.services[0].client
	d.say("PUT  /v1/contexts/fleet/maps/config/checkout-timeout  {\"value\":\"2s\"}")
	if err := c.Put(ctx, "fleet", "config", "checkout-timeout", json.RawMessage(`"2s"`), 0); err != nil {
		return err
	}
	d.say("POST /v1/contexts/fleet/sets/regions  {\"add\":[\"eu-west\",\"us-east\"]}")
	if _, err := c.UpdateSet(ctx, "fleet", "regions", []string{"eu-west", "us-east"}, nil, 0); err != nil {
		return err
	}
	d.say("POST /v1/contexts/fleet/counters/deploys  {\"by\":1}")
	if _, err := c.Incr(ctx, "fleet", "deploys", 1, 0); err != nil {
		return err
	}
	snap, err := c.Get(ctx, "fleet")
	if err != nil {
		return err
	}
	b, _ := json.Marshal(snap)
	d.say("GET  /v1/contexts/fleet  → %s", b)
	d.say("Every write above was on disk (fsync) before the API answered.")
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
	for _, s := range d.services {
		if err := waitFor(ctx, func() bool {
			v, err := s.client.Counter(ctx, "checkout", "http.requests")
			return err == nil && v >= int64(n)
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
	d.say("http.* counters come from the inbound proxies; calls.* from ctx-ops headers the apps sent.")
	d.say("orders and payments forwarded only traceparent: their sidecars found the context by trace-id.")
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
		if err := waitFor(ctx, func() bool {
			var err error
			steps, err = s.client.Map(ctx, "order-1001", "steps")
			return err == nil && len(steps) > 0
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
	d.say("After a crash, a pod reads the steps map to know where to resume.")
	return nil
}

// 4. Feature flags: a flag pinned at the edge reaches every hop unchanged.
func (d *demo) flags(ctx context.Context) error {
	d.section("4. Feature flags: a flag pinned at the edge is seen by every hop of the chain")
	for _, s := range d.services {
		s.mu.Lock()
		s.seen = nil
		s.mu.Unlock()
	}
	d.say("baggage: ctx.name=checkout,ctx.flag.new-checkout=on,user.tier=gold")
	if err := d.chain(ctx, "checkout", map[string]string{"new-checkout": "on"}, "5b8aa5a2d2c872e8321cf37308d69df2"); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(d.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  APP\tctx-flag-new-checkout\ttraceparent\tbaggage")
	for _, s := range d.services {
		s.mu.Lock()
		var h http.Header
		if len(s.seen) > 0 {
			h = s.seen[len(s.seen)-1]
		}
		s.mu.Unlock()
		if h == nil {
			return fmt.Errorf("%s saw no request", s.name)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.name, h.Get("ctx-flag-new-checkout"), h.Get("traceparent"), h.Get("baggage"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	d.say("Same trace-id on every hop with a new parent-id per sidecar span; the app reads the flag")
	d.say("from a plain header, with no SDK.")
	return nil
}
