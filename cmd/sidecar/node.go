package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/flags"
	"github.com/ctxprop/ctxprop/headers"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/proxy"
	"github.com/ctxprop/ctxprop/relay"
	peersync "github.com/ctxprop/ctxprop/sync"
	"github.com/ctxprop/ctxprop/webui"
	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"
)

// node is one running sidecar: the store, the admin API and the proxy, wired from a
// config. `sidecar run` runs one; `sidecar demo` runs several in one process.
type node struct {
	cfg   config.Config
	log   hclog.Logger
	tp    trace.TracerProvider // nil: no spans (tracing.mode participate or passthrough)
	store *localstore.Store
	admin *admin.Server
	proxy *proxy.Proxy
	flags *flags.Flags
	sync  *syncPart
	// contextMetrics keeps the per-context telemetry that /metrics exports.
	contextMetrics *proxy.ContextCollector
	// history is the web page's ring of samples; nil with admin.chart_interval = "0".
	history *webui.History
	relay   *relay.Relay // nil without relay.urls
	// keyring is the fleet's secret from sync.key_file; nil without one.
	keyring [][]byte
}

// newLogger builds the logger the config asks for.
func newLogger(cfg config.Config, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       cfg.Node.Name,
		Level:      hclog.LevelFromString(cfg.Log.Level),
		JSONFormat: cfg.Log.Format == "json",
		Output:     w,
	})
}

