package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/go-hclog"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultXDSCluster is the EDS cluster XDS subscribes to when XDS.Cluster is empty.
const DefaultXDSCluster = "ctxprop-peers"

// resourceWrapperType is the envoy.service.discovery.v3.Resource wrapper servers use
// to attach a TTL to a resource (go-control-plane does so for heartbeats).
const resourceWrapperType = resourcev3.APITypePrefix + "envoy.service.discovery.v3.Resource"

// Stream retry delays: the first retry after a failed stream comes quickly (a control
// plane restarting), later ones spread out so a fleet of sidecars does not hammer a
// control plane that is down.
const (
	xdsMinBackoff = 250 * time.Millisecond
	xdsMaxBackoff = 30 * time.Second
)

// xdsMaxNACKDelay caps the pause before repeating a NACK. A server that answers a NACK
// by resending the same bad update at once (go-control-plane's snapshot cache does)
// would otherwise spin with this client; the pause also bounds how long a fixed update
// waits to be picked up, since the server answers only the next request.
const xdsMaxNACKDelay = 10 * time.Second

// XDS finds peers in the endpoints of one cluster served by an xDS server: a
// state-of-the-world ADS stream subscribed to the ClusterLoadAssignment (EDS) named
// Cluster. Any xDS control plane works: Istio, Consul, or go-control-plane.
//
// Each response is checked whole before it is used: a resource that cannot be decoded
// or does not validate, or an endpoint that is not a TCP socket address with a port,
// makes the client NACK the response (keeping version_info at the last accepted
// version, with error_detail saying why) and keep the endpoints it had. A broken stream
// is reopened with backoff; the last accepted endpoints stay in use meanwhile.
//
// Set the fields, then call Open; they must not change after. Peers is safe for
// concurrent use.
type XDS struct {
	// Server is the xDS server, host:port (a gRPC target). Required.
	Server string
	// Cluster is the name of the ClusterLoadAssignment to subscribe to; empty means
	// DefaultXDSCluster.
	Cluster string
	// NodeID identifies this sidecar to the server (core.v3.Node.id), which may serve
	// different endpoints per node; empty means the host name.
	NodeID string
	// TLS secures the connection to the server; nil means no TLS, which Open accepts
	// only when Insecure is set.
	TLS *tls.Config
	// Insecure allows a plaintext connection when TLS is nil: a control plane on
	// loopback, or one reached through a mesh that already encrypts.
	Insecure bool
	// Logger receives stream errors, NACKs and endpoint changes; nil means no logs.
	Logger hclog.Logger

	// Copies of the fields with defaults filled in, set once by Open.
	cluster string
	nodeID  string
	log     hclog.Logger

	mu        sync.Mutex
	open      bool
	closed    bool
	conn      *grpc.ClientConn
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	peers     []string // the last accepted endpoints
	have      bool     // whether any response named Cluster has been accepted
	version   string   // version_info of the last accepted response
	streamErr error    // why the stream is down; nil while it is up
	nackErr   error    // why the last response was rejected; nil after an accepted one
}

// Open checks the fields and starts the stream in a goroutine. It does not wait for the
// server: until the first response, Peers returns an error. The stream runs until
// Close or until ctx is done. Open fails if called twice.
func (x *XDS) Open(ctx context.Context) error {
	if x.Server == "" {
		return errors.New("xds: no server address; set sync.xds to the xDS server's host:port")
	}
	if err := checkHostPort(x.Server); err != nil {
		return fmt.Errorf("xds server %q: %w", x.Server, err)
	}
	var creds credentials.TransportCredentials
	switch {
	case x.TLS != nil:
		creds = credentials.NewTLS(x.TLS)
	case x.Insecure:
		creds = insecure.NewCredentials()
	default:
		return fmt.Errorf("xds server %s: no transport security chosen; set TLS, or Insecure for a plaintext control plane on loopback or behind a mesh", x.Server)
	}
	cluster, nodeID, log := x.Cluster, x.NodeID, x.Logger
	if cluster == "" {
		cluster = DefaultXDSCluster
	}
	if nodeID == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("xds: no node id and no host name to use instead (%w); set node.name", err)
		}
		nodeID = host
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}

	x.mu.Lock()
	defer x.mu.Unlock()
	switch {
	case x.closed:
		return fmt.Errorf("xds server %s: closed; create a new XDS to open again", x.Server)
	case x.open:
		return fmt.Errorf("xds server %s: already open", x.Server)
	}
	conn, err := grpc.NewClient(x.Server,
		grpc.WithTransportCredentials(creds),
		// grpc's own reconnect backoff starts at 1s; a restarted control plane should
		// be found as fast as the stream retry below allows.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  xdsMinBackoff,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   xdsMaxBackoff,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return fmt.Errorf("xds server %s: %w", x.Server, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	x.open, x.conn, x.cancel = true, conn, cancel
	x.cluster, x.nodeID = cluster, nodeID
	x.log = log.Named("xds").With("server", x.Server, "cluster", cluster)
	x.streamErr = errors.New("not connected yet")
	x.wg.Go(func() { x.run(ctx) })
	return nil
}

