package proxy

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/ctxprop/ctxprop/headers"
)

// Stats are the proxy's own counts since New, for the sidecar's metrics. They are
// not per context; per-context telemetry goes to the Store.
type Stats struct {
	Inbound  uint64 // inbound requests handled
	Outbound uint64 // outbound requests handled, tunnels included
	Tunnels  uint64 // CONNECT tunnels opened
	// UpstreamErrors counts the 502 and 504 answers the proxy wrote itself.
	UpstreamErrors uint64
	// HeaderErrors counts malformed or refused context headers by wire name
	// ("traceparent", "tracestate", "baggage", "ctx-ops"); each was dropped and
	// its request went through.
	HeaderErrors map[string]uint64
	// DroppedOps counts ctx-ops lists dropped because their request had no context.
	DroppedOps uint64
	// StoreErrors counts Store.Apply calls that failed.
	StoreErrors uint64
	// TelemetryLost counts the requests whose telemetry the Store refused when it was
	// written for a window (a limit such as max_contexts, or a failed store).
	TelemetryLost uint64
	// RefusedMembers counts the context members (baggage ctx.name, ctx.flag.*)
	// removed by side (0 inbound, 1 outbound) and headers.Refusal: untrusted, or
	// flags that are not pinnable (SPEC §4a).
	RefusedMembers [numSides][headers.NumRefusals]uint64
	// FastPathRequests counts the inbound requests the fast path served (fastpath.go),
	// FastPathHandovers the inbound connections it handed to the net/http path (h2c,
	// Upgrade, CONNECT, Expect, HTTP/1.0, unusual framing, malformed or large heads).
	FastPathRequests, FastPathHandovers uint64
}

type counters struct {
	inbound, outbound, tunnels, upstream, droppedOps, store atomic.Uint64
	telemetryLost                                           atomic.Uint64
	fastRequests, fastHandovers                             atomic.Uint64
	traceparent, tracestate, baggage, ctxOps, otherHeader   atomic.Uint64
	refused                                                 [numSides][headers.NumRefusals]atomic.Uint64
	// closes counts the client connections closed after a response, by side and why.
	closes [numSides][numReasons]atomic.Uint64
	// loopbackRefused counts the outbound requests and tunnels of clients outside the
	// pod refused for a loopback target.
	loopbackRefused atomic.Uint64
}

// Stats returns a snapshot of the proxy's counts.
func (p *Proxy) Stats() Stats {
	c := &p.stats
	var refused [numSides][headers.NumRefusals]uint64
	for side := range refused {
		for why := range refused[side] {
			refused[side][why] = c.refused[side][why].Load()
		}
	}
	return Stats{
		RefusedMembers:    refused,
		Inbound:           c.inbound.Load(),
		Outbound:          c.outbound.Load(),
		Tunnels:           c.tunnels.Load(),
		UpstreamErrors:    c.upstream.Load(),
		DroppedOps:        c.droppedOps.Load(),
		StoreErrors:       c.store.Load(),
		TelemetryLost:     c.telemetryLost.Load(),
		FastPathRequests:  c.fastRequests.Load(),
		FastPathHandovers: c.fastHandovers.Load(),
		HeaderErrors: map[string]uint64{
			"traceparent": c.traceparent.Load(),
			"tracestate":  c.tracestate.Load(),
			"baggage":     c.baggage.Load(),
			"ctx-ops":     c.ctxOps.Load(),
			"other":       c.otherHeader.Load(),
		},
	}
}

// headerErrors counts and logs (throttled) the header problems of one request.
func (p *Proxy) headerErrors(side string, errs []error) {
	for _, err := range errs {
		var he *headers.Error
		name := "other"
		if errors.As(err, &he) {
			name = he.Header
		}
		switch name {
		case "traceparent":
			p.stats.traceparent.Add(1)
		case "tracestate":
			p.stats.tracestate.Add(1)
		case "baggage":
			p.stats.baggage.Add(1)
		case "ctx-ops":
			p.stats.ctxOps.Add(1)
		default:
			p.stats.otherHeader.Add(1)
		}
		if p.logHeader.allow() {
			p.log.Warn("context header dropped, request forwarded without it", "direction", side, "header", name, "error", err)
		}
	}
}

// refused counts the context members removed from one request and logs why
// (throttled): on the inbound side, the words say what the operator can do about it.
func (p *Proxy) refused(side int, r *headers.Refused, untrusted error, from string) {
	for why, n := range r {
		if n > 0 {
			p.stats.refused[side][why].Add(uint64(n))
		}
	}
	if !p.logTrust.allow() {
		return
	}
	if untrusted != nil {
		p.log.Warn("context members removed before the app: not from the fleet", "direction", sideNames[side], "from", from, "reason", untrusted)
		return
	}
	p.log.Warn("ctx.flag members removed: the flag is not in flags.pinned, so it is never pinned", "direction", sideNames[side], "from", from)
}

// trustedSource reports whether remoteAddr, a request's client, is in TrustedSources.
func (p *Proxy) trustedSource(remoteAddr string) bool {
	if len(p.opt.TrustedSources) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, pfx := range p.opt.TrustedSources {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}