// startNode opens every part of a sidecar in dependency order; on error it closes what it
// had opened.
// tp gives the tracer for proxied requests, whose spans it exports; nil means no spans
// (tracing.mode participate or passthrough).
func startNode(cfg config.Config, log hclog.Logger, tp trace.TracerProvider) (n *node, err error) {
	n = &node{cfg: cfg, log: log, tp: tp}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close(context.Background()))
			n = nil
		}
	}()
	n.store = localstore.New(localstore.Options{
		Path:               cfg.Store.Path,
		OpenTimeout:        cfg.Store.OpenTimeout,
		CommitWindow:       cfg.Store.CommitWindow,
		CheckpointInterval: cfg.Store.CheckpointInterval,
		SweepInterval:      cfg.Store.SweepInterval,
		TombstoneTTL:       cfg.Store.TombstoneTTL,
		ContextTTL:         cfg.Store.ContextTTL,
		RequestContextTTL:  cfg.Store.RequestContextTTL,
		FixedTTL:           cfg.Store.FixedTTL,
		Limits: localstore.Limits{
			MaxContexts:         cfg.Store.MaxContexts,
			MaxValuesPerContext: cfg.Store.MaxValuesPerContext,
			MaxValueBytes:       cfg.Store.MaxValueBytes,
			MaxSetMembers:       cfg.Store.MaxSetMembers,
		},
		Logger: log.Named("store"),
	})
	if err := n.store.Open(); err != nil {
		return n, err
	}
	// One secret keys the fleet: memberlist encrypts and authenticates peer traffic
	// with it, and the proxy signs the context it forwards with a key derived from it.
	if cfg.Sync.KeyFile != "" {
		if n.keyring, err = peersync.LoadKeyFile(cfg.Sync.KeyFile); err != nil {
			return n, err
		}
	}
	// Between clusters (issue 15): made before the syncer, whose retirement must spare
	// the replicas alive in other clusters (n.retirer), opened after it.
	if n.relay, err = newRelay(n); err != nil {
		return n, err
	}
	if n.sync, err = startSync(n); err != nil {
		return n, err
	}
	if n.relay != nil {
		if err := n.relay.Open(); err != nil {
			return n, err
		}
	}
	trust, err := proxyTrust(cfg, n.keyring, log)
	if err != nil {
		return n, err
	}

	n.flags = flags.New(flags.Options{
		Store:              n.store,
		Files:              cfg.Flags.Files,
		PollInterval:       cfg.Flags.PollInterval,
		Pinned:             cfg.Flags.Pinned,
		TargetingKeyHeader: cfg.Flags.TargetingKeyHeader,
		ContextHeaders:     cfg.Flags.ContextHeaders,
		ContextBaggage:     cfg.Flags.ContextBaggage,
		MaxBodyBytes:       cfg.Admin.MaxBodyBytes,
		Logger:             log.Named("flags"),
	})
	if err := n.flags.Open(); err != nil {
		return n, err
	}

	bodyTimeout := cfg.Inbound.BodyTimeout
	if bodyTimeout == 0 {
		bodyTimeout = -1 // config "0" means none; the proxy's zero is its default
	}
	p, err := proxy.New(proxy.Options{
		InboundAddress:        cfg.Inbound.Address,
		App:                   cfg.Inbound.App,
		OutboundAddress:       cfg.Outbound.Address,
		OutboundNonLoopback:   cfg.Outbound.AllowNonLoopback,
		TransparentAddress:    cfg.Outbound.TransparentAddress,
		TransparentMaxConns:   cfg.Outbound.TransparentMaxConnections,
		SniffTimeout:          cfg.Outbound.SniffTimeout,
		TrustInboundOps:       cfg.Inbound.TrustInboundOps,
		Signer:                trust.signer,
		TrustedSources:        trust.sources,
		ContextHeader:         cfg.Inbound.ContextHeader,
		ContextBaggage:        cfg.Inbound.ContextBaggage,
		Store:                 requestPathStore{n.store},
		TelemetryWindow:       cfg.Store.CommitWindow,
		Flags:                 n.flags,
		Trace:                 traceMode(cfg.Tracing, tp),
		SampleRatio:           cfg.Tracing.SampleRatio,
		TracestateKey:         cfg.Tracing.TracestateKey,
		TracerProvider:        tp,
		Logger:                log.Named("proxy"),
		MaxIdleConnsPerHost:   cfg.Outbound.MaxIdleConnsPerHost,
		DialTimeout:           cfg.Outbound.DialTimeout,
		ResponseHeaderTimeout: cfg.Inbound.ResponseHeaderTimeout,
		ReadHeaderTimeout:     cfg.Inbound.ReadHeaderTimeout,
		IdleTimeout:           cfg.Inbound.IdleTimeout,
		MaxHeaderBytes:        cfg.Inbound.MaxHeaderBytes,
		BodyTimeout:           bodyTimeout,
		DisableFastPath:       !cfg.Inbound.FastPath,
	})
	if err != nil {
		return n, fmt.Errorf("proxy: %w", err)
	}
	n.proxy = p
	if err := n.proxy.Open(); err != nil {
		return n, err
	}

	n.admin = admin.New(admin.Options{
		Address:          cfg.Admin.Address,
		AllowNonLoopback: cfg.Admin.AllowNonLoopback,
		MaxBodyBytes:     cfg.Admin.MaxBodyBytes,
		ShutdownTimeout:  cfg.Admin.ShutdownTimeout,
		AllowedHosts:     cfg.Admin.AllowedHosts,
		Store:            n.store,
		Peers:            n.sync.syncer,
		Logger:           log.Named("admin"),
	})
	n.admin.Registry().MustRegister(n.sync.syncer)
	n.admin.Registry().MustRegister(localstore.NewCollector(n.store))
	n.admin.AddReadyCheck("sync", n.sync.syncer.Ready)
	if n.relay != nil {
		// No ready check: a NATS outage must not take the pods out of service; the
		// deltas wait (ctxprop_relay_connected, ctxprop_relay_publish_lag_seconds).
		n.admin.Registry().MustRegister(n.relay)
	}
	// Handlers mount before Open. "/{$}" and not "/": the page must not swallow the API's
	// JSON 404 for unknown paths.
	ui := webui.Handler()
	n.admin.Handle("GET /{$}", ui)
	n.admin.Handle("GET "+webui.AssetPrefix, ui)
	n.admin.Registry().MustRegister(proxy.NewCollector(n.proxy))
	n.contextMetrics = proxy.NewContextCollector(n.store, proxy.ContextMetricsOptions{
		Max:    cfg.Admin.ContextMetricsMax,
		Allow:  cfg.Admin.ContextMetrics,
		Logger: log.Named("metrics"),
	})
	if err := n.contextMetrics.Open(); err != nil {
		return n, err
	}
	n.admin.Registry().MustRegister(n.contextMetrics)
	n.flags.Register(n.admin)
	n.admin.Registry().MustRegister(flags.NewCollector(n.flags))
	if cfg.Admin.ChartInterval > 0 {
		n.history, err = webui.NewHistory(webui.HistoryOptions{
			// The collector keeps every context's telemetry: sampling through it reads
			// only the contexts that changed, not all of them every interval.
			Store:    n.contextMetrics,
			Peers:    n.sync.syncer,
			Flags:    n.flags,
			Interval: cfg.Admin.ChartInterval,
			Window:   cfg.Admin.ChartWindow,
			Max:      cfg.Admin.ContextMetricsMax,
			Allow:    cfg.Admin.ContextMetrics,
			Logger:   log.Named("history"),
		})
		if err != nil {
			return n, err
		}
		if err := n.history.Open(); err != nil {
			return n, err
		}
		n.admin.Handle("GET "+webui.HistoryPath, n.history)
	}
	if err := n.admin.Open(); err != nil {
		return n, err
	}
	log.Info("sidecar ready", "admin", n.admin.Addr(), "inbound", n.proxy.InboundAddr(), "outbound", n.proxy.OutboundAddr(), "transparent", n.proxy.TransparentAddr(), "app", cfg.Inbound.App, "store", cfg.Store.Path)
	return n, nil
}

