// Command sidecar is the ctxprop sidecar: it proxies a pod's HTTP traffic, keeps named
// contexts of replicated data types in a local bbolt file, syncs them with other sidecars,
// and answers queries on a loopback admin API. See README.md and SPEC.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		os.Exit(exitCode(err))
	}
}

// command is one subcommand of the binary. It returns when ctx is cancelled or its work
// is done; a usage error wraps errUsage so main exits with 2.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var errUsage = errors.New("usage")

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

func commands() map[string]command {
	return map[string]command{
		"run":     {"run the sidecar: sidecar run -config config.hcl", runSidecar},
		"ctl":     {"query and update a sidecar's admin API", runCtl},
		"demo":    {"start a small fleet on loopback and walk through the use cases (-clusters 2: two clusters through an embedded NATS)", runDemo},
		"version": {"print the version", runVersion},
		"webhook": {"serve the Kubernetes mutating admission webhook", runWebhook},
		"inject":  {"add the sidecar to Kubernetes manifests: sidecar inject -f FILE|-", runInject},
		"probe":   {"check a sidecar health URL (the injected exec probes)", runProbe},

		// The injected init container runs intercept, before the app and the sidecar start.
		"intercept": {"redirect the pod's traffic to the sidecar (iptables; the injected init container)", runIntercept},
	}
}

// Run is the testable body of main.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return fmt.Errorf("%w: no command given", errUsage)
		}
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: sidecar <command> [flags]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
}
