// Package intercept installs, in the current network namespace, the packet redirection
// that makes the sidecar transparent (SPEC §5): the app's outbound TCP to the sidecar's
// transparent listener, inbound TCP for the app's ports to the inbound proxy, the
// sidecar's own traffic and loopback left alone.
//
// The rules live in the nat table, in chains of their own (prefix CTXPROP_) that one
// rule each in PREROUTING and OUTPUT jumps to, for IPv4 and IPv6. They are written with
// the iptables binaries' restore command, as Istio's istio-iptables does, so that a whole
// family's change is one transaction: a pod never runs with half the rules, such as the
// redirection without the exclusion of the sidecar's own uid, which would loop the
// sidecar's traffic back to itself. Both flavours of iptables work, iptables-legacy and
// iptables-nft; which one a node uses is detected as Istio does, or configured.
package intercept