// Close stops the stream, waits for its goroutine and closes the connection. It is
// safe to call twice, and before Open.
func (x *XDS) Close() error {
	x.mu.Lock()
	if x.closed || !x.open {
		x.closed = true
		x.mu.Unlock()
		return nil
	}
	x.closed = true
	x.cancel()
	x.mu.Unlock()

	x.wg.Wait()
	if err := x.conn.Close(); err != nil {
		return fmt.Errorf("xds server %s: close: %w", x.Server, err)
	}
	return nil
}

// Peers returns the address:port of every endpoint of Cluster whose health is HEALTHY
// or UNKNOWN, sorted, as last accepted from the server. While the stream is down, or
// after the server sent something it rejected, the list comes with an error wrapping
// ErrStale. Before the first accepted response it returns no peers and an error.
func (x *XDS) Peers(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	switch {
	case !x.open:
		return nil, fmt.Errorf("xds server %s: not open; call Open first", x.Server)
	case x.closed:
		return nil, fmt.Errorf("xds server %s: closed", x.Server)
	case !x.have:
		cause := x.streamErr
		if cause == nil {
			cause = x.nackErr
		}
		if cause == nil {
			cause = errors.New("the server has sent none")
		}
		return nil, fmt.Errorf("xds server %s: no endpoints for cluster %q yet: %w", x.Server, x.cluster, cause)
	case x.streamErr != nil:
		return slices.Clone(x.peers), fmt.Errorf("%w: xds server %s: %w", ErrStale, x.Server, x.streamErr)
	case x.nackErr != nil:
		return slices.Clone(x.peers), fmt.Errorf("%w: xds server %s: last update rejected: %w", ErrStale, x.Server, x.nackErr)
	}
	return slices.Clone(x.peers), nil
}

// String names the source in logs and errors.
func (x *XDS) String() string { return "xds " + x.Server }

// run keeps a stream open until ctx is done.
func (x *XDS) run(ctx context.Context) {
	log := x.log
	defer func() {
		// Open's context may end before Close: Peers must not present the last list
		// as current from then on.
		x.mu.Lock()
		x.streamErr = fmt.Errorf("stream stopped: %w", context.Cause(ctx))
		x.mu.Unlock()
	}()
	delay := xdsMinBackoff
	for {
		progressed, err := x.stream(ctx, log)
		if ctx.Err() != nil {
			return
		}
		x.mu.Lock()
		x.streamErr = err
		x.mu.Unlock()
		if progressed {
			delay = xdsMinBackoff
		}
		// Full jitter in [delay/2, delay) keeps restarted sidecars from reconnecting
		// in lockstep.
		wait := delay/2 + rand.N(delay/2)
		log.Warn("stream failed; retrying", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, xdsMaxBackoff)
	}
}

