package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultDNSTimeout bounds one lookup when DNS.Timeout is zero.
const DefaultDNSTimeout = 5 * time.Second

// DNS finds peers in the records of a Kubernetes headless Service
// (config sync { dns = "ctxprop-peers.ns.svc.cluster.local" }), looked up again on every
// call to Peers so pods that come and go are seen without a restart.
//
// A name that starts with "_" (such as "_sync._tcp.ctxprop-peers.ns.svc.cluster.local",
// the SRV record Kubernetes publishes for a named Service port) is looked up as SRV and
// each record gives target:port. Any other name is looked up as A and AAAA and every
// address is joined with the name's port, DefaultPort unless the name ends in ":port".
// A fully qualified name with a trailing dot skips the resolver's search list.
//
// When a lookup fails, Peers returns the last good answer with an error wrapping
// ErrStale, so a DNS hiccup (or a moment with no ready pods, which a headless Service
// answers with NXDOMAIN) does not empty the peer list; memberlist sorts out which of
// those peers are still alive.
//
// Create it with NewDNS. Set the exported fields before the first call to Peers.
type DNS struct {
	// Resolver does the lookups; nil means net.DefaultResolver. Tests point it at a DNS
	// server on loopback through Resolver.Dial.
	Resolver *net.Resolver
	// Timeout bounds one lookup, on top of the deadline of the context passed to
	// Peers; zero means DefaultDNSTimeout.
	Timeout time.Duration

	name string // as configured, for errors
	host string // the name to look up, without the port
	port uint16 // 0 for SRV: each record carries its own
	srv  bool

	mu   sync.Mutex
	last []string // the last good answer; nil before the first
}

// NewDNS parses name, "host", "host:port" or "_service._proto.host", and returns a
// source that resolves it. It does no lookup.
func NewDNS(name string) (*DNS, error) {
	d := &DNS{name: name, host: name, port: DefaultPort}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("dns name %q: "+format, append([]any{name}, args...)...)
	}
	if name == "" {
		return nil, bad("empty; want a headless Service name such as \"ctxprop-peers.default.svc.cluster.local\"")
	}
	if strings.Contains(name, "://") || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == '/' }) {
		return nil, bad("not a DNS name; want a headless Service name such as \"ctxprop-peers.default.svc.cluster.local\"")
	}
	if h, p, err := net.SplitHostPort(name); err == nil {
		port, err := parsePort(p)
		if err != nil {
			return nil, bad("%v", err)
		}
		d.host, d.port = h, port
	} else if strings.Contains(name, ":") {
		return nil, bad("want host or host:port: %v", err)
	}
	if d.host == "" || d.host == "." {
		return nil, bad("empty host")
	}
	if strings.HasPrefix(d.host, "_") {
		if d.host != name {
			return nil, bad("an SRV name (starting with \"_\") takes its ports from the records; drop the \":%d\"", d.port)
		}
		d.srv, d.port = true, 0
	}
	return d, nil
}

// Peers looks the name up and returns the addresses sorted. On failure it returns the
// last good answer, if there is one, with an error wrapping ErrStale.
func (d *DNS) Peers(ctx context.Context) ([]string, error) {
	if d.host == "" {
		return nil, errors.New("dns source has no name; create it with NewDNS")
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultDNSTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	peers, err := d.lookup(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("lookup %s: %w", d.name, err)
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			err = fmt.Errorf("%w (is the headless Service there, in the namespace the name says, with ready pods?)", err)
		}
		if d.last == nil {
			return nil, err
		}
		return slices.Clone(d.last), fmt.Errorf("%w: %w", ErrStale, err)
	}
	d.last = peers
	return slices.Clone(peers), nil
}

// String names the source in logs and errors.
func (d *DNS) String() string { return "dns " + d.name }

func (d *DNS) resolver() *net.Resolver {
	if d.Resolver != nil {
		return d.Resolver
	}
	return net.DefaultResolver
}

func (d *DNS) lookup(ctx context.Context) ([]string, error) {
	var peers []string
	if d.srv {
		_, records, err := d.resolver().LookupSRV(ctx, "", "", d.host)
		if err != nil {
			return nil, err
		}
		peers = make([]string, 0, len(records))
		for _, r := range records {
			target := strings.TrimSuffix(r.Target, ".")
			if target == "" || r.Port == 0 { // RFC 2782: target "." means no service here
				continue
			}
			peers = append(peers, net.JoinHostPort(target, fmt.Sprint(r.Port)))
		}
	} else {
		addrs, err := d.resolver().LookupNetIP(ctx, "ip", d.host)
		if err != nil {
			return nil, err
		}
		peers = make([]string, 0, len(addrs))
		for _, a := range addrs {
			peers = append(peers, netip.AddrPortFrom(a.Unmap(), d.port).String())
		}
	}
	slices.Sort(peers)
	return slices.Compact(peers), nil
}
