//go:build linux

package intercept

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// helperDial, set in a child process's environment, makes the test binary dial that
// address, print the first line it reads and exit: a dialer that runs as another uid.
const helperDial = "INTERCEPT_TEST_DIAL"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperDial); addr != "" {
		line, err := dialLine(addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(line)
		os.Exit(0)
	}
	code := m.Run()
	if helperBin.path != "" {
		os.RemoveAll(filepath.Dir(helperBin.path))
	}
	os.Exit(code)
}

// lab is two network namespaces joined by a veth pair: "pod", where the rules go, and
// "peer", another host. Both have IPv4 and IPv6 addresses; peer has two of each, so that
// one can be excluded and the other not.
type lab struct {
	pod, peer         string
	podIP, podIP6     netip.Addr
	peerIP, peerIP6   netip.Addr
	peerIP2, peerIP6b netip.Addr
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and iptables rules in them, and needs root")
	}
	for _, tool := range []string{"ip", "iptables-legacy-restore", "iptables-nft-restore", "ip6tables-legacy-save", "ip6tables-nft-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s: run make tools (apt-get install iproute2 iptables)", tool)
		}
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	n := fmt.Sprintf("10.%d.%d.", 150+int(b[0])%50, b[1])
	n6 := fmt.Sprintf("fd00:c7:%x::", b[1])
	l := &lab{
		pod: "cxip" + id, peer: "cxiq" + id,
		podIP: netip.MustParseAddr(n + "1"), peerIP: netip.MustParseAddr(n + "2"), peerIP2: netip.MustParseAddr(n + "3"),
		podIP6: netip.MustParseAddr(n6 + "1"), peerIP6: netip.MustParseAddr(n6 + "2"), peerIP6b: netip.MustParseAddr(n6 + "3"),
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", l.pod).Run() // takes the veth pair and every rule with it
		exec.Command("ip", "netns", "del", l.peer).Run()
	})
	a, z := "cxia"+id, "cxiz"+id
	for _, args := range [][]string{
		{"netns", "add", l.pod},
		{"netns", "add", l.peer},
		{"link", "add", a, "netns", l.pod, "type", "veth", "peer", "name", z, "netns", l.peer},
		{"-n", l.pod, "addr", "add", l.podIP.String() + "/29", "dev", a},
		{"-n", l.peer, "addr", "add", l.peerIP.String() + "/29", "dev", z},
		{"-n", l.peer, "addr", "add", l.peerIP2.String() + "/29", "dev", z},
		{"-n", l.pod, "addr", "add", l.podIP6.String() + "/64", "dev", a, "nodad"},
		{"-n", l.peer, "addr", "add", l.peerIP6.String() + "/64", "dev", z, "nodad"},
		{"-n", l.peer, "addr", "add", l.peerIP6b.String() + "/64", "dev", z, "nodad"},
		{"-n", l.pod, "link", "set", a, "up"},
		{"-n", l.peer, "link", "set", z, "up"},
		{"-n", l.pod, "link", "set", "lo", "up"},
		{"-n", l.peer, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return l
}

// exec returns an Exec that runs commands in namespace ns.
func nsExec(ns string) Exec {
	return func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		return Run(ctx, stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}
}

// save returns the nat table of ns as the backend's iptables-save prints it, without its
// comment lines (which carry the time).
func save(t *testing.T, ns, backend string, f Family) string {
	t.Helper()
	out, err := nsExec(ns)(context.Background(), nil, binary(backend, f, "save"), "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for line := range strings.Lines(string(out)) {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// in runs fn on a thread inside namespace ns. Sockets fn makes stay in ns afterwards, and
// so do processes it starts.
func in(ns string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// The thread goes home before it is unlocked; if it cannot, it stays locked and
		// dies with this goroutine, so no other goroutine runs in ns by accident.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer home.Close()
		there, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			done <- err
			return
		}
		defer there.Close()
		if err := unix.Setns(int(there.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		err = fn()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// serve listens on addr inside ns and answers every connection with one line: name, and
// the connection's original destination as the kernel's NAT recorded it ("-" where the
// namespace tracks no connections, as one without NAT rules).
func serve(t *testing.T, ns, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := in(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dst, err := originalDst(c.(*net.TCPConn))
			switch {
			case errors.Is(err, unix.ENOENT):
				dst = "-" // no connection tracking in this namespace: nothing rewrote it
			case err != nil:
				dst = "?" + err.Error()
			}
			fmt.Fprintf(c, "%s %s\n", name, dst)
			c.Close()
		}
	}()
}

// originalDst reads SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6), both 80 in
// linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h: the destination a
// connection had before REDIRECT changed it, or its own local address if nothing did.
func originalDst(c *net.TCPConn) (string, error) {
	const soOriginalDst = 80
	raw, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	local := c.LocalAddr().(*net.TCPAddr)
	var out string
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.IP.To4() != nil {
			var sa unix.RawSockaddrInet4
			n := uint32(unsafe.Sizeof(sa))
			if _, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_IP, soOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)), 0); e != 0 {
				serr = e
				return
			}
			port := int(sa.Port>>8 | sa.Port<<8&0xff00)
			out = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(port)).String()
			return
		}
		var sa unix.RawSockaddrInet6
		n := uint32(unsafe.Sizeof(sa))
		if _, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_IPV6, soOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n)), 0); e != 0 {
			serr = e
			return
		}
		port := int(sa.Port>>8 | sa.Port<<8&0xff00)
		out = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(port)).String()
	})
	if err != nil {
		return "", err
	}
	return out, serr
}

// dialLine connects to addr and returns the first line the server sends.
func dialLine(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	return line, nil
}

// dial connects from inside ns, as root, and returns the answer's line without "\n".
func dial(t *testing.T, ns string, addr netip.AddrPort) string {
	t.Helper()
	var line string
	if err := in(ns, func() (err error) { line, err = dialLine(addr.String()); return err }); err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns, err)
	}
	return strings.TrimSuffix(line, "\n")
}

// dialAs connects from inside ns in a child process running as uid.
func dialAs(t *testing.T, ns string, uid int, addr netip.AddrPort) string {
	t.Helper()
	bin := helperBinary(t)
	var out []byte
	err := in(ns, func() error {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperDial+"="+addr.String())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		var err error
		if out, err = cmd.Output(); err != nil {
			return fmt.Errorf("%v: %s", err, stderr.String())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dial %s from %s as uid %d: %v", addr, ns, uid, err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

var helperBin struct {
	path string
	err  error
}

// helperBinary copies the test binary where another uid may run it: go test builds it in
// a directory only its owner can enter.
func helperBinary(t *testing.T) string {
	t.Helper()
	if helperBin.path != "" || helperBin.err != nil {
		if helperBin.err != nil {
			t.Fatal(helperBin.err)
		}
		return helperBin.path
	}
	helperBin.err = func() error {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "intercept-helper")
		if err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		src, err := os.Open(self)
		if err != nil {
			return err
		}
		defer src.Close()
		path := filepath.Join(dir, "helper")
		dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			return err
		}
		if _, err := io.Copy(dst, src); err != nil {
			dst.Close()
			return err
		}
		if err := dst.Close(); err != nil {
			return err
		}
		helperBin.path = path
		return nil
	}()
	if helperBin.err != nil {
		t.Fatal(helperBin.err)
	}
	return helperBin.path
}

func ap(a netip.Addr, port int) netip.AddrPort { return netip.AddrPortFrom(a, uint16(port)) }

func itoa(n int) string { return strconv.Itoa(n) }

func errorsAs(err error, target any) bool { return errors.As(err, target) }
