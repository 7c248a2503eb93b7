package discovery_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	cplog "github.com/envoyproxy/go-control-plane/pkg/log"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/ctxprop/ctxprop/sync/discovery"
)

const cluster = "ctxprop-peers"

// controlPlane is go-control-plane's ADS server over a snapshot cache, on a loopback
// gRPC listener, recording every request its clients send.
type controlPlane struct {
	addr  string
	cache cachev3.SnapshotCache

	stopOnce sync.Once
	stopFn   func()

	mu       sync.Mutex
	requests []*discoveryv3.DiscoveryRequest
	closed   int // streams ended
}

// startControlPlane listens on addr ("127.0.0.1:0" for any port) and serves until the
// test ends or stop is called. opts may add server credentials.
func startControlPlane(t *testing.T, addr string, opts ...grpc.ServerOption) *controlPlane {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{addr: lis.Addr().String()}
	logf := func(format string, args ...any) { t.Logf("control plane: "+format, args...) }
	cp.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cplog.LoggerFuncs{WarnFunc: logf, ErrorFunc: logf})
	ctx, cancel := context.WithCancel(context.Background())
	xds := serverv3.NewServer(ctx, cp.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			cp.requests = append(cp.requests, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
			return nil
		},
		StreamClosedFunc: func(int64, *corev3.Node) {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			cp.closed++
		},
	})
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, xds)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	cp.stopFn = func() {
		g.Stop()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("control plane: %v", err)
		}
	}
	t.Cleanup(cp.stop)
	return cp
}

// stop closes the listener and every stream, as a crashed control plane would.
func (cp *controlPlane) stop() { cp.stopOnce.Do(cp.stopFn) }

// setEndpoints publishes cla as version for node pod-a.
func (cp *controlPlane) setEndpoints(t *testing.T, version string, cla *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{resourcev3.EndpointType: {cla}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "pod-a", snap); err != nil {
		t.Fatal(err)
	}
}

// waitRequest polls until a request satisfying ok has arrived, and returns it.
func (cp *controlPlane) waitRequest(t *testing.T, what string, ok func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	var found *discoveryv3.DiscoveryRequest
	eventually(t, what, func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		for _, r := range cp.requests {
			if ok(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// waitPeers polls x until Peers answers want with an error matching stale.
func waitPeers(t *testing.T, x discovery.Source, want []string, stale bool) {
	t.Helper()
	var got []string
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err = x.Peers(context.Background())
		if slices.Equal(got, want) && errors.Is(err, discovery.ErrStale) == stale && (stale || err == nil) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Peers = %q, %v; want %q (stale: %v)", got, err, want, stale)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type endpoint struct {
	addr   string
	port   uint32
	health corev3.HealthStatus
	proto  corev3.SocketAddress_Protocol
}

func lbEndpoint(e endpoint) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HealthStatus: e.health,
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Protocol:      e.proto,
				Address:       e.addr,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: e.port},
			}}},
		}},
	}
}

// assignment puts each endpoint list in a locality of its own.
func assignment(localities ...[]*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	for i, eps := range localities {
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:    &corev3.Locality{Zone: string(rune('a' + i))},
			LbEndpoints: eps,
		})
	}
	return cla
}

func peersAt(addrs ...string) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		eps = append(eps, lbEndpoint(endpoint{addr: a, port: 7403}))
	}
	return assignment(eps)
}

// testLogger sends logs to t.Log.
func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func openXDS(t *testing.T, x *discovery.XDS) {
	t.Helper()
	if err := x.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := x.Close(); err != nil {
			t.Error(err)
		}
	})
}

func newXDS(t *testing.T, server string) *discovery.XDS {
	return &discovery.XDS{Server: server, Cluster: cluster, NodeID: "pod-a", Insecure: true, Logger: testLogger(t)}
}

