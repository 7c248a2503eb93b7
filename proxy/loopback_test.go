//go:build linux

package proxy

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// TestNew_OutboundLoopbackOnly: the outbound proxy has no authentication, so an
// address other hosts can reach needs the explicit opt-in (issue 10 item 6).
func TestNew_OutboundLoopbackOnly(t *testing.T) {
	for _, c := range []struct {
		addr  string
		allow bool
		ok    bool
	}{
		{"127.0.0.1:0", false, true},
		{"localhost:0", false, true},
		{"[::1]:0", false, true},
		{"0.0.0.0:0", false, false},
		{":0", false, false},
		{"[::]:0", false, false},
		{"10.1.2.3:7402", false, false},
		{"0.0.0.0:0", true, true},
	} {
		_, err := New(Options{OutboundAddress: c.addr, OutboundNonLoopback: c.allow})
		if c.ok {
			if err != nil {
				t.Errorf("%s, allow %v: %v", c.addr, c.allow, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "outbound.allow_non_loopback = true") || !strings.Contains(err.Error(), c.addr) {
			t.Errorf("%s, allow %v: New = %v, want an error naming the address and outbound.allow_non_loopback", c.addr, c.allow, err)
		}
	}
}

// TestOutbound_RemoteClientCannotReachLoopback opens the outbound proxy to other hosts
// and sends requests from a client in another network namespace, over a veth pair, as
// another pod would: no target that is or resolves to a loopback or unspecified address
// is reached, by absolute-form request or by CONNECT, while a non-loopback target is, and
// a client on loopback (the app) still reaches loopback services (issue 10 item 6).
func TestOutbound_RemoteClientCannotReachLoopback(t *testing.T) {
	lab := newVethLab(t)

	var secretHits atomic.Int64 // a loopback-only service, as the admin API is
	secret := listenHTTP(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secretHits.Add(1)
		io.WriteString(w, "secret")
	}))
	public := listenHTTP(t, lab.hostIP+":0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "public")
	}))
	p := startProxy(t, Options{OutboundAddress: "0.0.0.0:0", OutboundNonLoopback: true})
	_, port, _ := net.SplitHostPort(p.OutboundAddr().String())
	_, secretPort, _ := net.SplitHostPort(secret)
	proxyFromNS := net.JoinHostPort(lab.hostIP, port)

	for _, c := range []struct {
		name, raw string
		want      int
	}{
		{"GET 127.0.0.1", "GET http://" + secret + "/v1/contexts HTTP/1.1\r\nHost: " + secret + "\r\n\r\n", http.StatusForbidden},
		{"GET localhost", "GET http://localhost:" + secretPort + "/ HTTP/1.1\r\nHost: localhost:" + secretPort + "\r\n\r\n", http.StatusForbidden},
		{"GET ::1", "GET http://[::1]:" + secretPort + "/ HTTP/1.1\r\nHost: [::1]:" + secretPort + "\r\n\r\n", http.StatusForbidden},
		{"GET 0.0.0.0", "GET http://0.0.0.0:" + secretPort + "/ HTTP/1.1\r\nHost: 0.0.0.0:" + secretPort + "\r\n\r\n", http.StatusForbidden},
		{"GET 127.1.2.3", "GET http://127.1.2.3:" + secretPort + "/ HTTP/1.1\r\nHost: 127.1.2.3:" + secretPort + "\r\n\r\n", http.StatusForbidden},
		{"CONNECT 127.0.0.1", "CONNECT " + secret + " HTTP/1.1\r\nHost: " + secret + "\r\n\r\n", http.StatusForbidden},
		{"CONNECT localhost", "CONNECT localhost:" + secretPort + " HTTP/1.1\r\nHost: localhost:" + secretPort + "\r\n\r\n", http.StatusForbidden},
		{"GET a non-loopback target", "GET http://" + public + "/ HTTP/1.1\r\nHost: " + public + "\r\n\r\n", http.StatusOK},
		{"CONNECT a non-loopback target", "CONNECT " + public + " HTTP/1.1\r\nHost: " + public + "\r\n\r\n", http.StatusOK},
	} {
		t.Run("remote/"+c.name, func(t *testing.T) {
			conn := lab.dial(t, proxyFromNS)
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, c.raw); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: strings.Fields(c.raw)[0]})
			if err != nil {
				t.Fatal(err)
			}
			var body []byte
			if res.StatusCode != http.StatusOK || !strings.HasPrefix(c.raw, "CONNECT") {
				body, _ = io.ReadAll(res.Body)
			}
			res.Body.Close()
			if got := res.StatusCode; got != c.want {
				t.Errorf("status %d, want %d; body %q", got, c.want, body)
			}
			if c.want == http.StatusForbidden && !strings.Contains(string(body), "loopback") {
				t.Errorf("the 403 %q does not say why", body)
			}
		})
	}
	if n := secretHits.Load(); n != 0 {
		t.Fatalf("a client outside the pod reached the loopback-only service %d times", n)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(p))
	waitMetrics(t, reg, `
# HELP ctxprop_proxy_refused_total Requests the proxy refused with 403, by direction and reason: loopback_target (a client outside the pod asked the outbound proxy for a loopback or unspecified address).
# TYPE ctxprop_proxy_refused_total counter
ctxprop_proxy_refused_total{direction="outbound",reason="loopback_target"} 7
`)

	// The app, on loopback, still reaches loopback services through the same proxy.
	local := proxiedClient(t, p)
	for _, target := range []string{secret, "localhost:" + secretPort} {
		res, body := get(t, local, "http://"+target+"/v1/contexts", nil)
		if res.StatusCode != http.StatusOK || body != "secret" {
			t.Errorf("loopback client to %s: status %d, body %q; want 200 secret", target, res.StatusCode, body)
		}
	}
	if got, want := secretHits.Load(), int64(2); got != want {
		t.Errorf("the loopback service saw %d requests from the loopback client, want %d", got, want)
	}
}

