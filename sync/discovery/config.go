package discovery

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"
)

// Options carries what FromConfig needs besides the sync block's three source fields.
// Its zero value is usable for static and DNS sources; an xDS source needs XDSTLS or
// XDSInsecure.
type Options struct {
	// NodeID identifies this sidecar to the xDS server; empty means the host name.
	// Pass node.name.
	NodeID string
	// XDSCluster is the EDS cluster to subscribe to; empty means DefaultXDSCluster.
	XDSCluster string
	// XDSTLS secures the connection to the xDS server; nil means no TLS.
	XDSTLS *tls.Config
	// XDSInsecure allows a plaintext xDS connection when XDSTLS is nil.
	XDSInsecure bool
	// Resolver does DNS lookups; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Logger receives the xDS source's logs; nil means none.
	Logger hclog.Logger
}

// FromConfig builds the peer source of config sync { peers, dns, xds }: the union of a
// Static source for peers, a DNS source for dns and an XDS source for xds, each only
// when set. With none set the result has no peers (a fleet of one). It starts nothing:
// call Open on the result, and Close when done.
//
// Errors name the config attribute at fault, like "sync.peers: static peer 2 ...".
func FromConfig(peers []string, dns, xds string, opts Options) (*Multi, error) {
	m := &Multi{}
	var errs []error
	if len(peers) > 0 {
		s, err := NewStatic(peers)
		if err != nil {
			errs = append(errs, fmt.Errorf("sync.peers: %w", err))
		} else {
			m.Sources = append(m.Sources, s)
		}
	}
	if dns != "" {
		d, err := NewDNS(dns)
		if err != nil {
			errs = append(errs, fmt.Errorf("sync.dns: %w", err))
		} else {
			d.Resolver = opts.Resolver
			m.Sources = append(m.Sources, d)
		}
	}
	if xds != "" {
		switch err := checkHostPort(xds); {
		case err != nil:
			errs = append(errs, fmt.Errorf("sync.xds: %q: %w", xds, err))
		case opts.XDSTLS == nil && !opts.XDSInsecure:
			errs = append(errs, fmt.Errorf("sync.xds: %s: no transport security chosen; give the xDS source a TLS config, or allow plaintext for a control plane on loopback or behind a mesh", xds))
		default:
			m.Sources = append(m.Sources, &XDS{
				Server:   xds,
				Cluster:  opts.XDSCluster,
				NodeID:   opts.NodeID,
				TLS:      opts.XDSTLS,
				Insecure: opts.XDSInsecure,
				Logger:   opts.Logger,
			})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}
