package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/intercept"
)

// runIntercept is `sidecar intercept`: it installs (or with -remove deletes) the rules
// that redirect the pod's traffic to the sidecar, in the network namespace it runs in.
// The injector runs it in an init container with NET_ADMIN and NET_RAW, before the app
// and the sidecar start.
func runIntercept(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("intercept", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "-", "the HCL config `file` (\"-\": none, the defaults); CTXPROP_<BLOCK>_<ATTR> variables override it")
	dryRun := fs.Bool("dry-run", false, "print the rules, in iptables-save form, and change nothing")
	optional := fs.Bool("config-optional", false, "use the defaults and the environment when the config file does not exist (an injected pod whose ConfigMap is absent)")
	remove := fs.Bool("remove", false, "delete the rules sidecar intercept installed")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sidecar intercept [-config FILE] [-config-optional] [-dry-run] [-remove]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *dryRun && *remove {
		return fmt.Errorf("%w: -dry-run and -remove together; -dry-run prints the rules an install would make, -remove deletes them", errUsage)
	}
	file := *path
	if *optional && file != "-" {
		if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
			file = "-"
			fmt.Fprintf(stderr, "sidecar intercept: config file %s absent; using the defaults and the environment\n", *path)
		}
	}
	cfg, err := loadConfig(file)
	if err != nil {
		return err
	}
	rules, err := interceptRules(cfg)
	if err != nil {
		return err
	}
	if *dryRun {
		_, err := rules.WriteTo(stdout)
		return err
	}
	in := &intercept.Installer{Backend: cfg.Intercept.Backend, Logger: newLogger(cfg, stderr).Named("intercept")}
	var results []intercept.Result
	if *remove {
		results, err = in.Remove(ctx)
	} else {
		results, err = in.Install(ctx, rules)
	}
	for _, r := range results {
		var what string
		switch {
		case *remove && r.Changed:
			what = "rules removed"
		case *remove:
			what = "no rules to remove"
		case r.Changed:
			what = "rules installed"
		default:
			what = "rules already in place"
		}
		fmt.Fprintf(stdout, "%s: %s (%s)\n", r.Family, what, r.Command)
	}
	return err
}

// interceptRules turns the configuration into rules, refusing listener addresses that
// redirected traffic could not reach: iptables' REDIRECT delivers outbound connections
// to the loopback address and inbound ones to the address they arrived on.
func interceptRules(cfg config.Config) (intercept.Rules, error) {
	port := func(path, addr string) (int, netip.Addr, error) {
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			return 0, netip.Addr{}, fmt.Errorf("%s %q is not host:port", path, addr)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return 0, netip.Addr{}, fmt.Errorf("%s %q has port %q; sidecar intercept redirects to a fixed port, so give it one from 1 to 65535", path, addr, p)
		}
		ip, _ := netip.ParseAddr(host) // a host name stays the zero Addr
		switch host {
		case "":
			ip = netip.IPv4Unspecified()
		case "localhost":
			ip = netip.IPv6Loopback()
		}
		return n, ip, nil
	}
	r := intercept.Rules{
		ProxyUID:             cfg.Intercept.ProxyUID,
		InboundPorts:         cfg.Intercept.InboundPorts,
		ExcludeInboundPorts:  cfg.Intercept.ExcludeInboundPorts,
		ExcludeOutboundPorts: cfg.Intercept.ExcludeOutboundPorts,
		IPv6:                 cfg.Intercept.IPv6,
	}
	var err error
	var ip netip.Addr
	if r.InboundPort, ip, err = port("inbound.address", cfg.Inbound.Address); err != nil {
		return r, err
	}
	if !ip.IsUnspecified() {
		return r, fmt.Errorf("inbound.address %s is not every address (0.0.0.0): redirected inbound connections arrive at the pod's own address, so the inbound proxy must listen there; set it to 0.0.0.0:%d", cfg.Inbound.Address, r.InboundPort)
	}
	if a := cfg.Outbound.TransparentAddress; a != "" {
		if r.OutboundPort, ip, err = port("outbound.transparent_address", a); err != nil {
			return r, err
		}
		if !ip.IsLoopback() && !ip.IsUnspecified() {
			return r, fmt.Errorf("outbound.transparent_address %s is not a loopback address: redirected outbound connections arrive at loopback; set it to 127.0.0.1:%d", a, r.OutboundPort)
		}
		r.SidecarPorts = append(r.SidecarPorts, r.OutboundPort)
	}
	for _, l := range []struct{ path, addr string }{
		{"admin.address", cfg.Admin.Address}, {"outbound.address", cfg.Outbound.Address}, {"sync.address", cfg.Sync.Address},
	} {
		if n, _, err := port(l.path, l.addr); err == nil {
			r.SidecarPorts = append(r.SidecarPorts, n)
		}
	}
	for _, c := range cfg.Intercept.ExcludeOutboundCIDRs {
		p, err := config.ParsePrefix(c)
		if err != nil { // Load validated it
			return r, fmt.Errorf("intercept.exclude_outbound_cidrs: %q: %w", c, err)
		}
		r.ExcludeOutboundCIDRs = append(r.ExcludeOutboundCIDRs, p)
	}
	return r, nil
}
