package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/sync/discovery"
)

// xdsServer is go-control-plane's ADS server over a snapshot cache on a loopback
// listener: the control plane a user runs, in the test process. It records which
// snapshot version each node has acknowledged.
type xdsServer struct {
	addr  string
	cache cachev3.SnapshotCache

	mu     sync.Mutex
	nodeOf map[int64]string           // stream id → node id, from the stream's first request
	acked  map[string]map[string]bool // node id → versions it ACKed
}

// startXDSServer serves until the test ends; opts may add server credentials.
func startXDSServer(t *testing.T, opts ...grpc.ServerOption) *xdsServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &xdsServer{addr: lis.Addr().String(), nodeOf: map[int64]string{}, acked: map[string]map[string]bool{}}
	logf := func(format string, args ...any) { t.Logf("xds server: "+format, args...) }
	s.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cplog.LoggerFuncs{WarnFunc: logf, ErrorFunc: logf})
	ctx, cancel := context.WithCancel(context.Background())
	srv := serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if n := req.GetNode().GetId(); n != "" {
				s.nodeOf[id] = n
			}
			// An ACK answers a response (a nonce) without an error; its version is the
			// one the client now uses (xDS protocol, "ACK and NACK semantics").
			if node := s.nodeOf[id]; req.GetResponseNonce() != "" && req.GetErrorDetail() == nil {
				if s.acked[node] == nil {
					s.acked[node] = map[string]bool{}
				}
				s.acked[node][req.GetVersionInfo()] = true
			}
			return nil
		},
	})
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	t.Cleanup(func() {
		g.Stop()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("xds server: %v", err)
		}
	})
	return s
}