// trust is what the proxy needs to tell the fleet's context from anybody else's.
type trust struct {
	signer  *headers.Signer // nil without a key
	sources []netip.Prefix
}

// proxyTrust builds the proxy's trust settings of SPEC §4a and says at start-up what
// this sidecar will believe, since a fleet without a key trusts no other pod's context.
func proxyTrust(cfg config.Config, keyring [][]byte, log hclog.Logger) (trust, error) {
	var t trust
	for _, s := range cfg.Inbound.TrustedSources {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return t, fmt.Errorf("inbound.trusted_sources: %q: %w", s, err)
		}
		t.sources = append(t.sources, p)
	}
	if len(keyring) > 0 {
		var err error
		if t.signer, err = headers.NewSigner(keyring); err != nil {
			return t, err
		}
		return t, nil
	}
	log.Warn("no sync.key_file: the context of requests from other pods (baggage ctx.name, ctx.flag.*) is not trusted and is removed before the app sees it; "+
		"give every sidecar the same sync.key_file so that they sign it for each other (the Kubernetes injector does by default)",
		"trusted_sources", len(t.sources), "context_header", cfg.Inbound.ContextHeader, "context_baggage", cfg.Inbound.ContextBaggage)
	return t, nil
}

// close drains the proxy first (in-flight requests still write telemetry), then stops
// the admin API, then flushes and closes the store.
func (n *node) close(ctx context.Context) error {
	var errs []error
	if n.proxy != nil {
		errs = append(errs, n.proxy.Close(ctx))
	}
	if n.flags != nil {
		// Before the admin API: its shutdown waits for the flag change streams.
		errs = append(errs, n.flags.Close())
	}
	if n.history != nil {
		errs = append(errs, n.history.Close())
	}
	if n.admin != nil {
		errs = append(errs, n.admin.Close(ctx))
	}
	if n.contextMetrics != nil {
		errs = append(errs, n.contextMetrics.Close())
	}
	if n.relay != nil {
		// After the API stops taking writes: Close publishes the last deltas.
		errs = append(errs, n.relay.Close(ctx))
	}
	if n.sync != nil {
		// After the API stops taking writes: Close pushes the last deltas to the peers.
		errs = append(errs, n.sync.close(ctx))
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// requestPathStore gives the proxy the store with the request-path durability of SPEC §3:
// committed within store.commit_window, never waiting for fsync.
type requestPathStore struct{ s *localstore.Store }

func (r requestPathStore) Apply(name string, list []ops.Op) error {
	_, err := r.s.Apply(context.Background(), name, list, localstore.Windowed)
	return err
}

// Commit makes the proxy's summed telemetry durable once it has written a window's
// worth, so that it is as durable as a Windowed write per request was (issue 14).
func (r requestPathStore) Commit(ctx context.Context) error { return r.s.Sync(ctx) }

var (
	_ proxy.Store     = requestPathStore{}
	_ proxy.Committer = requestPathStore{}
)
