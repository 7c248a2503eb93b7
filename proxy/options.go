package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
	"github.com/ctxprop/ctxprop/ops"
)

// Store takes the writes the proxy makes on the request path: the ctx-ops of the
// local app and the per-context telemetry. name is a valid context name (SPEC §3).
//
// Apply is called from many request goroutines at once and must be safe for
// concurrent use. It must not wait for fsync or for replication: SPEC §3 has proxy
// writes committed within a bounded window, so Apply queues them and returns. An
// error is logged by the proxy and never fails the request. Apply must not keep list
// after it returns; the proxy owns it.
type Store interface {
	Apply(name string, list []ops.Op) error
}

// Committer is a Store whose Apply queues writes. Commit returns once every write Apply
// took before the call is durable, or when ctx ends (the writes stay queued). The proxy
// calls it from one goroutine after each TelemetryWindow's writes, never on the request
// path, so that summing telemetry in memory adds nothing to how long a request's
// telemetry may be lost in a crash.
type Committer interface {
	Commit(ctx context.Context) error
}

// Flags pins feature flags at the edge of a request chain (SPEC §6); *flags.Flags
// implements it. Pin runs on every inbound request, concurrently: it must be safe for
// concurrent use, do no I/O, and modify neither r nor pinned; it returns pinned plus what
// it pinned, sorted by name. Pinnable reports whether a flag may be pinned at all
// (flags.pinned): ctx.flag.* members of other flags are removed on both sides, whoever
// sent them (SPEC §4a). It runs on every request with flags, concurrently, and must be
// fast.
type Flags interface {
	Pin(r *http.Request, pinned []headers.Flag) []headers.Flag
	Pinnable(name string) bool
}

