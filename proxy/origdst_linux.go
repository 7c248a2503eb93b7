//go:build linux

package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from <linux/netfilter_ipv6/ip6_tables.h>:
// the IPv6 form of SO_ORIGINAL_DST, at level SOL_IPV6. x/sys/unix does not name it; it
// has the same number as its IPv4 twin.
const ip6tSoOriginalDst = 80

// originalDst returns the destination c's client connected to before an iptables
// REDIRECT (or DNAT) rule sent the connection here, from the connection tracking entry
// of the connection. A connection that no rule rewrote has an entry whose destination
// is c's own local address, or, when nothing loaded connection tracking, none at all:
// errNoOriginalDst.
func originalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: %T is not a socket", errNoOriginalDst, c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	v4 := local != nil && local.IP.To4() != nil
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if v4 {
			// sockaddr_in fits the 16 bytes of an ipv6_mreq, the usual way to read it.
			var m *unix.IPv6Mreq
			if m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST); serr == nil {
				b := m.Multiaddr
				port := binary.BigEndian.Uint16(b[2:4])
				dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
			}
			return
		}
		// sockaddr_in6 (28 bytes) fits an ip6_mtuinfo (32).
		var m *unix.IPv6MTUInfo
		if m, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSoOriginalDst); serr == nil {
			// The port is in network byte order in memory, whatever the host's order.
			port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&m.Addr.Port))[:])
			dst = netip.AddrPortFrom(netip.AddrFrom16(m.Addr.Addr), port)
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if errors.Is(serr, unix.ENOENT) || errors.Is(serr, unix.ENOPROTOOPT) {
		return netip.AddrPort{}, fmt.Errorf("%w: %v", errNoOriginalDst, serr)
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("reading the original destination (SO_ORIGINAL_DST): %w", serr)
	}
	return dst, nil
}
