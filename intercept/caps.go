package intercept

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The capability bits of linux/capability.h this package needs.
const (
	capNetAdmin = 12 // CAP_NET_ADMIN: change the namespace's packet rules
	capNetRaw   = 13 // CAP_NET_RAW: the raw socket iptables-legacy talks to the kernel through
)

// CapabilityError says the process lacks a capability that changing the packet rules
// needs.
type CapabilityError struct {
	Missing []string // such as "NET_ADMIN"
}

func (e *CapabilityError) Error() string {
	what := "the " + strings.Join(e.Missing, " and ") + " capability"
	if len(e.Missing) > 1 {
		what = "the " + strings.Join(e.Missing, " and ") + " capabilities"
	}
	return fmt.Sprintf("this process lacks %s: redirecting the pod's traffic changes its iptables rules, which needs NET_ADMIN (and NET_RAW, for iptables-legacy); "+
		"give the init container that runs sidecar intercept securityContext.capabilities.add [NET_ADMIN, NET_RAW], "+
		"or, where the namespace's Pod Security level (baseline or restricted) forbids them, run the pod in HTTP_PROXY mode, without interception: annotate it ctxprop.io/interception: http-proxy "+
		"(README, \"How traffic reaches the sidecar\")", what)
}

// checkCapabilities refuses to start without CAP_NET_ADMIN, and CAP_NET_RAW unless the
// backend is nft (iptables-legacy talks to the kernel through a raw socket): iptables would fail anyway, with "Permission denied (you must be
// root)", which names neither the capability nor the way out, and backend detection
// would misread the failure as an empty namespace.
func (in *Installer) checkCapabilities() error {
	caps := in.Capabilities
	if caps == nil {
		caps = effectiveCapabilities
	}
	eff, err := caps()
	if err != nil {
		return err
	}
	var missing []string
	if eff&(1<<capNetAdmin) == 0 {
		missing = append(missing, "NET_ADMIN")
	}
	// Auto needs NET_RAW too: without it iptables-legacy-save fails, and the detection
	// would take a node whose rules are legacy for one without any.
	if eff&(1<<capNetRaw) == 0 && in.Backend != NFT {
		missing = append(missing, "NET_RAW")
	}
	if len(missing) > 0 {
		return &CapabilityError{Missing: missing}
	}
	return nil
}

// effectiveCapabilities reads CapEff from /proc/self/status.
func effectiveCapabilities() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read the process's capabilities: %w; sidecar intercept works on Linux only", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("read the process's capabilities: CapEff %q: %w", v, err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read the process's capabilities: %w", err)
	}
	return 0, fmt.Errorf("read the process's capabilities: no CapEff in /proc/self/status; sidecar intercept works on Linux only")
}