func TestXDS_Peers_FollowsSnapshots(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	x := newXDS(t, cp.addr)
	if _, err := x.Peers(context.Background()); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Errorf("Peers before Open: error = %v, want not open", err)
	}
	openXDS(t, x)
	if got, err := x.Peers(context.Background()); err == nil || len(got) != 0 {
		t.Errorf("Peers before any snapshot = %q, %v; want none and an error", got, err)
	}

	cp.setEndpoints(t, "1", assignment(
		[]*endpointv3.LbEndpoint{
			lbEndpoint(endpoint{addr: "10.0.0.7", port: 7403, health: corev3.HealthStatus_HEALTHY}),
			lbEndpoint(endpoint{addr: "10.0.0.9", port: 7403, health: corev3.HealthStatus_UNHEALTHY}),
			lbEndpoint(endpoint{addr: "10.0.0.10", port: 7403, health: corev3.HealthStatus_DRAINING}),
		},
		[]*endpointv3.LbEndpoint{
			lbEndpoint(endpoint{addr: "10.0.0.8", port: 7500}), // health UNKNOWN
			lbEndpoint(endpoint{addr: "10.0.0.11", port: 7403, health: corev3.HealthStatus_TIMEOUT}),
			lbEndpoint(endpoint{addr: "10.0.0.7", port: 7403, health: corev3.HealthStatus_HEALTHY}),
		},
	))
	waitPeers(t, x, []string{"10.0.0.7:7403", "10.0.0.8:7500"}, false)

	first := cp.waitRequest(t, "the subscription", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetNode() != nil })
	if got, want := first.GetNode().GetId(), "pod-a"; got != want {
		t.Errorf("node id = %q, want %q", got, want)
	}
	if got, want := first.GetTypeUrl(), resourcev3.EndpointType; got != want {
		t.Errorf("type_url = %q, want %q", got, want)
	}
	if got, want := first.GetResourceNames(), []string{cluster}; !slices.Equal(got, want) {
		t.Errorf("resource_names = %q, want %q", got, want)
	}
	cp.waitRequest(t, "the ACK of version 1", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetVersionInfo() == "1" && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
	})

	cp.setEndpoints(t, "2", peersAt("fd00::7", "10.0.0.12"))
	waitPeers(t, x, []string{"10.0.0.12:7403", "[fd00::7]:7403"}, false)
	cp.waitRequest(t, "the ACK of version 2", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetVersionInfo() == "2" && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil
	})

	cp.setEndpoints(t, "3", assignment())
	waitPeers(t, x, []string{}, false)
}

func TestXDS_NACK(t *testing.T) {
	tests := []struct {
		name string
		bad  *endpointv3.LbEndpoint
		want string // in error_detail
	}{
		{"port zero", lbEndpoint(endpoint{addr: "10.0.0.9", port: 0}), "port 0"},
		{"port out of range", lbEndpoint(endpoint{addr: "10.0.0.9", port: 70000}), "PortValue"},
		{"udp", lbEndpoint(endpoint{addr: "10.0.0.9", port: 7403, proto: corev3.SocketAddress_UDP}), "peer sync is TCP"},
		{"pipe", &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/peer.sock"}}},
		}}}, "not a socket address"},
		{"named port", &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "10.0.0.9", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "sync"},
			}}},
		}}}, `named port "sync" is not supported`},
		{"named endpoint", &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_EndpointName{EndpointName: "pod-b"}},
			"named endpoints are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			x := newXDS(t, cp.addr)
			openXDS(t, x)
			cp.setEndpoints(t, "1", peersAt("10.0.0.7"))
			waitPeers(t, x, []string{"10.0.0.7:7403"}, false)

			// A good endpoint beside the bad one: the whole update is refused.
			cp.setEndpoints(t, "2", assignment([]*endpointv3.LbEndpoint{lbEndpoint(endpoint{addr: "10.0.0.8", port: 7403}), tt.bad}))
			nack := cp.waitRequest(t, "a NACK", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
			if got, want := nack.GetVersionInfo(), "1"; got != want {
				t.Errorf("NACK version_info = %q, want the last accepted %q", got, want)
			}
			if nack.GetResponseNonce() == "" {
				t.Error("NACK has no response_nonce")
			}
			if got := nack.GetErrorDetail().GetMessage(); !strings.Contains(got, tt.want) {
				t.Errorf("NACK error_detail = %q, want it to contain %q", got, tt.want)
			}
			waitPeers(t, x, []string{"10.0.0.7:7403"}, true)

			cp.setEndpoints(t, "3", peersAt("10.0.0.8"))
			waitPeers(t, x, []string{"10.0.0.8:7403"}, false)
		})
	}
}

func TestXDS_Reconnect(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	x := newXDS(t, cp.addr)
	openXDS(t, x)
	cp.setEndpoints(t, "1", peersAt("10.0.0.7"))
	waitPeers(t, x, []string{"10.0.0.7:7403"}, false)

	cp.stop()
	waitPeers(t, x, []string{"10.0.0.7:7403"}, true) // kept, marked stale

	// The restarted control plane has lost its state and numbers versions afresh.
	cp2 := startControlPlane(t, cp.addr)
	cp2.setEndpoints(t, "1", peersAt("10.0.0.8"))
	waitPeers(t, x, []string{"10.0.0.8:7403"}, false)
	resumed := cp2.waitRequest(t, "the new subscription", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetNode() != nil })
	if got, want := resumed.GetVersionInfo(), "1"; got != want {
		t.Errorf("first request on the new stream: version_info = %q, want the last accepted %q", got, want)
	}
	if got := resumed.GetResponseNonce(); got != "" {
		t.Errorf("first request on the new stream: response_nonce = %q, want none", got)
	}
}

func TestXDS_Close_StopsStream(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.setEndpoints(t, "1", peersAt("10.0.0.7"))
	x := newXDS(t, cp.addr)
	if err := x.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, x, []string{"10.0.0.7:7403"}, false)
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waits for the stream goroutine, so none may be left, at once.
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "discovery.(*XDS)") {
		t.Errorf("a goroutine of XDS outlived Close:\n%s", stacks)
	}
	// The server sees the stream end.
	eventually(t, "the server to see the stream closed", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return cp.closed > 0
	})
}

func TestXDS_Peers_StaleAfterContextEnds(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.setEndpoints(t, "1", peersAt("10.0.0.7"))
	x := newXDS(t, cp.addr)
	ctx, cancel := context.WithCancel(context.Background())
	if err := x.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := x.Close(); err != nil {
			t.Error(err)
		}
	})
	waitPeers(t, x, []string{"10.0.0.7:7403"}, false)
	cancel()
	waitPeers(t, x, []string{"10.0.0.7:7403"}, true)
}

func TestXDS_TLS(t *testing.T) {
	cert, pool := selfSigned(t)
	cp := startControlPlane(t, "127.0.0.1:0", grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	cp.setEndpoints(t, "1", peersAt("10.0.0.7"))

	x := newXDS(t, cp.addr)
	x.Insecure = false
	x.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	openXDS(t, x)
	waitPeers(t, x, []string{"10.0.0.7:7403"}, false)

	// A plaintext client gets nothing from a TLS server.
	plain := newXDS(t, cp.addr)
	openXDS(t, plain)
	cp.waitRequest(t, "the TLS client's ACK", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetResponseNonce() != "" })
	if got, err := plain.Peers(context.Background()); err == nil || len(got) != 0 {
		t.Errorf("plaintext client against a TLS server: Peers = %q, %v; want none and an error", got, err)
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "xds test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestXDS_Open_Errors(t *testing.T) {
	tests := []struct {
		name string
		x    *discovery.XDS
		want string
	}{
		{"no server", &discovery.XDS{Insecure: true}, "no server address"},
		{"bad server", &discovery.XDS{Server: "xds-server", Insecure: true}, `xds server "xds-server"`},
		{"no transport security", &discovery.XDS{Server: "127.0.0.1:18000"}, "set TLS, or Insecure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.x.Open(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestXDS_Lifecycle(t *testing.T) {
	x := &discovery.XDS{Server: "127.0.0.1:1", Insecure: true}
	if err := x.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := x.Open(context.Background()); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Errorf("second Open: %v, want already open", err)
	}
	for i := range 2 {
		if err := x.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := x.Peers(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Peers after Close: %v, want closed", err)
	}
	if err := x.Open(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Open after Close: %v, want closed", err)
	}

	// Cancelling Open's context stops the stream as Close would.
	y := &discovery.XDS{Server: "127.0.0.1:1", Insecure: true}
	ctx, cancel := context.WithCancel(context.Background())
	if err := y.Open(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := y.Close(); err != nil {
		t.Errorf("Close after the context ended: %v", err)
	}
}
