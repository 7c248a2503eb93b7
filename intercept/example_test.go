package intercept_test

import (
	"net/netip"
	"os"

	"github.com/ctxprop/ctxprop/intercept"
)

// The rules for a pod whose app serves on 8080 and talks to a database on 5432 that
// needs no context, IPv4 only, as `sidecar intercept -dry-run` prints them.
func ExampleRules_WriteTo() {
	r := intercept.Rules{
		ProxyUID:             65532,
		OutboundPort:         7404,
		InboundPort:          7401,
		InboundPorts:         []int{8080},
		SidecarPorts:         []int{7400, 7402, 7403, 7404},
		ExcludeOutboundPorts: []int{5432},
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")},
	}
	r.WriteTo(os.Stdout)
	// Output:
	// # IPv4: iptables-restore --noflush
	// *nat
	// :CTXPROP_INBOUND - [0:0]
	// :CTXPROP_OUTBOUND - [0:0]
	// -A PREROUTING -p tcp -j CTXPROP_INBOUND
	// -A CTXPROP_INBOUND -p tcp -m multiport --dports 7400,7401,7402,7403,7404 -m comment --comment "sidecar ports" -j RETURN
	// -A CTXPROP_INBOUND -p tcp -m multiport --dports 8080 -m comment --comment "intercept.inbound_ports to the inbound proxy" -j REDIRECT --to-ports 7401
	// -A OUTPUT -p tcp -j CTXPROP_OUTBOUND
	// -A CTXPROP_OUTBOUND -m owner --uid-owner 65532 -m comment --comment "intercept.proxy_uid, the sidecar itself" -j RETURN
	// -A CTXPROP_OUTBOUND -o lo -m comment --comment "loopback interface" -j RETURN
	// -A CTXPROP_OUTBOUND -d 127.0.0.0/8 -m comment --comment "loopback" -j RETURN
	// -A CTXPROP_OUTBOUND -d 169.254.169.254/32 -m comment --comment "intercept.exclude_outbound_cidrs" -j RETURN
	// -A CTXPROP_OUTBOUND -p tcp -m multiport --dports 5432 -m comment --comment "intercept.exclude_outbound_ports" -j RETURN
	// -A CTXPROP_OUTBOUND -p tcp -m comment --comment "to the transparent listener" -j REDIRECT --to-ports 7404
	// COMMIT
	// # IPv6: no rules
}
