package intercept

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The chains the rules live in. Every chain whose name starts with ChainPrefix belongs
// to the sidecar: Remove deletes them all, whatever version of the sidecar made them.
const (
	ChainPrefix   = "CTXPROP_"
	InboundChain  = ChainPrefix + "INBOUND"
	OutboundChain = ChainPrefix + "OUTBOUND"
)

// multiportMax is the most ports one multiport match takes (xt_multiport's
// XT_MULTI_PORTS); longer lists are split over several rules.
const multiportMax = 15

// Family is an IP version: its rules are written with its own binaries (iptables or
// ip6tables).
type Family int

// The families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string { return "IPv" + strconv.Itoa(int(f)) }

// loopback is the family's loopback network, never redirected.
func (f Family) loopback() string {
	if f == IPv6 {
		return "::1/128"
	}
	return "127.0.0.0/8"
}

// Rules is what to redirect and what to leave alone. The zero value redirects nothing.
type Rules struct {
	// ProxyUID is the uid the sidecar runs as: its connections are never redirected
	// outbound, or the sidecar's own upstream connections would come back to it.
	ProxyUID int
	// OutboundPort is the port of the transparent listener the app's outbound TCP is
	// redirected to; 0 redirects no outbound traffic.
	OutboundPort int
	// InboundPort is the port of the inbound proxy that inbound TCP for the app's ports
	// is redirected to; 0 redirects no inbound traffic.
	InboundPort int
	// InboundPorts are the app's ports redirected inbound; none means every port not
	// excluded.
	InboundPorts []int
	// SidecarPorts are the ports of the sidecar's own listeners (admin, sync, the
	// proxies): never redirected inbound.
	SidecarPorts []int
	// ExcludeInboundPorts are other ports never redirected inbound.
	ExcludeInboundPorts []int
	// ExcludeOutboundPorts are destination ports never redirected outbound.
	ExcludeOutboundPorts []int
	// ExcludeOutboundCIDRs are destinations never redirected outbound; each applies to
	// the family of its address. Loopback never is, whether listed or not.
	ExcludeOutboundCIDRs []netip.Prefix
	// IPv6 asks for the same rules in ip6tables; false leaves IPv6 without rules (and
	// removes the sidecar's, if an earlier run installed some).
	IPv6 bool
}

// natTable is the part of the nat table the sidecar owns: its chains and, in order, the
// rules it appends, as iptables-save prints them ("-A CHAIN match... -j TARGET").
type natTable struct {
	chains []string
	rules  []string
}

// comment is a rule's comment match: it shows in iptables-save why the rule is there.
func comment(why string) string { return "-m comment --comment " + strconv.Quote(why) }

// table returns the family's share of the nat table. It is empty for IPv6 when r.IPv6
// is false.
func (r Rules) table(f Family) natTable {
	var t natTable
	if f == IPv6 && !r.IPv6 {
		return t
	}
	if r.InboundPort != 0 {
		in := func(spec string) { t.rules = append(t.rules, "-A "+InboundChain+" "+spec) }
		t.chains = append(t.chains, InboundChain)
		t.rules = append(t.rules, "-A PREROUTING -p tcp -j "+InboundChain)
		for _, ports := range portLists(append([]int{r.InboundPort}, r.SidecarPorts...)) {
			in("-p tcp -m multiport --dports " + ports + " " + comment("sidecar ports") + " -j RETURN")
		}
		for _, ports := range portLists(r.ExcludeInboundPorts) {
			in("-p tcp -m multiport --dports " + ports + " " + comment("intercept.exclude_inbound_ports") + " -j RETURN")
		}
		to := " -j REDIRECT --to-ports " + strconv.Itoa(r.InboundPort)
		if len(r.InboundPorts) == 0 {
			in("-p tcp " + comment("every other port to the inbound proxy") + to)
		}
		for _, ports := range portLists(r.InboundPorts) {
			in("-p tcp -m multiport --dports " + ports + " " + comment("intercept.inbound_ports to the inbound proxy") + to)
		}
	}
	if r.OutboundPort != 0 {
		out := func(spec string) { t.rules = append(t.rules, "-A "+OutboundChain+" "+spec) }
		t.chains = append(t.chains, OutboundChain)
		t.rules = append(t.rules, "-A OUTPUT -p tcp -j "+OutboundChain)
		// The uid first: the sidecar's connections to anywhere, the pod's own address
		// included, leave as they are.
		out("-m owner --uid-owner " + strconv.Itoa(r.ProxyUID) + " " + comment("intercept.proxy_uid, the sidecar itself") + " -j RETURN")
		// Everything on lo: loopback destinations, and the app's calls to its own pod
		// address, which the kernel routes over lo too. Those reach the app directly, as
		// in Istio ("appN => appN by lo"); see README, "How traffic reaches the sidecar".
		out("-o lo " + comment("loopback interface") + " -j RETURN")
		out("-d " + f.loopback() + " " + comment("loopback") + " -j RETURN")
		for _, p := range r.ExcludeOutboundCIDRs {
			if p.Addr().Is4() == (f == IPv4) {
				out("-d " + p.Masked().String() + " " + comment("intercept.exclude_outbound_cidrs") + " -j RETURN")
			}
		}
		for _, ports := range portLists(r.ExcludeOutboundPorts) {
			out("-p tcp -m multiport --dports " + ports + " " + comment("intercept.exclude_outbound_ports") + " -j RETURN")
		}
		out("-p tcp " + comment("to the transparent listener") + " -j REDIRECT --to-ports " + strconv.Itoa(r.OutboundPort))
	}
	return t
}

// portLists returns the ports, sorted and without duplicates or zeros, as comma-separated
// lists of at most multiportMax.
func portLists(ports []int) []string {
	ps := slices.Clone(ports)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	ps = slices.DeleteFunc(ps, func(p int) bool { return p == 0 })
	var lists []string
	for chunk := range slices.Chunk(ps, multiportMax) {
		s := make([]string, len(chunk))
		for i, p := range chunk {
			s[i] = strconv.Itoa(p)
		}
		lists = append(lists, strings.Join(s, ","))
	}
	return lists
}

// WriteTo writes the rules in iptables-save form, each family as the input of its
// restore command with --noflush, which is what Install applies to a namespace that holds
// none of them yet. It is what `sidecar intercept -dry-run` prints.
func (r Rules) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	for _, f := range []Family{IPv4, IPv6} {
		t := r.table(f)
		if len(t.rules) == 0 {
			fmt.Fprintf(&b, "# %s: no rules\n", f)
			continue
		}
		fmt.Fprintf(&b, "# %s: %s-restore --noflush\n", f, iptables(f))
		b.WriteString(t.script(nil))
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// iptables names the family's command.
func iptables(f Family) string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}