// Options configure a Proxy. Fields left at their zero value take the default named
// in their comment; DefaultOptions returns the defaults of SPEC §2 with the
// addresses filled in.
type Options struct {
	// InboundAddress is the address the inbound listener binds, where other pods
	// reach the app (SPEC §2: "0.0.0.0:7401"). ":0" picks a free port (see
	// InboundAddr). Empty means no inbound listener; Inbound still returns a handler.
	InboundAddress string
	// App is the host:port of the local app, where inbound requests go
	// ("127.0.0.1:8080"). Required when InboundAddress is set.
	App string
	// OutboundAddress is the address of the outbound forward proxy, the app's
	// HTTP_PROXY ("127.0.0.1:7402"). Empty means no outbound listener. A host that is
	// not loopback needs OutboundNonLoopback.
	OutboundAddress string
	// OutboundNonLoopback permits an OutboundAddress that other hosts can reach
	// (config outbound.allow_non_loopback). False, the default, refuses one: the proxy
	// has no authentication. Either way a client that is not on loopback never reaches a
	// loopback or unspecified address through it (403).
	OutboundNonLoopback bool

	// TransparentAddress is where redirected outbound TCP arrives (config
	// outbound.transparent_address; SPEC §5): each connection goes on to its original
	// destination, with the header work when it speaks HTTP/1.x or h2c, byte for byte
	// otherwise. A loopback IPv4 host also binds the IPv6 loopback at the same port, where
	// ip6tables REDIRECT sends IPv6 connections, when the host has IPv6. Empty means no
	// transparent listener. A host that is not loopback needs OutboundNonLoopback.
	TransparentAddress string
	// TransparentMaxConns bounds the connections the transparent listener holds at once
	// (config outbound.transparent_max_connections); past it a new connection is reset,
	// logged and counted. Zero means 16384.
	TransparentMaxConns int
	// SniffTimeout bounds the wait for the first bytes of a redirected connection, inbound
	// or outbound (config outbound.sniff_timeout). A client that has not sent enough to
	// tell HTTP from other bytes by then (a server-first protocol such as SMTP or MySQL, or
	// a slow client) is spliced through untouched. Zero means 1s.
	SniffTimeout time.Duration

	// TrustInboundOps applies ctx-ops found on requests from other pods (config
	// trust_inbound_ops). False drops them with a log line (SPEC §4).
	TrustInboundOps bool

	// Signer signs the context members (baggage ctx.name, ctx.flag.*) that the
	// outbound proxy forwards and checks those of inbound requests (the ctx-sig header,
	// SPEC §4a). Nil means nothing is signed and, unless a request comes from
	// TrustedSources, the context members of inbound requests are removed.
	Signer *headers.Signer
	// TrustedSources are the client addresses whose context members the inbound
	// proxy keeps without a signature (config inbound.trusted_sources), such as an
	// ingress's pod range. Nil means none.
	TrustedSources []netip.Prefix
	// ContextHeader, at the edge of the fleet, names the inbound request header whose
	// value starts a context when a request brings none the sidecar trusts (config
	// inbound.context_header). "" means none.
	ContextHeader string
	// ContextBaggage is the same for a baggage member (inbound.context_baggage);
	// "ctx.name" takes the ctx.name of any caller. "" means none.
	ContextBaggage string

	// Store takes ctx-ops and telemetry. Nil means both are dropped: the proxy
	// still forwards and rewrites headers.
	Store Store
	// TelemetryWindow is how long an open proxy sums the per-context telemetry of
	// inbound requests in memory before it writes it, one Store.Apply per context and,
	// if Store is a Committer, a Commit (config store.commit_window in the sidecar).
	// Zero means 100ms. Without Open (the Inbound handler alone) every request writes
	// its own telemetry with its ctx-ops.
	TelemetryWindow time.Duration
	// Flags pins the configured flags on inbound requests that arrive without them (the
	// edge of a chain). Nil pins none; flags pinned upstream still pass.
	Flags Flags
	// Trace is how the proxy takes part in W3C Trace Context (config tracing.mode).
	// The zero value, TracePassthrough, forwards traceparent and tracestate byte for
	// byte; a TracerProvider implies TraceExport.
	Trace TraceMode
	// SampleRatio is, with TraceParticipate, the fraction (0 to 1) of the traces the
	// proxy starts that it marks sampled (config tracing.sample_ratio). Zero marks none.
	SampleRatio float64
	// TracestateKey, when not "" and the proxy takes part, is the tracestate key under
	// which each hop records its parent-id at the left of tracestate (config
	// tracing.tracestate_key). "" adds no entry.
	TracestateKey string
	// TracerProvider gives the tracer for the span of each proxied request, which is
	// exported (TraceExport). Nil means no spans.
	TracerProvider trace.TracerProvider
	// Logger receives the proxy's logs. Nil means no logs.
	Logger hclog.Logger

	// MaxIdleConnsPerHost is the keep-alive pool per upstream host. Zero means 256:
	// net/http's default of 2 makes a busy proxy open and close a connection for
	// most requests, which costs about 40 % of throughput.
	MaxIdleConnsPerHost int
	// DialTimeout bounds connecting to an upstream. Zero means 5s; negative, none.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an upstream's response header after
	// the request is sent; past it the client gets 504. Zero or negative means none:
	// the request waits as long as its client does, as with httputil.ReverseProxy
	// and config's inbound.response_header_timeout = "0". A limit costs a timer per
	// request (about a tenth of the proxy's CPU in bench/proxy), and long polls and
	// server-streaming gRPC calls that send no header for a while must not hit it.
	ResponseHeaderTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request header from a client. Zero means
	// 10s; negative, none.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client keep-alive connections idle this long, and those of
	// the outbound side to other pods too. Zero means 90s; negative, none. The
	// inbound side's connections to the local app stay in their bounded pool.
	IdleTimeout time.Duration
	// MaxHeaderBytes limits the size of a request header (HTTP/1.1 request line
	// included, HTTP/2 header list); larger requests get 431. Zero means 64 KiB.
	MaxHeaderBytes int
	// BodyTimeout is the longest wait for the next bytes of an inbound request body
	// (config inbound.body_timeout; nginx's client_body_timeout): the time allowed
	// between two successful reads, not for the whole body, which may stream as long as
	// it keeps moving. Past it the client gets 408 if no response has started, the
	// app's request is cancelled and the connection (an HTTP/2 stream) ends. Zero means
	// 60s; negative, none.
	BodyTimeout time.Duration

	// DisableFastPath serves every inbound connection with net/http's server and
	// Transport (config inbound.fast_path = false). False, the default, serves plain
	// HTTP/1.1 requests on the fast path (fastpath.go) and hands everything else (h2c,
	// Upgrade, CONNECT, Expect, HTTP/1.0, unusual framing) to net/http unnoticed.
	DisableFastPath bool

	// CorrelationSize is how many in-flight inbound requests are remembered by
	// trace-id, so an app that forwards only traceparent keeps its context on its
	// outbound calls (SPEC §4). Zero means 16384.
	CorrelationSize int
	// CorrelationTimeout forgets an inbound request that has not completed after
	// this long. Zero means 10m; negative, never (until evicted for room).
	CorrelationTimeout time.Duration
}

