//go:build !linux

package proxy

import (
	"fmt"
	"net"
	"net/netip"
)

// originalDst needs Linux connection tracking (SO_ORIGINAL_DST); elsewhere no
// connection was redirected.
func originalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, fmt.Errorf("%w: SO_ORIGINAL_DST is Linux only", errNoOriginalDst)
}