// stream runs one ADS stream until it fails. progressed reports whether the server
// answered at all, which resets the backoff.
func (x *XDS) stream(ctx context.Context, log hclog.Logger) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(x.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	x.mu.Lock()
	version := x.version
	x.mu.Unlock()
	// A new stream starts with the last accepted version so the server can skip
	// resending what this client already has; no nonce, since none is being answered.
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          &corev3.Node{Id: x.nodeID, Cluster: x.cluster, UserAgentName: "ctxprop"},
		ResourceNames: []string{x.cluster},
		TypeUrl:       resourcev3.EndpointType,
	}
	if err := st.Send(req); err != nil {
		return false, fmt.Errorf("send subscription: %w", err)
	}
	// The stream is on a live connection now; until the first response, Peers says
	// that the server has sent nothing rather than that it is unreachable.
	x.mu.Lock()
	x.streamErr = nil
	x.mu.Unlock()
	nacks := 0 // consecutive NACKs on this stream
	for {
		resp, err := st.Recv()
		if err != nil {
			return progressed, fmt.Errorf("receive: %w", err)
		}
		if !progressed {
			progressed = true
			log.Debug("first response on a new stream")
		}
		if resp.GetTypeUrl() != resourcev3.EndpointType {
			// ADS multiplexes types; this client asked for one only, so there is no
			// subscription to ACK or NACK.
			log.Warn("ignoring response of a type not subscribed to", "type_url", resp.GetTypeUrl())
			continue
		}
		req := &discoveryv3.DiscoveryRequest{
			ResourceNames: []string{x.cluster},
			TypeUrl:       resourcev3.EndpointType,
			ResponseNonce: resp.GetNonce(),
		}
		peers, found, err := x.decode(resp)
		x.mu.Lock()
		if err != nil {
			// NACK: version_info stays at the last accepted version (xDS protocol,
			// "ACK and NACK semantics").
			nackErr := fmt.Errorf("version %q: %w", resp.GetVersionInfo(), err)
			// A server resending the same bad update is logged once, not every time.
			if x.nackErr == nil || x.nackErr.Error() != nackErr.Error() {
				log.Error("rejected endpoints update; keeping the last accepted", "version", resp.GetVersionInfo(), "error", err)
			}
			x.nackErr = nackErr
			req.VersionInfo = x.version
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			nacks++
		} else {
			nacks = 0
			x.nackErr = nil
			x.version = resp.GetVersionInfo()
			req.VersionInfo = x.version
			if found && (!x.have || !slices.Equal(peers, x.peers)) {
				log.Info("endpoints updated", "version", x.version, "peers", len(peers))
				x.peers, x.have = peers, true
			}
		}
		x.mu.Unlock()
		if nacks > 1 {
			wait := min(xdsMinBackoff<<min(nacks-2, 10), xdsMaxNACKDelay)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return progressed, ctx.Err()
			case <-t.C:
			}
		}
		if err := st.Send(req); err != nil {
			return progressed, fmt.Errorf("send ack: %w", err)
		}
	}
}

// decode checks every resource of resp and returns the peers of the one named Cluster.
// found is false when resp does not carry it: EDS is not a full-state type, so a
// response without it leaves the endpoints as they were.
func (x *XDS) decode(resp *discoveryv3.DiscoveryResponse) (peers []string, found bool, err error) {
	for i, res := range resp.GetResources() {
		if res.GetTypeUrl() == resourceWrapperType {
			var w discoveryv3.Resource
			if err := res.UnmarshalTo(&w); err != nil {
				return nil, false, fmt.Errorf("resource %d: %w", i, err)
			}
			if w.GetResource() == nil {
				continue // a heartbeat or a TTL expiry notice: nothing to apply
			}
			res = w.GetResource()
		}
		if res.GetTypeUrl() != resourcev3.EndpointType {
			return nil, false, fmt.Errorf("resource %d: type %s in an EDS response", i, res.GetTypeUrl())
		}
		var cla endpointv3.ClusterLoadAssignment
		if err := res.UnmarshalTo(&cla); err != nil {
			return nil, false, fmt.Errorf("resource %d: %w", i, err)
		}
		if cla.GetClusterName() != x.cluster {
			continue // not asked for; a server may send more than was named
		}
		if err := cla.ValidateAll(); err != nil {
			return nil, false, fmt.Errorf("cluster %q: %w", x.cluster, err)
		}
		p, err := endpoints(&cla)
		if err != nil {
			return nil, false, fmt.Errorf("cluster %q: %w", x.cluster, err)
		}
		peers, found = p, true
	}
	return peers, found, nil
}

// endpoints returns host:port of the endpoints of cla that may take traffic.
func endpoints(cla *endpointv3.ClusterLoadAssignment) ([]string, error) {
	peers := []string{}
	for _, loc := range cla.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
			default:
				continue
			}
			ep := lb.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("endpoint %q: named endpoints are not supported; send the endpoint inline", lb.GetEndpointName())
			}
			sa := ep.GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("endpoint %v: not a socket address", ep.GetAddress())
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, fmt.Errorf("endpoint %s: protocol %s; peer sync is TCP", sa.GetAddress(), sa.GetProtocol())
			}
			if named := sa.GetNamedPort(); named != "" {
				return nil, fmt.Errorf("endpoint %s: named port %q is not supported; send a port_value", sa.GetAddress(), named)
			}
			port := sa.GetPortValue()
			if port == 0 || port > 65535 {
				return nil, fmt.Errorf("endpoint %s: port %d; want a port_value from 1 to 65535", sa.GetAddress(), port)
			}
			if sa.GetAddress() == "" {
				return nil, errors.New("endpoint with an empty address")
			}
			peers = append(peers, net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port), 10)))
		}
	}
	slices.Sort(peers)
	return slices.Compact(peers), nil
}