// Defaults of the fields whose zero value means "default".
const (
	DefaultMaxIdleConnsPerHost = 256
	DefaultDialTimeout         = 5 * time.Second
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultIdleTimeout         = 90 * time.Second
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultBodyTimeout         = 60 * time.Second
	DefaultCorrelationSize     = 16384
	DefaultCorrelationTimeout  = 10 * time.Minute
	DefaultTransparentMaxConns = 16384
	DefaultSniffTimeout        = time.Second
	DefaultTelemetryWindow     = 100 * time.Millisecond // store.commit_window's default
)

// DefaultOptions returns the listener addresses of SPEC §2 and the default limits.
func DefaultOptions() Options {
	return Options{
		InboundAddress:      "0.0.0.0:7401",
		App:                 "127.0.0.1:8080",
		OutboundAddress:     "127.0.0.1:7402",
		TransparentAddress:  "127.0.0.1:7404",
		TransparentMaxConns: DefaultTransparentMaxConns,
		SniffTimeout:        DefaultSniffTimeout,
		MaxIdleConnsPerHost: DefaultMaxIdleConnsPerHost,
		DialTimeout:         DefaultDialTimeout,
		ReadHeaderTimeout:   DefaultReadHeaderTimeout,
		IdleTimeout:         DefaultIdleTimeout,
		MaxHeaderBytes:      DefaultMaxHeaderBytes,
		BodyTimeout:         DefaultBodyTimeout,
		CorrelationSize:     DefaultCorrelationSize,
		CorrelationTimeout:  DefaultCorrelationTimeout,
	}
}

