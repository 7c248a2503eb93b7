package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ctxprop/ctxprop/config"
)

// runSidecar is `sidecar run -config FILE`: it runs until ctx is cancelled (SIGTERM or
// SIGINT), then drains and closes within admin.shutdown_timeout.
func runSidecar(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.hcl", "the HCL config `file` (\"-\": none); CTXPROP_<BLOCK>_<ATTR> variables override it")
	optional := fs.Bool("config-optional", false, "start on the defaults and the environment when the config file does not exist (an injected sidecar whose ConfigMap is absent)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sidecar run [-config config.hcl] [-config-optional]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	file, missing := *path, false
	if *optional && file != "-" {
		if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
			file, missing = "-", true
		}
	}
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	log.Debug("garbage collector", "gogc", tuneGC())
	if missing {
		log.Info("config file absent; running on the defaults and the environment", "file", *path)
	}
	tp, err := newTracerProvider(ctx, cfg)
	if err != nil {
		return err
	}
	var n *node
	if tp != nil {
		defer tp.Shutdown(context.Background())
		n, err = startNode(cfg, log, tp)
	} else {
		n, err = startNode(cfg, log, nil) // a nil *TracerProvider in the interface would not be nil
	}
	if err != nil {
		return err
	}
	mp, err := newMeterProvider(ctx, cfg, n.admin.Registry(), metricsExportInterval)
	if err != nil {
		return errors.Join(err, n.close(context.Background()))
	}
	if mp != nil {
		defer mp.Shutdown(context.Background())
	}
	var retired error
	select {
	case <-ctx.Done():
	case <-n.store.Retired():
		// The fleet retired this replica while it was away: exit, so that the restart
		// (Kubernetes restarts the sidecar) continues under a new replica id.
		retired = n.store.Ready()
	}
	log.Info("shutting down", "timeout", cfg.Admin.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Admin.ShutdownTimeout)
	defer cancel()
	if err := n.close(sctx); err != nil && retired == nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if retired != nil {
		return retired
	}
	log.Info("stopped")
	return nil
}

// loadConfig loads path; "-" means no file: the defaults and the environment only.
func loadConfig(path string) (config.Config, error) {
	if path == "-" {
		path = ""
	}
	return config.Load(path)
}
