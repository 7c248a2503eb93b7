package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ctxprop/ctxprop/k8s"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
)

// injectFlags registers the flags that shape the injected sidecar, shared by webhook and
// inject so that both put the same container into a pod.
func injectFlags(fs *flag.FlagSet, cfg *k8s.Config) {
	fs.StringVar(&cfg.Image, "image", cfg.Image, "sidecar image to inject")
	fs.Func("image-pull-policy", "pull policy of the injected sidecar: Always, IfNotPresent or Never (default: Kubernetes' rule for the tag)", func(s string) error {
		switch p := corev1.PullPolicy(s); p {
		case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
			cfg.ImagePullPolicy = p
			return nil
		}
		return errors.New("want Always, IfNotPresent or Never")
	})
	fs.Func("interception", "how pods that do not choose (annotation ctxprop.io/interception) are intercepted: iptables (init container with NET_ADMIN; the default) or http-proxy (HTTP_PROXY only; what Pod Security baseline and restricted admit)", func(s string) error {
		m, err := k8s.ParseInterception(s)
		cfg.Interception = m
		return err
	})
	fs.StringVar(&cfg.ConfigMap, "configmap", cfg.ConfigMap, "ConfigMap with config.hcl, mounted optionally at /etc/ctxprop")
	fs.StringVar(&cfg.PeerService, "peer-service", cfg.PeerService, "headless Service for peer discovery in each pod's namespace (empty: none)")
	fs.StringVar(&cfg.SyncKeySecret, "sync-key-secret", cfg.SyncKeySecret, "Secret (key \"key\") in each pod's namespace with the fleet key, mounted for sync.key_file; a pod waits for it to exist (none: pods run unkeyed)")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", cfg.ClusterDomain, "cluster DNS domain")
	fs.Func("no-proxy", "app containers' NO_PROXY, comma-separated (default "+strings.Join(cfg.NoProxy, ",")+")", func(s string) error {
		cfg.NoProxy = nil
		for _, e := range strings.Split(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				cfg.NoProxy = append(cfg.NoProxy, e)
			}
		}
		return nil
	})
}

func parseK8sFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

// runWebhook serves the mutating admission webhook until ctx ends.
func runWebhook(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := k8s.DefaultServerConfig()
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Address, "address", cfg.Address, "HTTPS listen address")
	fs.StringVar(&cfg.CertFile, "cert-file", cfg.CertFile, "PEM certificate, reloaded when it changes")
	fs.StringVar(&cfg.KeyFile, "key-file", cfg.KeyFile, "PEM private key, reloaded when it changes")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "least severe level logged: trace, debug, info, warn, error")
	injectFlags(fs, &cfg.Inject)
	if err := parseK8sFlags(fs, args); err != nil {
		return err
	}
	if *logFormat != "text" && *logFormat != "json" {
		return fmt.Errorf("%w: webhook: -log-format %q: want text or json", errUsage, *logFormat)
	}
	level := hclog.LevelFromString(*logLevel)
	if level == hclog.NoLevel {
		return fmt.Errorf("%w: webhook: -log-level %q: want trace, debug, info, warn or error", errUsage, *logLevel)
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{
		Name: "ctxprop", Output: stderr, JSONFormat: *logFormat == "json", Level: level,
	})

	srv, err := k8s.NewServer(cfg)
	if err != nil {
		return err
	}
	if err := srv.Open(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	// The API server gives up on a webhook after its timeoutSeconds (5s in the manifest).
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Close(closeCtx)
}

// runInject adds the sidecar to the workloads of a multi-document YAML file (or stdin) and
// writes the result to stdout, with one line per workload on stderr.
func runInject(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := k8s.DefaultConfig()
	cfg.InjectUnannotated = true
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "manifest file to read, - for standard input (required)")
	quiet := fs.Bool("q", false, "do not list the workloads on stderr")
	injectFlags(fs, &cfg)
	if err := parseK8sFlags(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("%w: inject: -f FILE or -f - is required", errUsage)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: inject: %v", errUsage, err)
	}
	in := io.Reader(os.Stdin)
	name := "standard input"
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		defer f.Close()
		in, name = f, *file
	}
	results, err := cfg.InjectManifests(in, stdout)
	if err != nil {
		return fmt.Errorf("inject: %s: %w", name, err)
	}
	if !*quiet {
		for _, r := range results {
			line := fmt.Sprintf("%s/%s: %s", strings.ToLower(r.Kind), r.Name, r.Outcome)
			if r.Reason != "" {
				line += " (" + r.Reason + ")"
			}
			fmt.Fprintln(stderr, line)
		}
	}
	return nil
}

// runProbe is the injected container's exec probe: the admin API is on loopback only, out of
// reach of the kubelet's httpGet probes, and the image has no shell or curl.
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://"+k8s.AdminAddress+"/readyz", "health URL to GET; 2xx passes")
	timeout := fs.Duration("timeout", time.Second, "give up after this long (keep it below the probe's timeoutSeconds)")
	if err := parseK8sFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return k8s.Probe(ctx, *url)
}