// Validate reports the first field that cannot work, naming it.
func (o *Options) Validate() error {
	switch {
	case o.Trace > TraceExport:
		return fmt.Errorf("trace mode %d is not one of passthrough, participate or export", o.Trace)
	case o.Trace == TraceExport && o.TracerProvider == nil:
		return fmt.Errorf("trace mode export needs a TracerProvider to export the spans to; set tracing.otlp_endpoint")
	case o.TracerProvider != nil && o.Trace != TraceExport && o.Trace != TracePassthrough:
		return fmt.Errorf("a TracerProvider is given but the trace mode is %s; spans are exported only in mode export", o.Trace)
	case !(o.SampleRatio >= 0 && o.SampleRatio <= 1):
		return fmt.Errorf("sample ratio %v is not from 0 to 1", o.SampleRatio)
	}
	if o.TracestateKey != "" && !headers.ValidTracestateKey(o.TracestateKey) {
		return fmt.Errorf("tracestate key %q is not one; want up to 256 of a-z 0-9 _ - * / @, starting with a lowercase letter or digit, such as \"ctxprop\"", o.TracestateKey)
	}
	if o.InboundAddress != "" {
		if _, _, err := net.SplitHostPort(o.InboundAddress); err != nil {
			return fmt.Errorf("inbound address %q: %w; want host:port such as 0.0.0.0:7401", o.InboundAddress, err)
		}
	}
	if o.OutboundAddress != "" {
		host, _, err := net.SplitHostPort(o.OutboundAddress)
		if err != nil {
			return fmt.Errorf("outbound address %q: %w; want host:port such as 127.0.0.1:7402", o.OutboundAddress, err)
		}
		if !o.OutboundNonLoopback && !loopbackHost(host) {
			return fmt.Errorf("outbound address %s is not loopback: any host that reaches it could use the proxy, which has no authentication; "+
				"bind 127.0.0.1 or set outbound.allow_non_loopback = true", o.OutboundAddress)
		}
	}
	if o.TransparentAddress != "" {
		host, _, err := net.SplitHostPort(o.TransparentAddress)
		if err != nil {
			return fmt.Errorf("transparent address %q: %w; want host:port such as 127.0.0.1:7404", o.TransparentAddress, err)
		}
		if !o.OutboundNonLoopback && !loopbackHost(host) {
			return fmt.Errorf("transparent address %s is not loopback: redirected connections arrive on loopback, and other hosts that reach it could use the proxy; "+
				"bind 127.0.0.1 or set outbound.allow_non_loopback = true", o.TransparentAddress)
		}
	}
	if o.TransparentMaxConns < 0 {
		return fmt.Errorf("transparent max connections %d is negative; use 0 for the default of %d", o.TransparentMaxConns, DefaultTransparentMaxConns)
	}
	if o.SniffTimeout < 0 {
		return fmt.Errorf("sniff timeout %s is negative; use 0 for the default of %s", o.SniffTimeout, DefaultSniffTimeout)
	}
	if o.InboundAddress != "" && o.App == "" {
		return fmt.Errorf("inbound app address is empty; set it to the host:port the app listens on, such as 127.0.0.1:8080")
	}
	if o.App != "" {
		host, port, err := net.SplitHostPort(o.App)
		if err != nil || host == "" || port == "" || port == "0" {
			return fmt.Errorf("inbound app address %q is not host:port; set it to the address the app listens on, such as 127.0.0.1:8080", o.App)
		}
	}
	if o.MaxIdleConnsPerHost < 0 {
		return fmt.Errorf("max idle connections per host %d is negative; use 0 for the default of %d", o.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost)
	}
	if o.MaxHeaderBytes < 0 {
		return fmt.Errorf("max header bytes %d is negative; use 0 for the default of %d", o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	}
	if o.ContextHeader != "" && !validHeaderName(o.ContextHeader) {
		return fmt.Errorf("context header %q is not a valid header name; use a name such as X-Workflow-Id", o.ContextHeader)
	}
	if strings.HasPrefix(o.ContextBaggage, headers.FlagKeyPrefix) {
		return fmt.Errorf("context baggage member %q is a pinned flag's; use ctx.name or a member of your own such as workflow.id", o.ContextBaggage)
	}
	if o.CorrelationSize < 0 {
		return fmt.Errorf("correlation size %d is negative; use 0 for the default of %d", o.CorrelationSize, DefaultCorrelationSize)
	}
	return nil
}

// withDefaults returns o with zero fields replaced by their defaults and negative
// durations by zero (none, as net/http reads it).
func (o Options) withDefaults() Options {
	dur := func(d *time.Duration, def time.Duration) {
		switch {
		case *d == 0:
			*d = def
		case *d < 0:
			*d = 0
		}
	}
	dur(&o.DialTimeout, DefaultDialTimeout)
	o.ResponseHeaderTimeout = max(o.ResponseHeaderTimeout, 0)
	dur(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	dur(&o.IdleTimeout, DefaultIdleTimeout)
	dur(&o.BodyTimeout, DefaultBodyTimeout)
	dur(&o.CorrelationTimeout, DefaultCorrelationTimeout)
	if o.TelemetryWindow <= 0 {
		o.TelemetryWindow = DefaultTelemetryWindow
	}
	if o.MaxIdleConnsPerHost == 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.CorrelationSize == 0 {
		o.CorrelationSize = DefaultCorrelationSize
	}
	if o.TransparentMaxConns == 0 {
		o.TransparentMaxConns = DefaultTransparentMaxConns
	}
	if o.SniffTimeout == 0 {
		o.SniffTimeout = DefaultSniffTimeout
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.TracerProvider != nil {
		o.Trace = TraceExport
	}
	return o
}

// TraceMode is how the proxy takes part in W3C Trace Context.
type TraceMode uint8

const (
	// TracePassthrough forwards a valid traceparent and its tracestate byte for byte
	// and removes invalid ones; a request without a traceparent gets none.
	TracePassthrough TraceMode = iota
	// TraceParticipate makes each proxied request a hop of its trace without
	// recording anything: a new parent-id (headers.NewChild), a new trace for a
	// request without a valid traceparent, the tracestate carried.
	TraceParticipate
	// TraceExport does what TraceParticipate does through a span of the
	// TracerProvider, which exports it.
	TraceExport
)

// String returns the mode's name in config (tracing.mode).
func (m TraceMode) String() string {
	switch m {
	case TracePassthrough:
		return "passthrough"
	case TraceParticipate:
		return "participate"
	case TraceExport:
		return "export"
	}
	return fmt.Sprintf("TraceMode(%d)", uint8(m))
}

// validHeaderName reports whether s is an HTTP field name (RFC 9110 §5.1: a token).
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// loopbackHost reports whether a listener on host is reachable from this host only.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