// setPeers publishes, as version, the sync addresses (127.0.0.1:port) node is to see as
// the endpoints of the cluster ctxprop-peers.
func (s *xdsServer) setPeers(t *testing.T, node, version string, addrs ...string) {
	t.Helper()
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: discovery.DefaultXDSCluster}
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		p, err := strconv.ParseUint(port, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       host,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
				}}},
			}},
		})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{resourcev3.EndpointType: {cla}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

// waitACK polls until node has acknowledged version.
func (s *xdsServer) waitACK(t *testing.T, node, version string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		ok := s.acked[node][version]
		s.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not acknowledge xDS version %q within 20s", node, version)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// waitEndpointsLog polls p's log for the xDS source's "endpoints updated" line of
// version with the given number of peers: the sidecar itself took that list.
func waitEndpointsLog(t *testing.T, p *sidecarProc, version string, peers int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
		for sc.Scan() {
			var line struct {
				Message string  `json:"@message"`
				Version string  `json:"version"`
				Peers   float64 `json:"peers"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "endpoints updated" && line.Version == version && int(line.Peers) == peers {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"endpoints updated\" log of version %q with %d peers within 20s\n%s", version, peers, p.logs)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// TestSync_XDSDiscovery runs `sidecar run` processes that find each other only through
// a go-control-plane xDS server (sync.xds, EDS over ADS), in plaintext on loopback and
// by mTLS with certificates made here. pod-a and pod-b are given each other and
// replicate a context; pod-c is given only itself and stays alone until a new snapshot
// adds it to pod-a's endpoints, after which it gets the context; a snapshot that removes
// pod-b is taken by pod-a too.
func TestSync_XDSDiscovery(t *testing.T) {
	bin := buildSidecar(t)
	for _, tc := range []struct {
		name string
		// transport returns the server's options and the sidecars' environment.
		transport func(t *testing.T) ([]grpc.ServerOption, map[string]string)
	}{
		{"plaintext on loopback", func(*testing.T) ([]grpc.ServerOption, map[string]string) { return nil, nil }},
		{"mTLS", xdsMTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, tlsEnv := tc.transport(t)
			srv := startXDSServer(t, opts...)
			dir := t.TempDir()
			names := []string{"pod-a", "pod-b", "pod-c"}
			addr := map[string]string{}
			for _, n := range names {
				addr[n] = freePort(t)
			}
			a, b, c := addr["pod-a"], addr["pod-b"], addr["pod-c"]
			srv.setPeers(t, "pod-a", "1", a, b)
			srv.setPeers(t, "pod-b", "1", a, b)
			srv.setPeers(t, "pod-c", "1", c)

			procs := map[string]*sidecarProc{}
			clients := map[string]*admin.Client{}
			for _, n := range names {
				env := map[string]string{
					"CTXPROP_NODE_NAME":    n,
					"CTXPROP_STORE_PATH":   filepath.Join(dir, n+".db"),
					"CTXPROP_SYNC_ADDRESS": addr[n],
					"CTXPROP_SYNC_XDS":     srv.addr,
				}
				for k, v := range tlsEnv {
					env[k] = v
				}
				procs[n] = startSidecar(t, bin, env)
				clients[n] = admin.NewClient(procs[n].admin, nil)
			}

			// pod-a and pod-b know each other from the xDS server alone.
			if _, err := clients["pod-a"].Incr(context.Background(), "order-xds", "items", 1, 0); err != nil {
				t.Fatal(err)
			}
			waitCounter(t, []*admin.Client{clients["pod-b"]}, "order-xds", "items", 1)

			// pod-c has taken its list, which names only itself: no sidecar knows it.
			srv.waitACK(t, "pod-c", "1")
			if peers, err := clients["pod-c"].Peers(context.Background()); err != nil || len(peers) != 0 {
				t.Fatalf("pod-c, given only itself, has peers %+v (%v); want none", peers, err)
			}
			if v, err := clients["pod-c"].Counter(context.Background(), "order-xds", "items"); err == nil && v != 0 {
				t.Fatalf("pod-c, given only itself, has order-xds/items = %d", v)
			}

			// A new snapshot adds pod-c to pod-a's endpoints: pod-a joins it.
			srv.setPeers(t, "pod-a", "2", a, b, c)
			waitCounter(t, []*admin.Client{clients["pod-c"]}, "order-xds", "items", 1)
			waitEndpointsLog(t, procs["pod-a"], "2", 3)

			// A snapshot that removes pod-b is taken as well.
			srv.setPeers(t, "pod-a", "3", a, c)
			srv.waitACK(t, "pod-a", "3")
			waitEndpointsLog(t, procs["pod-a"], "3", 2)

			// The fleet still replicates: a write on pod-c reaches both others.
			if _, err := clients["pod-c"].Incr(context.Background(), "order-xds", "items", 1, 0); err != nil {
				t.Fatal(err)
			}
			waitCounter(t, []*admin.Client{clients["pod-a"], clients["pod-b"]}, "order-xds", "items", 2)
		})
	}
}

// xdsMTLS makes a CA, a server certificate for the name control-plane.test (no IP
// address, so the sidecars must use sync.xds_server_name) and a client certificate, and
// returns server options that require a client certificate from that CA, and the
// sidecars' environment naming the files.
func xdsMTLS(t *testing.T) ([]grpc.ServerOption, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := newCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "ctxprop test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, nil, nil)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caCert.Raw)

	srvCert, srvKey := newCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "control-plane.test"},
		DNSNames:    []string{"control-plane.test"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, caKey)
	cliCert, cliKey := newCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "ctxprop sidecar"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, caKey)
	writePEM(t, filepath.Join(dir, "client.crt"), "CERTIFICATE", cliCert.Raw)
	der, err := x509.MarshalPKCS8PrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "client.key"), "PRIVATE KEY", der)

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey, Leaf: srvCert}},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	return []grpc.ServerOption{grpc.Creds(creds)}, map[string]string{
		"CTXPROP_SYNC_XDS_CA_FILE":     filepath.Join(dir, "ca.pem"),
		"CTXPROP_SYNC_XDS_CERT_FILE":   filepath.Join(dir, "client.crt"),
		"CTXPROP_SYNC_XDS_KEY_FILE":    filepath.Join(dir, "client.key"),
		"CTXPROP_SYNC_XDS_SERVER_NAME": "control-plane.test",
	}
}

// newCert makes a certificate from tmpl, valid for an hour around now, signed by parent
// (self-signed when parent is nil).
func newCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestXDSTLSConfig_Errors: bad TLS files stop the sidecar at start-up with the setting
// named, rather than failing each reconnect in the background.
func TestXDSTLSConfig_Errors(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	client := func(name string, notAfter time.Time) (certFile, keyFile string) {
		cert, key := newCert(t, &x509.Certificate{NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		writePEM(t, certFile, "CERTIFICATE", cert.Raw)
		writePEM(t, keyFile, "PRIVATE KEY", der)
		return certFile, keyFile
	}
	goodCert, goodKey := client("good", time.Time{})
	_, otherKey := client("other", time.Time{})
	expiredCert, expiredKey := client("expired", time.Now().Add(-time.Minute))
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		sync config.Sync
		want string // a substring of the error
	}{
		{"missing CA file", config.Sync{XDSCAFile: filepath.Join(dir, "nope.pem")}, "sync.xds_ca_file: open "},
		{"CA file without a certificate", config.Sync{XDSCAFile: notPEM}, "sync.xds_ca_file " + notPEM + ": no PEM certificate in it"},
		{"missing client certificate", config.Sync{XDSCAFile: filepath.Join(dir, "ca.pem"), XDSCertFile: filepath.Join(dir, "nope.crt"), XDSKeyFile: goodKey}, "sync.xds_cert_file " + filepath.Join(dir, "nope.crt")},
		{"key of another certificate", config.Sync{XDSCAFile: filepath.Join(dir, "ca.pem"), XDSCertFile: goodCert, XDSKeyFile: otherKey}, "private key does not match public key"},
		{"expired client certificate", config.Sync{XDSCAFile: filepath.Join(dir, "ca.pem"), XDSCertFile: expiredCert, XDSKeyFile: expiredKey}, "the client certificate expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := xdsTLSConfig(tc.sync, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("xdsTLSConfig = %v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		got, err := xdsTLSConfig(config.Sync{XDSCAFile: filepath.Join(dir, "ca.pem"), XDSCertFile: goodCert, XDSKeyFile: goodKey, XDSServerName: "cp.test"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if got.ServerName != "cp.test" || len(got.Certificates) != 1 || got.RootCAs == nil {
			t.Fatalf("xdsTLSConfig = %+v", got)
		}
	})
	t.Run("no CA file, no TLS", func(t *testing.T) {
		if got, err := xdsTLSConfig(config.Sync{XDS: "127.0.0.1:18000"}, time.Now()); got != nil || err != nil {
			t.Fatalf("xdsTLSConfig = %v, %v; want nil, nil", got, err)
		}
	})
}

// TestSync_XDSDownStaticPeersJoined: a failing source hides no other source's peers. With
// sync.peers and a sync.xds that does not answer (the control plane not up yet), the
// static peer is joined and replicates.
func TestSync_XDSDownStaticPeersJoined(t *testing.T) {
	bin := buildSidecar(t)
	dir := t.TempDir()
	// A loopback port nothing listens on: the xDS stream fails and is retried.
	down := freePort(t)
	a, b := freePort(t), freePort(t)
	pa := startSidecar(t, bin, map[string]string{
		"CTXPROP_NODE_NAME":    "pod-a",
		"CTXPROP_STORE_PATH":   filepath.Join(dir, "pod-a.db"),
		"CTXPROP_SYNC_ADDRESS": a,
		"CTXPROP_SYNC_PEERS":   b,
		"CTXPROP_SYNC_XDS":     down,
	})
	pb := startSidecar(t, bin, map[string]string{
		"CTXPROP_NODE_NAME":    "pod-b",
		"CTXPROP_STORE_PATH":   filepath.Join(dir, "pod-b.db"),
		"CTXPROP_SYNC_ADDRESS": b,
	})
	if _, err := admin.NewClient(pa.admin, nil).Incr(context.Background(), "order-static", "items", 1, 0); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, []*admin.Client{admin.NewClient(pb.admin, nil)}, "order-static", "items", 1)
}
