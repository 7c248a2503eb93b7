//go:build linux

// The transparent interception tests (issue 13 item 4) need root, iproute2, iptables,
// setpriv (util-linux) and node: `make tools` installs them.

package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"

	"github.com/ctxprop/ctxprop/admin"
)

// The uids of the pod: the sidecar's is the one the Kubernetes injector runs it as, whose
// traffic the rules never redirect; the app's is any other.
const (
	sidecarUID = 65532
	appUID     = 1000
)

// requireInterceptTools fails, never skips, when the test cannot run: without root and
// the tools, transparent interception goes untested.
func requireInterceptTools(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("transparent interception tests build network namespaces and iptables rules in them: run them as root (CI does)")
	}
	for _, tool := range []string{"ip", "iptables", "setpriv", "node"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run `make tools`", tool)
		}
	}
}

// inNamespace runs f on an OS thread that has entered network namespace ns. Sockets f
// creates stay in ns after the thread has left it.
func inNamespace(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer home.Close()
		there, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer there.Close()
		if err := unix.Setns(int(there.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		err = f()
		// A thread that cannot go home stays locked and ends with this goroutine.
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func listenIn(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inNamespace(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// installRedirect runs the real `sidecar intercept` in namespace ns, as the injected init
// container does: the app's outbound TCP to the transparent listener (7404), except the
// sidecar's own (proxyUID) and what goes over loopback, and inbound TCP for inboundPorts to
// the inbound listener (7401), for IPv4 and IPv6. removeRedirect runs `sidecar intercept
// -remove`.
func installRedirect(t testing.TB, ns string, proxyUID int, inboundPorts []int) {
	t.Helper()
	ports := make([]string, len(inboundPorts))
	for i, p := range inboundPorts {
		ports[i] = strconv.Itoa(p)
	}
	interceptIn(t, ns, []string{
		"CTXPROP_INTERCEPT_PROXY_UID=" + strconv.Itoa(proxyUID),
		"CTXPROP_INTERCEPT_INBOUND_PORTS=" + strings.Join(ports, ","),
	})
}

// removeRedirect undoes installRedirect.
func removeRedirect(t testing.TB, ns string) {
	t.Helper()
	interceptIn(t, ns, nil, "-remove")
}

// interceptIn runs `sidecar intercept` with args in namespace ns, on the defaults and env.
func interceptIn(t testing.TB, ns string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, buildSidecar(t), "intercept"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sidecar intercept %s in %s: %v\n%s", strings.Join(args, " "), ns, err, out)
	}
}

// addIPv6 gives node i of lab the address ipv6(lab, i), so that the pod and the
// downstream also talk over IPv6.
func addIPv6(t testing.TB, lab *netLab) {
	t.Helper()
	for i, ns := range lab.ns {
		sh(t, "ip", "-n", ns, "addr", "add", ipv6(lab, i)+"/64", "dev", fmt.Sprintf("cxp%s%d", lab.id, i), "nodad")
	}
}

// ipv6 is node i's IPv6 address in its canonical text form (no leading zeros in a group),
// as the kernel and net report it.
func ipv6(lab *netLab, i int) string {
	return netip.MustParseAddr(fmt.Sprintf("fd0c:%s::%d", lab.id[:4], i+1)).String()
}

// sharedDir is a directory other uids can read (t.TempDir is not: its parents are 0700).
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctxprop-transparent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runAs starts bin in namespace ns as uid, its output kept for the failure report.
func runAs(t testing.TB, ns string, uid int, env []string, bin string, args ...string) *logTail {
	t.Helper()
	id := strconv.Itoa(uid)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups", bin}, args...)...)
	cmd.Env = env
	return startLogged(t, cmd, fmt.Sprintf("%s (uid %d) output", filepath.Base(bin), uid))
}

// interceptPod is a pod in a namespace: a sidecar (uid 65532) behind the rules of
// installRedirect and, optionally, the test app (uid 1000).
type interceptPod struct {
	ns, ip string
	admin  *admin.Client
	base   string // the admin API's URL
}

// startInterceptSidecar runs `sidecar run` in ns as sidecarUID, with the pinned flag
// "theme" and trustedSource's context members trusted; app is inbound.app.
func startInterceptSidecar(t testing.TB, ns, ip, trustedSource, app string, extraEnv ...string) *interceptPod {
	t.Helper()
	bin := buildSidecar(t)
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := sharedDir(t)
	store := filepath.Join(dir, "store")
	if err := os.Mkdir(store, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(store, sidecarUID, sidecarUID); err != nil {
		t.Fatal(err)
	}
	flagsFile := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(flagsFile, []byte(`{"flags": {"theme": {"state": "ENABLED", "variants": {"dark": "dark", "light": "light"}, "defaultVariant": "dark"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append([]string{
		"PATH=" + os.Getenv("PATH"),
		"CTXPROP_NODE_NAME=pod",
		"CTXPROP_LOG_FORMAT=json",
		"CTXPROP_ADMIN_ADDRESS=" + ip + ":7400",
		"CTXPROP_ADMIN_ALLOW_NON_LOOPBACK=true",
		"CTXPROP_INBOUND_ADDRESS=0.0.0.0:7401",
		"CTXPROP_INBOUND_APP=" + app,
		"CTXPROP_INBOUND_TRUSTED_SOURCES=" + trustedSource,
		"CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:7402",
		"CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS=127.0.0.1:7404",
		"CTXPROP_SYNC_ADDRESS=" + ip + ":7403",
		"CTXPROP_STORE_PATH=" + filepath.Join(store, "pod.db"),
		"CTXPROP_FLAGS_FILES=" + flagsFile,
		"CTXPROP_FLAGS_PINNED=theme",
	}, extraEnv...)
	logs := runAs(t, ns, sidecarUID, env, bin, "run", "-config", "-")
	p := &interceptPod{ns: ns, ip: ip, base: "http://" + ip + ":7400"}
	p.admin = admin.NewClient(p.base, nil)
	deadline := time.Now().Add(30 * time.Second)
	for p.admin.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("sidecar in %s not ready after 30s\n%s", ns, logs)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	return p
}

// metric returns the value of one series of the sidecar's /metrics (0 when absent).
func (p *interceptPod) metric(t testing.TB, series string) float64 {
	t.Helper()
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := metricValue(string(body), series)
	return v
}

// waitMetric polls series until it equals want.
func (p *interceptPod) waitMetric(t testing.TB, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := p.metric(t, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// buildApp builds testdata/transparentapp into a directory other uids can read.
func buildApp(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(sharedDir(t), "transparentapp")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/transparentapp").CombinedOutput(); err != nil {
		t.Fatalf("go build transparentapp: %v\n%s", err, out)
	}
	return bin
}

// seen is what the downstream HTTP and gRPC servers saw of one request.
type seen struct {
	host, remote string
	header       http.Header // gRPC metadata as a header
}

// downstream is the other service, in a namespace of its own: an HTTP recorder, a gRPC
// server (health and reflection), a TLS echo, a raw TCP echo, a server-first echo and a
// server that holds connections.
type downstream struct {
	ip          string
	fingerprint string // SHA-256 of the TLS echo's certificate

	mu   sync.Mutex
	reqs map[string]seen
	echo []echoSeen // raw and TLS connections, in the order they ended
}

type echoSeen struct {
	port     int
	remote   string
	received string // sha256 of the bytes received
}

func (d *downstream) request(t testing.TB, id string) seen {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.reqs[id]
	if !ok {
		t.Fatalf("the downstream never saw request %s", id)
	}
	return s
}

func (d *downstream) lastEcho(t testing.TB, port int) echoSeen {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d.mu.Lock()
		for i := len(d.echo) - 1; i >= 0; i-- {
			if d.echo[i].port == port {
				e := d.echo[i]
				d.echo = append(d.echo[:i], d.echo[i+1:]...)
				d.mu.Unlock()
				return e
			}
		}
		d.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no connection to port %d ended at the downstream", port)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// startDownstream starts the servers on ip, and the HTTP recorder on ip6 too.
func startDownstream(t testing.TB, ns, ip, ip6 string) *downstream {
	t.Helper()
	d := &downstream{ip: ip, reqs: map[string]seen{}}
	record := func(id string, s seen) {
		d.mu.Lock()
		d.reqs[id] = s
		d.mu.Unlock()
	}

	httpLn := listenIn(t, ns, ip+":9000")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record(r.URL.Query().Get("id"), seen{host: r.Host, remote: r.RemoteAddr, header: r.Header.Clone()})
		fmt.Fprintf(w, "downstream %s saw %s", ip, r.URL.Query().Get("id"))
	})}
	go srv.Serve(httpLn)
	go srv.Serve(listenIn(t, ns, net.JoinHostPort(ip6, "9000")))
	t.Cleanup(func() { srv.Close() })

	grpcLn := listenIn(t, ns, ip+":9001")
	recordMD := func(ctx context.Context) {
		md, _ := metadata.FromIncomingContext(ctx)
		h := http.Header{}
		for k, v := range md {
			h[http.CanonicalHeaderKey(k)] = v
		}
		record(h.Get("X-Request-Id"), seen{header: h})
	}
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			recordMD(ctx)
			grpc.SetTrailer(ctx, metadata.Pairs("x-downstream", "trailer"))
			return next(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			recordMD(ss.Context())
			ss.SetTrailer(metadata.Pairs("x-downstream", "trailer"))
			return next(srv, ss)
		}),
	)
	healthSrv := health.NewServer()
	healthSrv.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
	grpc_health_v1.RegisterHealthServer(gs, healthSrv)
	reflection.Register(gs)
	go gs.Serve(grpcLn)
	t.Cleanup(gs.Stop)

	cert := selfSigned(t)
	sum := sha256.Sum256(cert.Certificate[0])
	d.fingerprint = hex.EncodeToString(sum[:])
	tlsLn := tls.NewListener(listenIn(t, ns, ip+":9443"), &tls.Config{Certificates: []tls.Certificate{cert}})
	go d.serveEcho(tlsLn, 9443, "")
	go d.serveEcho(listenIn(t, ns, ip+":9100"), 9100, "")
	go d.serveEcho(listenIn(t, ns, ip+":9101"), 9101, "220 downstream ready\r\n")
	holdLn := listenIn(t, ns, ip+":9102")
	go func() {
		for {
			c, err := holdLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line := make([]byte, 5)
				if _, err := io.ReadFull(c, line); err != nil {
					return
				}
				io.WriteString(c, "k")
				io.Copy(io.Discard, c) // until the client closes
			}()
		}
	}()
	return d
}

// serveEcho echoes every connection of ln, after greeting first when greeting is set,
// and records a hash of what it received once the client has half-closed.
func (d *downstream) serveEcho(ln net.Listener, port int, greeting string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if greeting != "" {
				io.WriteString(c, greeting)
			}
			h := sha256.New()
			if _, err := io.Copy(c, io.TeeReader(c, h)); err != nil {
				return
			}
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			d.mu.Lock()
			d.echo = append(d.echo, echoSeen{port: port, remote: c.RemoteAddr().String(), received: hexSum(h)})
			d.mu.Unlock()
		}()
	}
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "downstream"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// appResult is the JSON answer of the app's /call.
type appResult struct {
	Body     string            `json:"body"`
	Trailer  map[string]string `json:"trailer"`
	Sent     string            `json:"sent"`
	Received string            `json:"received"`
	Greeting string            `json:"greeting"`
	Error    string            `json:"error"`
	UID      int               `json:"uid"`
}

// callApp asks the app, through the pod's inbound redirect, to make one call.
func callApp(t testing.TB, podIP string, hdr http.Header, q url.Values) appResult {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+podIP+":8080/call?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var res appResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("app answered %s %q: %v", resp.Status, body, err)
	}
	if res.UID != appUID {
		t.Fatalf("the app runs as uid %d, want %d", res.UID, appUID)
	}
	return res
}

func get(t testing.TB, rawURL string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestTransparent_Interception runs a pod (a sidecar as uid 65532 and an app as uid
// 1000, in a network namespace with the rules of the real `sidecar intercept`) and a downstream service in
// another namespace, joined by veth pairs. The app has no proxy settings and calls the
// downstream with clients that ignore HTTP_PROXY; the test checks, with real packets,
// that the context (baggage ctx.name, pinned flags, the trace) still reaches the
// downstream, that TLS and raw TCP pass byte for byte, that redirected inbound traffic
// reaches the app at its original port, that the sidecar's own traffic is not looped,
// and that removing the rules restores direct traffic (issue 13 items 2 and 4).
func TestTransparent_Interception(t *testing.T) {
	requireInterceptTools(t)
	lab := newNetLab(t, 2)
	podNS, podIP := lab.ns[0], lab.ip(0)
	addIPv6(t, lab)
	down := startDownstream(t, lab.ns[1], lab.ip(1), ipv6(lab, 1))
	installRedirect(t, podNS, sidecarUID, []int{8080, 8081, 8082})
	// A sync peer in the downstream's namespace that only records who connects: the
	// sidecar's own gossip (TCP push/pull) must reach it, not the transparent listener.
	peerLn := listenIn(t, lab.ns[1], down.ip+":7403")
	peerConns := make(chan string, 64)
	go func() {
		for {
			c, err := peerLn.Accept()
			if err != nil {
				return
			}
			select {
			case peerConns <- c.RemoteAddr().String():
			default:
			}
			c.Close()
		}
	}()
	// The test process, on the bridge, stands for a trusted caller (an ingress).
	pod := startInterceptSidecar(t, podNS, podIP, lab.subnet+"254", "127.0.0.1:8081",
		"CTXPROP_OUTBOUND_TRANSPARENT_MAX_CONNECTIONS=16", "CTXPROP_OUTBOUND_SNIFF_TIMEOUT=300ms",
		"CTXPROP_SYNC_PEERS="+down.ip+":7403")
	runAs(t, podNS, appUID, []string{"PATH=" + os.Getenv("PATH"), "HOME=/tmp", "APP_ADDR=0.0.0.0:8080", "APP_LOOPBACK_ADDR=127.0.0.1:8081", "APP_RAW_ADDR=0.0.0.0:8082"}, buildApp(t))
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + podIP + ":8080/where")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the app is not reachable through the inbound redirect after 30s")
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	downIP := down.ip
	conns := func(proto string) string {
		return `ctxprop_proxy_transparent_connections_total{direction="outbound",protocol="` + proto + `"}`
	}

	t.Run("inbound redirect reaches the app at its original port", func(t *testing.T) {
		before := pod.metric(t, `ctxprop_proxy_received_total{direction="inbound"}`)
		status, body := get(t, "http://"+podIP+":8080/where")
		if status != http.StatusOK || !strings.Contains(body, "pod listener "+podIP+":8080") {
			t.Errorf("GET %s:8080 = %d %q, want the app's pod listener", podIP, status, body)
		}
		if !strings.Contains(body, `flag header "dark"`) {
			t.Errorf("the app saw %q, want the pinned flag header the inbound proxy adds", body)
		}
		// Direct to the inbound listener: inbound.app, as without interception.
		status, body = get(t, "http://"+podIP+":7401/")
		if status != http.StatusOK || !strings.Contains(body, "loopback listener 127.0.0.1:8081") {
			t.Errorf("GET %s:7401 = %d %q, want inbound.app (the loopback listener)", podIP, status, body)
		}
		// A port the app binds on loopback only stays out of reach, as in Istio >= 1.10.
		status, body = get(t, "http://"+podIP+":8081/")
		if status != http.StatusBadGateway || !strings.Contains(body, "loopback only") {
			t.Errorf("GET %s:8081 = %d %q, want 502 explaining that a loopback-only app port is not reachable", podIP, status, body)
		}
		pod.waitMetric(t, `ctxprop_proxy_received_total{direction="inbound"}`, before+3)
	})

	t.Run("inbound raw TCP is spliced to the app's port byte for byte", func(t *testing.T) {
		data := make([]byte, 256<<10)
		rand.Read(data)
		data[0] = 0 // not HTTP
		c, err := net.DialTimeout("tcp", podIP+":8082", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Errorf("the app echoed %d bytes that differ from the %d sent", len(got), len(data))
		}
		pod.waitMetric(t, `ctxprop_proxy_transparent_connections_total{direction="inbound",protocol="opaque"}`, 1)
	})

	// Each client: a request with a context enters the pod; the app calls the
	// downstream forwarding only traceparent; the downstream gets the context.
	traceID := "4bf92f3577b34da6a3ce929d0e0e4736"
	for i, c := range []struct {
		client, port string
		grpc         bool
	}{
		{"go", "9000", false},
		{"node", "9000", false},
		{"grpc-unary", "9001", true},
		{"grpc-stream", "9001", true},
	} {
		t.Run("context reaches the downstream through "+c.client, func(t *testing.T) {
			proto := "http1"
			if c.grpc {
				proto = "h2c"
			}
			before := pod.metric(t, conns(proto))
			id := fmt.Sprintf("req-%s", c.client)
			parent := fmt.Sprintf("00f067aa0ba902b%d", i)
			hdr := http.Header{
				"Traceparent": {"00-" + traceID + "-" + parent + "-01"},
				"Baggage":     {"ctx.name=order-" + c.client + ",user.tier=gold"},
			}
			res := callApp(t, podIP, hdr, url.Values{"client": {c.client}, "target": {downIP + ":" + c.port}, "id": {id}})
			if res.Error != "" {
				t.Fatalf("the app's call failed: %s", res.Error)
			}
			got := down.request(t, id)
			baggage := strings.Join(got.header.Values("Baggage"), ",")
			for _, want := range []string{"ctx.name=order-" + c.client, "ctx.flag.theme=dark"} {
				if !strings.Contains(baggage, want) {
					t.Errorf("the downstream's baggage is %q, want %s in it", baggage, want)
				}
			}
			tp := got.header.Get("Traceparent")
			if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != traceID || parts[2] == parent {
				t.Errorf("the downstream's traceparent is %q, want trace-id %s and a parent-id of the pod's hops", tp, traceID)
			}
			if c.grpc {
				if got, want := res.Trailer["x-downstream"], "trailer"; got != want {
					t.Errorf("the app's gRPC trailer x-downstream = %q, want %q (trailers must pass)", got, want)
				}
			}
			pod.waitMetric(t, conns(proto), before+1)
		})
	}

	t.Run("the connection goes to the original destination, not to the Host", func(t *testing.T) {
		// The Host names the sidecar's own admin API: a proxy that followed it would
		// hand the app's request to the admin API.
		res := callApp(t, podIP, http.Header{}, url.Values{"client": {"go"}, "target": {downIP + ":9000"}, "id": {"req-host"}, "host": {"127.0.0.1:7400"}})
		if res.Error != "" || !strings.HasPrefix(res.Body, "downstream "+downIP) {
			t.Fatalf("the app's call = %q, error %q; want the downstream's answer", res.Body, res.Error)
		}
		got := down.request(t, "req-host")
		if got.host != "127.0.0.1:7400" {
			t.Errorf("the downstream saw Host %q, want the app's own 127.0.0.1:7400 unchanged", got.host)
		}
		if !strings.HasPrefix(got.remote, podIP+":") {
			t.Errorf("the downstream's client is %s, want the pod %s", got.remote, podIP)
		}
	})

	t.Run("IPv6: the original destination is recovered too", func(t *testing.T) {
		target := net.JoinHostPort(ipv6(lab, 1), "9000")
		res := callApp(t, podIP, http.Header{"Baggage": {"ctx.name=order-v6"}}, url.Values{"client": {"go"}, "target": {target}, "id": {"req-v6"}})
		if res.Error != "" {
			t.Fatalf("the app's call to %s failed: %s", target, res.Error)
		}
		got := down.request(t, "req-v6")
		if baggage := got.header.Get("Baggage"); !strings.Contains(baggage, "ctx.name=order-v6") {
			t.Errorf("the downstream's baggage over IPv6 is %q, want ctx.name=order-v6 in it", baggage)
		}
		if want := "[" + ipv6(lab, 0) + "]:"; !strings.HasPrefix(got.remote, want) {
			t.Errorf("the downstream's client is %s, want the pod's %s", got.remote, ipv6(lab, 0))
		}
	})

	t.Run("an HTTP/1.1 Upgrade: h2c is answered over HTTP/1.1, with the header work", func(t *testing.T) {
		// The test process is root, not the sidecar's uid: its connections from the
		// pod's namespace are redirected like the app's.
		var c net.Conn
		if err := inNamespace(podNS, func() (err error) {
			c, err = net.DialTimeout("tcp", downIP+":9000", 10*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "GET /record?id=req-h2c-upgrade HTTP/1.1\r\nHost: downstream\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
			"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nBaggage: ctx.name=upgrade\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/1.1" {
			t.Errorf("answer %s %s, want 200 over HTTP/1.1", resp.Proto, resp.Status)
		}
		got := down.request(t, "req-h2c-upgrade")
		if v := got.header.Get("Http2-Settings"); v != "" {
			t.Errorf("the downstream got HTTP2-Settings %q, want it dropped as hop-by-hop", v)
		}
		if baggage := got.header.Get("Baggage"); !strings.Contains(baggage, "ctx.name=upgrade") {
			t.Errorf("the downstream's baggage is %q, want ctx.name=upgrade", baggage)
		}
	})

	t.Run("TLS passes untouched", func(t *testing.T) {
		before := pod.metric(t, conns("tls"))
		res := callApp(t, podIP, http.Header{}, url.Values{"client": {"tls"}, "target": {downIP + ":9443"}, "fingerprint": {down.fingerprint}, "size": {"300000"}})
		if res.Error != "" {
			t.Fatalf("the app's TLS call failed: %s", res.Error)
		}
		echo := down.lastEcho(t, 9443)
		if res.Sent != res.Received || echo.received != res.Sent {
			t.Errorf("sent %s, the downstream received %s, the app got back %s; want one hash", res.Sent, echo.received, res.Received)
		}
		pod.waitMetric(t, conns("tls"), before+1)
	})

	t.Run("raw TCP passes byte for byte, half-close included", func(t *testing.T) {
		before := pod.metric(t, conns("opaque"))
		res := callApp(t, podIP, http.Header{}, url.Values{"client": {"raw"}, "target": {downIP + ":9100"}, "size": {"1048576"}})
		if res.Error != "" {
			t.Fatalf("the app's raw call failed: %s", res.Error)
		}
		echo := down.lastEcho(t, 9100)
		if res.Sent != res.Received || echo.received != res.Sent {
			t.Errorf("sent %s, the downstream received %s, the app got back %s; want one hash", res.Sent, echo.received, res.Received)
		}
		if !strings.HasPrefix(echo.remote, podIP+":") {
			t.Errorf("the downstream's client is %s, want the pod %s", echo.remote, podIP)
		}
		pod.waitMetric(t, conns("opaque"), before+1)
	})

	t.Run("a server-first protocol is spliced after the sniff timeout", func(t *testing.T) {
		before := pod.metric(t, `ctxprop_proxy_transparent_sniff_timeouts_total{direction="outbound"}`)
		res := callApp(t, podIP, http.Header{}, url.Values{"client": {"raw-server-first"}, "target": {downIP + ":9101"}, "size": {"4096"}})
		if res.Error != "" {
			t.Fatalf("the app's call failed: %s", res.Error)
		}
		if got, want := res.Greeting, "220 downstream ready\r\n"; got != want {
			t.Errorf("greeting = %q, want %q", got, want)
		}
		if echo := down.lastEcho(t, 9101); res.Sent != res.Received || echo.received != res.Sent {
			t.Errorf("sent %s, the downstream received %s, the app got back %s; want one hash", res.Sent, echo.received, res.Received)
		}
		pod.waitMetric(t, `ctxprop_proxy_transparent_sniff_timeouts_total{direction="outbound"}`, before+1)
	})

	t.Run("an unreachable original destination resets the app's connection", func(t *testing.T) {
		res := callApp(t, podIP, http.Header{}, url.Values{"client": {"raw"}, "target": {downIP + ":9999"}, "size": {"64"}})
		if res.Error == "" || res.Received == res.Sent {
			t.Fatalf("a connection to a closed port went through: %+v", res)
		}
		pod.waitMetric(t, `ctxprop_proxy_transparent_dial_errors_total{direction="outbound"}`, 1)
	})

	t.Run("a connection not redirected is refused, never looped", func(t *testing.T) {
		res := callApp(t, podIP, http.Header{}, url.Values{"client": {"raw"}, "target": {"127.0.0.1:7404"}, "size": {"64"}})
		if res.Received == res.Sent {
			t.Fatalf("a direct connection to the transparent listener was echoed: %+v", res)
		}
		pod.waitMetric(t, `ctxprop_proxy_transparent_refused_total{reason="not_redirected"}`, 1)
	})

	t.Run("a redirected connection meant for another host is refused, never relayed", func(t *testing.T) {
		// A neighbour on the pod's link routes an address that is not the pod's through
		// it; the pod's inbound rule redirects whatever the destination address.
		const foreign = "198.51.100.7"
		sh(t, "ip", "-n", lab.ns[1], "route", "add", foreign+"/32", "via", podIP)
		defer sh(t, "ip", "-n", lab.ns[1], "route", "del", foreign+"/32", "via", podIP)
		var c net.Conn
		err := inNamespace(lab.ns[1], func() (err error) {
			c, err = net.DialTimeout("tcp", foreign+":8080", 5*time.Second)
			return err
		})
		switch {
		case errors.Is(err, syscall.ECONNRESET):
			// Reset before the dial returned: refused at once.
		case err != nil:
			t.Fatalf("dial %s:8080 through the pod: %v", foreign, err)
		default:
			defer c.Close()
			fmt.Fprintf(c, "GET /where HTTP/1.1\r\nHost: %s:8080\r\n\r\n", foreign)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, _ := io.ReadAll(c); len(got) != 0 {
				t.Errorf("a connection for %s was answered %q; want it reset", foreign, got)
			}
		}
		pod.waitMetric(t, `ctxprop_proxy_transparent_refused_total{reason="not_local"}`, 1)
	})

	t.Run("past the connection limit a connection is reset and counted", func(t *testing.T) {
		pod.waitMetric(t, "ctxprop_proxy_transparent_open_connections", 0)
		res := callApp(t, podIP, http.Header{}, url.Values{"client": {"limit"}, "target": {downIP + ":9102"}, "count": {"16"}})
		if res.Error != "" || !strings.HasPrefix(res.Body, "over the limit: ") {
			t.Fatalf("the app held 16 connections and opened one more: %q, error %q; want the 17th refused", res.Body, res.Error)
		}
		pod.waitMetric(t, `ctxprop_proxy_transparent_refused_total{reason="connection_limit"}`, 1)
		pod.waitMetric(t, "ctxprop_proxy_transparent_open_connections", 0)
	})

	t.Run("the sidecar's own connections are not redirected", func(t *testing.T) {
		// Every connection the sidecar made to the downstream, and its gossip to the
		// sync peer, came from uid 65532, which the rules exempt. Had one been
		// redirected it would have come back to the transparent listener: the counts
		// are exactly the app's connections.
		select {
		case remote := <-peerConns:
			if !strings.HasPrefix(remote, podIP+":") {
				t.Errorf("the sync peer's client is %s, want the pod %s", remote, podIP)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the sidecar's sync traffic never reached its peer")
		}
		for proto, want := range map[string]float64{"http1": 5, "h2c": 2, "tls": 1, "opaque": 19} {
			if got := pod.metric(t, conns(proto)); got != want {
				t.Errorf("%s = %v, want %v", conns(proto), got, want)
			}
		}
		if got := pod.metric(t, `ctxprop_proxy_transparent_refused_total{reason="not_redirected"}`); got != 1 {
			t.Errorf("not_redirected refusals = %v, want only the test's own 1", got)
		}
	})

	t.Run("removing the rules restores direct traffic", func(t *testing.T) {
		before := pod.metric(t, conns("http1"))
		removeRedirect(t, podNS)
		status, body := get(t, "http://"+podIP+":8080/where")
		if status != http.StatusOK || !strings.Contains(body, `flag header ""`) {
			t.Errorf("GET %s:8080 without rules = %d %q, want the app directly, without the sidecar's flag header", podIP, status, body)
		}
		res := callApp(t, podIP, http.Header{"Baggage": {"ctx.name=direct"}}, url.Values{"client": {"go"}, "target": {downIP + ":9000"}, "id": {"req-direct"}})
		if res.Error != "" {
			t.Fatalf("the app's call failed: %s", res.Error)
		}
		if got := down.request(t, "req-direct").header.Get("Baggage"); got != "" {
			t.Errorf("without rules the downstream got baggage %q, want none: the app forwards none itself", got)
		}
		if got := pod.metric(t, conns("http1")); got != before {
			t.Errorf("the transparent listener saw %v more connections without rules", got-before)
		}
	})
}

// BenchmarkTransparent measures the cost per request of the transparent path against the
// explicit outbound proxy, with the same client, request, sidecar and downstream: a
// client in the pod's namespace (uid 0, so the rules redirect it) sends a GET with a
// traceparent and a baggage ctx.name to a downstream in another namespace, either
// through HTTP_PROXY (explicit: 127.0.0.1:7402) or by dialling the downstream, which the
// rules redirect to the transparent listener. Keep-alive on both sides, one connection.
// "direct" is the same request from outside the pod with no sidecar on its way, for
// scale. sidecar-cpu-µs/op is the sidecar process's CPU time per request (its
// process_cpu_seconds_total, in clock ticks of 10 ms: run enough requests). BENCHMARKS.md
// has the numbers and the command.
func BenchmarkTransparent(b *testing.B) {
	requireInterceptTools(b)
	lab := newNetLab(b, 2)
	podNS, podIP := lab.ns[0], lab.ip(0)
	addIPv6(b, lab)
	down := startDownstream(b, lab.ns[1], lab.ip(1), ipv6(lab, 1))
	installRedirect(b, podNS, sidecarUID, []int{8080})
	pod := startInterceptSidecar(b, podNS, podIP, lab.subnet+"254", "127.0.0.1:8081", "CTXPROP_LOG_LEVEL=warn")
	inPod := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = inNamespace(podNS, func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	explicit := &url.URL{Scheme: "http", Host: "127.0.0.1:7402"}
	for _, path := range []struct {
		name  string
		proxy func(*http.Request) (*url.URL, error)
		dial  func(context.Context, string, string) (net.Conn, error)
	}{
		{"direct", nil, (&net.Dialer{}).DialContext},
		{"explicit", http.ProxyURL(explicit), inPod},
		{"transparent", nil, inPod},
	} {
		b.Run(path.name, func(b *testing.B) {
			tr := &http.Transport{Proxy: path.proxy, DialContext: path.dial, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			req, err := http.NewRequest("GET", "http://"+down.ip+":9000/record?id=bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			req.Header.Set("Baggage", "ctx.name=bench")
			// The sidecar's CPU time per request is the cost that does not depend on
			// how busy the machine is; the latency (ns/op) does.
			cpu := pod.metric(b, "process_cpu_seconds_total")
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.StopTimer()
			b.ReportMetric((pod.metric(b, "process_cpu_seconds_total")-cpu)*1e6/float64(b.N), "sidecar-cpu-µs/op")
		})
	}
}
