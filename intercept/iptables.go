package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// The backends: the two flavours of iptables, which keep separate rules in the kernel.
// A node's own tools (kube-proxy, the CNI plugin) use one of them; rules of the other
// flavour would still apply, but in an order nobody chose.
const (
	Auto   = "auto"
	Legacy = "legacy"
	NFT    = "nft"
)

// Exec runs the command name with args to completion, with stdin as its input, and
// returns its standard output; if it fails, the error holds its standard error. It is
// called from one goroutine at a time.
type Exec func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)

// Installer installs and removes Rules in a network namespace. The zero value works on
// the namespace of the calling process with the backend detected.
type Installer struct {
	// Backend is Legacy, NFT, or Auto (or ""): legacy if the namespace already holds
	// iptables-legacy rules, else nft, else the plain iptables binaries, as Istio's
	// istio-iptables decides.
	Backend string
	// Exec runs the iptables commands; nil runs them in this process, hence in its
	// network namespace.
	Exec Exec
	// LookPath finds a command; nil is exec.LookPath.
	LookPath func(name string) (string, error)
	// Logger receives one line per family changed; nil logs nothing.
	Logger hclog.Logger
	// Capabilities reports the process's effective capabilities; nil reads them from
	// /proc/self/status. Install and Remove refuse to start without CAP_NET_ADMIN.
	Capabilities func() (uint64, error)
}

// Result is what Install or Remove did to one family.
type Result struct {
	Family  Family
	Backend string // Legacy, NFT, or "" for the plain binaries
	Command string // the restore command, such as "iptables-nft-restore"
	Changed bool   // false: the namespace held the wanted state already
	Script  string // what was given to Command; "" when unchanged
}

// Install makes the namespace's nat table hold exactly r of the sidecar's rules: it adds
// what is missing, replaces what differs and removes what r no longer asks for, each
// family in one transaction. A second call with the same r changes nothing.
func (in *Installer) Install(ctx context.Context, r Rules) ([]Result, error) {
	return in.apply(ctx, "installed", func(f Family) natTable { return r.table(f) }, r.IPv6)
}

// Remove deletes every CTXPROP_ chain and every rule jumping to one, in both families.
func (in *Installer) Remove(ctx context.Context) ([]Result, error) {
	return in.apply(ctx, "removed", func(Family) natTable { return natTable{} }, false)
}

func (in *Installer) apply(ctx context.Context, verb string, want func(Family) natTable, needIPv6 bool) ([]Result, error) {
	if err := in.checkCapabilities(); err != nil {
		return nil, err
	}
	backend, err := in.detect(ctx)
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, f := range []Family{IPv4, IPv6} {
		save, restore := binary(backend, f, "save"), binary(backend, f, "restore")
		out, err := in.run(ctx, nil, save, "-t", "nat")
		if err != nil {
			if f == IPv6 && !needIPv6 {
				// A node without IPv6 has nothing of ours to remove either.
				in.log().Debug("IPv6 nat table not readable; leaving IPv6 alone", "command", save, "error", err)
				continue
			}
			if f == IPv6 {
				return results, fmt.Errorf("read the IPv6 nat table: %w; on a node without IPv6 set intercept.ipv6 = false", err)
			}
			return results, fmt.Errorf("read the nat table: %w", err)
		}
		t := want(f)
		cur := parseSave(string(out))
		res := Result{Family: f, Backend: backend, Command: restore}
		if _, _, same := t.plan(cur); same {
			results = append(results, res)
			continue
		}
		res.Script, res.Changed = t.script(&cur), true
		if _, err := in.run(ctx, []byte(res.Script), restore, "--noflush", "--wait=10"); err != nil {
			return results, fmt.Errorf("%w\nthe input was:\n%s", err, res.Script)
		}
		in.log().Info("rules "+verb, "family", f.String(), "command", restore)
		results = append(results, res)
	}
	return results, nil
}

// binary names the family's save or restore command of the backend.
func binary(backend string, f Family, what string) string {
	name := iptables(f)
	if backend != "" {
		name += "-" + backend
	}
	return name + "-" + what
}

// detect picks the backend. Auto follows istio-iptables: legacy when the namespace
// holds legacy rules, since they are what the node uses there; else nft, the default of
// current distributions; else the plain binaries, whatever they are.
func (in *Installer) detect(ctx context.Context) (string, error) {
	lookPath := in.LookPath
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	have := func(backend string) bool {
		for _, f := range []Family{IPv4, IPv6} {
			for _, what := range []string{"save", "restore"} {
				if _, err := lookPath(binary(backend, f, what)); err != nil {
					return false
				}
			}
		}
		return true
	}
	switch in.Backend {
	case Legacy, NFT:
		if !have(in.Backend) {
			return "", fmt.Errorf("intercept.backend is %s but %s is not installed; install iptables (Debian: apt-get install iptables) or choose another backend", in.Backend, binary(in.Backend, IPv4, "restore"))
		}
		return in.Backend, nil
	case Auto, "":
	default:
		return "", fmt.Errorf("unknown backend %q; want %s, %s or %s", in.Backend, Auto, Legacy, NFT)
	}
	if have(Legacy) {
		for _, f := range []Family{IPv4, IPv6} {
			// A kernel without the legacy tables fails here: then it holds no legacy rules.
			out, err := in.run(ctx, nil, binary(Legacy, f, "save"))
			if err == nil && hasRules(string(out)) {
				return Legacy, nil
			}
		}
	}
	if have(NFT) {
		return NFT, nil
	}
	if have("") {
		return "", nil
	}
	return "", errors.New("no iptables found (iptables-nft-restore, iptables-legacy-restore or iptables-restore, and their ip6tables and -save companions); install iptables (Debian: apt-get install iptables)")
}

// hasRules reports whether iptables-save output holds any rule.
func hasRules(out string) bool {
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "-A ") {
			return true
		}
	}
	return false
}

func (in *Installer) run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if in.Exec != nil {
		return in.Exec(ctx, stdin, name, args...)
	}
	return Run(ctx, stdin, name, args...)
}

// Run is the Exec that runs a command in this process's network namespace.
func Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return stdout.Bytes(), nil
}

func (in *Installer) log() hclog.Logger {
	if in.Logger == nil {
		return hclog.NewNullLogger()
	}
	return in.Logger
}