// listenHTTP serves h on addr until the test ends and returns the bound address.
func listenHTTP(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// vethLab is a network namespace joined to the test's own by a veth pair: a client in
// it reaches this host from a non-loopback address, as another pod would.
type vethLab struct {
	ns, hostIP, nsIP string
}

// newVethLab builds the namespace. It needs root and iproute2, which the test requires
// rather than skips: without them the defence it checks goes untested.
func newVethLab(t *testing.T) *vethLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test builds a network namespace and needs root (it checks that the outbound proxy keeps clients from other hosts off loopback)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs iproute2's ip command: apt-get install iproute2")
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	subnet := fmt.Sprintf("10.%d.%d.", 200+int(b[0])%50, b[1])
	lab := &vethLab{ns: "cxo" + id, hostIP: subnet + "1", nsIP: subnet + "2"}
	host, peer := "cxoh"+id, "cxop"+id
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", lab.ns).Run() // takes the veth pair with it
		exec.Command("ip", "link", "del", host).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", lab.ns},
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", lab.ns},
		{"addr", "add", lab.hostIP + "/30", "dev", host},
		{"link", "set", host, "up"},
		{"-n", lab.ns, "addr", "add", lab.nsIP + "/30", "dev", peer},
		{"-n", lab.ns, "link", "set", peer, "up"},
		{"-n", lab.ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return lab
}

// dial connects to addr from inside the namespace: the socket is made by a thread that
// has entered the namespace, and keeps it after the thread has left.
func (l *vethLab) dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The thread returns to the test's namespace before it is unlocked; if it
		// cannot, it stays locked and dies with this goroutine.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer home.Close()
		there, err := os.Open("/run/netns/" + l.ns)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer there.Close()
		if err := setns(there); err != nil {
			done <- result{err: fmt.Errorf("enter namespace %s: %w", l.ns, err)}
			return
		}
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if setns(home) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{conn, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got, want := r.conn.LocalAddr().(*net.TCPAddr).IP.String(), l.nsIP; got != want {
		r.conn.Close()
		t.Fatalf("the client's address is %s, want the namespace's %s", got, want)
	}
	return r.conn
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }
