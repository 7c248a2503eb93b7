package config

import (
	"os"
	"time"
)

// Config is the whole sidecar configuration. Each field documents its default, which
// DefaultConfig fills in; the zero Config is not valid.
type Config struct {
	Node     Node
	Log      Log
	Store    Store
	Admin    Admin
	Inbound  Inbound
	Outbound Outbound
	Sync     Sync
	Relay    Relay
	Tracing  Tracing
	Flags    Flags
	// Intercept is read by `sidecar intercept` only, not by `sidecar run`.
	Intercept Intercept

	// origins maps "block.attr" to where its value came from ("config.hcl:12" or
	// "CTXPROP_STORE_PATH"), so Validate can point at it. Absent means the default.
	origins map[string]string
}

// Node identifies this replica.
type Node struct {
	Name string // replica label shown to peers and in the admin API; default os.Hostname()
}

// Log configures the go-hclog logger.
type Log struct {
	Level  string // trace, debug, info, warn or error; default "info"
	Format string // text or json; default "text"
}

// Store configures the bbolt file and the limits of SPEC §3.
type Store struct {
	Path         string        // the bbolt file, relative to the working directory; default "data/ctxprop.db"
	CommitWindow time.Duration // longest wait before request-path writes are on disk; default 100ms, at most 10s
	// CheckpointInterval: longest a change stays only in the write-ahead log before the
	// bbolt file takes it; default 10s, at most 1h.
	CheckpointInterval time.Duration
	OpenTimeout        time.Duration // how long to wait for the file lock (bbolt Options.Timeout); default 5s
	SweepInterval      time.Duration // how often expired entries are reclaimed; default 30s
	TombstoneTTL       time.Duration // how long deletes and expiries are remembered for replication; default 24h

	MaxContexts         int // default 100000
	MaxValuesPerContext int // counters, map entries and sets together; default 10000
	MaxValueBytes       int // encoded size of one map value; default 65536
	MaxSetMembers       int // default 10000

	ContextTTL time.Duration // sliding TTL given to new contexts; default 0, no expiry
	FixedTTL   bool          // if true a context's TTL does not slide on writes; default false

	// RequestContextTTL: sliding TTL given to contexts the proxy's request path creates
	// (telemetry, ctx-ops; SPEC §4a); default 24h; 0 means they get ContextTTL.
	RequestContextTTL time.Duration
}

// Admin configures the admin API listener (SPEC §3a).
type Admin struct {
	Address          string        // default "127.0.0.1:7400"
	AllowNonLoopback bool          // permit a non-loopback Address; default false, as the API has no authentication
	MaxBodyBytes     int64         // largest request body; default 1 MiB
	ShutdownTimeout  time.Duration // how long a graceful shutdown may take; default 10s
	// AllowedHosts: host names the Host header may give besides loopback addresses and
	// localhost (SPEC §4a, no DNS rebinding); default none.
	AllowedHosts []string
	// ContextMetricsMax: how many contexts get ctxprop_context_* series of their own on
	// /metrics, the rest summed under context="_other"; default 50, 0 exports none.
	ContextMetricsMax int
	// ContextMetrics: contexts that always get series of their own, within
	// ContextMetricsMax; default none (the busiest contexts by requests).
	ContextMetrics []string
	// ChartInterval: how often the sidecar samples, for the web page's charts, the
	// per-context telemetry (top ContextMetricsMax contexts), the peers' lag and the flag
	// evaluations into a ring in memory; default 5s, 0 keeps no history (no charts).
	ChartInterval time.Duration
	// ChartWindow: how much of that history the ring keeps; default 10m (120 samples).
	ChartWindow time.Duration
}

// Inbound configures the proxy in front of the app.
type Inbound struct {
	Address               string        // default "0.0.0.0:7401"
	App                   string        // the app's address; default "127.0.0.1:8080"
	TrustInboundOps       bool          // apply ctx-ops headers from other pods; default false
	ReadHeaderTimeout     time.Duration // default 10s
	IdleTimeout           time.Duration // keep-alive idle limit; default 90s
	ResponseHeaderTimeout time.Duration // wait for the app's response headers; default 0, no limit
	MaxHeaderBytes        int           // default 65536

	// TrustedSources are client addresses (CIDRs or single IPs) whose context members
	// (baggage ctx.name, ctx.flag.*) are kept without a fleet signature (SPEC §4a);
	// default none: only other sidecars of the fleet, which sign, are trusted.
	TrustedSources []string
	// ContextHeader is, at the edge, a request header whose value starts the context of
	// a request from outside the fleet; default "", none.
	ContextHeader string
	// ContextBaggage is the same for a baggage member; "ctx.name" takes any caller's
	// ctx.name. Default "", none.
	ContextBaggage string
	BodyTimeout    time.Duration // longest wait between two reads of a request body; default 60s, 0 none
	// FastPath serves plain HTTP/1.1 requests on the proxy's own data path (issue 14)
	// and everything else on net/http's; false serves all on net/http's. Default true.
	FastPath bool
}

// Outbound configures the forward proxy the app uses as HTTP_PROXY.
type Outbound struct {
	Address string // default "127.0.0.1:7402"
	// TransparentAddress is where redirected outbound TCP arrives (sidecar intercept); "" for none.
	TransparentAddress string // default "127.0.0.1:7404"
	// TransparentMaxConnections bounds the connections the transparent listener holds; default 16384.
	TransparentMaxConnections int
	// SniffTimeout bounds the wait for a redirected connection's first bytes before it is
	// spliced untouched; default 1s.
	SniffTimeout        time.Duration
	AllowNonLoopback    bool          // permit a non-loopback Address; default false, as the proxy has no authentication
	MaxIdleConnsPerHost int           // default 256
	DialTimeout         time.Duration // default 5s
}

// Sync configures replication between sidecars (SPEC §7).
type Sync struct {
	Address  string        // peer listener; default "0.0.0.0:7403"
	Peers    []string      // static peers as host:port; default none
	DNS      string        // headless Service name whose records are the peers; default "", unused
	XDS      string        // xDS server host:port for EDS discovery; default "", unused
	Interval time.Duration // gossip round; default 200ms
	Fanout   int           // peers per gossip round; default 3
	KeyFile  string        // memberlist keyring secret; default "", no encryption
	MaxPeers int           // peers tracked and members listed at most; default 1024
	// PeerMetrics exports replication metrics per peer too (a "peer" label); default
	// false: fleet-wide ones only, so that N sidecars export O(N) series, not O(N²).
	PeerMetrics bool
	// RetireAfter is how long a replica must be gone (neither alive in membership nor
	// heard from) before its state is folded into a live replica's; default 1h.
	RetireAfter time.Duration

	// XDSCAFile is the PEM file of the CA that signs the xDS server's certificate; set,
	// the connection to XDS is TLS. Default "": plaintext, which Validate allows only to a
	// loopback XDS or with XDSInsecure, since the xDS server chooses this sidecar's peers.
	XDSCAFile     string
	XDSCertFile   string // PEM client certificate for mTLS to the xDS server; default "", none
	XDSKeyFile    string // PEM private key of XDSCertFile; default "", none
	XDSServerName string // name the xDS server's certificate must hold; default "", the host of XDS
	// XDSInsecure allows plaintext to an XDS that is not on loopback (a control plane
	// behind a mesh that already encrypts); default false.
	XDSInsecure bool
}

// Relay configures replication between clusters through NATS JetStream (issue 15). Every
// sidecar with URLs set publishes its local deltas and merges the other clusters'.
type Relay struct {
	URLs          []string // NATS servers, such as "nats://nats.nats:4222"; default none: no relay
	Cluster       string   // this cluster's name: letters, digits, - and _; required with URLs
	SubjectPrefix string   // first token of the delta subjects <prefix>.delta.<cluster>; default "ctxprop"
	Stream        string   // JetStream stream of the deltas; default "CTXPROP_DELTAS"
	Bucket        string   // JetStream KV bucket of the full states; default "ctxprop_state"

	// At most one way to authenticate; default none.
	CredsFile    string // NATS credentials file (user JWT and nkey seed)
	NKeyFile     string // nkey seed file
	TokenFile    string // file holding a token
	User         string // user name; its password is in PasswordFile
	PasswordFile string // file holding User's password

	TLSCAFile     string // PEM CA that signs the server's certificate; default "", the system roots
	TLSCertFile   string // PEM client certificate for mTLS; default "", none
	TLSKeyFile    string // PEM private key of TLSCertFile; default "", none
	TLSServerName string // name the server's certificate must hold; default "", the URL's host

	Retention     time.Duration // how long the stream keeps a delta; default 24h
	StateInterval time.Duration // how often changed contexts are joined into the KV bucket; default 2s
	FlushInterval time.Duration // how long local deltas are joined before publishing; default 20ms
	AckWait       time.Duration // how long before an unacknowledged message is delivered again; default 10s
	MaxInFlight   int           // messages delivered and not acknowledged, and publishes awaiting acks; default 1024
	MaxBatch      int           // stream messages merged in one store commit at most; default 256
}

// Tracing configures W3C Trace Context and OpenTelemetry traces.
type Tracing struct {
	// Mode is how the proxy takes part in W3C Trace Context: "participate" (a new
	// parent-id per hop, a new trace for a request without one, nothing exported),
	// "export" (the same through spans exported by OTLP) or "passthrough" (headers
	// forwarded byte for byte); default "participate". Use ModeInEffect to read it.
	Mode          string
	Enabled       bool    // default false; true is the older way to say Mode "export"
	OTLPEndpoint  string  // collector host:port; required in mode export
	SampleRatio   float64 // fraction of new traces sampled, 0 to 1; default 1
	TracestateKey string  // tracestate key of each hop's own entry; default "", none
}

// The values of tracing.mode.
const (
	TraceParticipate = "participate"
	TraceExport      = "export"
	TracePassthrough = "passthrough"
)

// ModeInEffect is the trace mode the sidecar runs in: Mode, or "export" when the
// older tracing.enabled is set.
func (t Tracing) ModeInEffect() string {
	if t.Enabled {
		return TraceExport
	}
	return t.Mode
}

// Flags configures feature flags (SPEC §6).
type Flags struct {
	Files  []string // flagd-format JSON files, reloaded on change; default none
	Pinned []string // flags pinned into baggage as ctx.flag.<name>; default none

	PollInterval       time.Duration     // how often flag files are checked for changes; default 2s
	TargetingKeyHeader string            // request header whose value is the targetingKey at the edge; default "", none
	ContextHeaders     map[string]string // evaluation-context attribute → request header; default none
	ContextBaggage     map[string]string // evaluation-context attribute → baggage member; default none
}

// Intercept configures the redirection rules `sidecar intercept` installs in the pod's
// network namespace (SPEC §5).
type Intercept struct {
	// ProxyUID is the uid the sidecar runs as; its traffic is never redirected, so that
	// the sidecar's own connections reach their destination. Default 65532, the uid the
	// injector gives the sidecar container.
	ProxyUID int
	// InboundPorts are the app's ports whose inbound TCP goes to the inbound proxy;
	// default none, meaning every port but the sidecar's own.
	InboundPorts        []int
	ExcludeInboundPorts []int // ports never redirected inbound, besides the sidecar's own; default none
	// ExcludeOutboundPorts are destination ports never redirected outbound; default none.
	ExcludeOutboundPorts []int
	// ExcludeOutboundCIDRs are destinations (CIDRs or IPs) never redirected outbound,
	// besides loopback; default none.
	ExcludeOutboundCIDRs []string
	IPv6                 bool // set up ip6tables rules too; default true
	// Backend is the iptables flavour: "legacy", "nft", or "auto" (legacy if the
	// namespace holds legacy rules already, else nft, as Istio decides); default "auto".
	Backend string
}

// The values of intercept.backend.
const (
	BackendAuto   = "auto"
	BackendLegacy = "legacy"
	BackendNFT    = "nft"
)

// DefaultConfig returns a new Config holding every default.
func DefaultConfig() Config {
	host, _ := os.Hostname() // on failure Validate reports the empty node.name
	return Config{
		Node: Node{Name: host},
		Log:  Log{Level: "info", Format: "text"},
		Store: Store{
			Path:                "data/ctxprop.db",
			CommitWindow:        100 * time.Millisecond,
			CheckpointInterval:  10 * time.Second,
			OpenTimeout:         5 * time.Second,
			SweepInterval:       30 * time.Second,
			TombstoneTTL:        24 * time.Hour,
			MaxContexts:         100_000,
			MaxValuesPerContext: 10_000,
			MaxValueBytes:       65_536,
			MaxSetMembers:       10_000,
			RequestContextTTL:   24 * time.Hour,
		},
		Admin: Admin{
			Address:           "127.0.0.1:7400",
			MaxBodyBytes:      1 << 20,
			ShutdownTimeout:   10 * time.Second,
			ContextMetricsMax: 50,
			ContextMetrics:    []string{},
			ChartInterval:     5 * time.Second,
			ChartWindow:       10 * time.Minute,
		},
		Inbound: Inbound{
			Address:           "0.0.0.0:7401",
			App:               "127.0.0.1:8080",
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       90 * time.Second,
			MaxHeaderBytes:    65_536,
			TrustedSources:    []string{},
			BodyTimeout:       60 * time.Second,
			FastPath:          true,
		},
		Outbound: Outbound{
			Address:                   "127.0.0.1:7402",
			TransparentAddress:        "127.0.0.1:7404",
			TransparentMaxConnections: 16384,
			SniffTimeout:              time.Second,
			MaxIdleConnsPerHost:       256,
			DialTimeout:               5 * time.Second,
		},
		Sync: Sync{
			Address:     "0.0.0.0:7403",
			Interval:    200 * time.Millisecond,
			Fanout:      3,
			MaxPeers:    1024,
			RetireAfter: time.Hour,
		},
		Relay: Relay{
			URLs:          []string{},
			SubjectPrefix: "ctxprop",
			Stream:        "CTXPROP_DELTAS",
			Bucket:        "ctxprop_state",
			Retention:     24 * time.Hour,
			StateInterval: 2 * time.Second,
			FlushInterval: 20 * time.Millisecond,
			AckWait:       10 * time.Second,
			MaxInFlight:   1024,
			MaxBatch:      256,
		},
		Tracing: Tracing{Mode: TraceParticipate, SampleRatio: 1},
		Flags:   Flags{PollInterval: 2 * time.Second, ContextHeaders: map[string]string{}, ContextBaggage: map[string]string{}},
		Intercept: Intercept{
			ProxyUID:             65532,
			InboundPorts:         []int{},
			ExcludeInboundPorts:  []int{},
			ExcludeOutboundPorts: []int{},
			ExcludeOutboundCIDRs: []string{},
			IPv6:                 true,
			Backend:              BackendAuto,
		},
	}
}

// setting binds one HCL attribute, and its environment variable, to a Config field.
type setting struct {
	block, attr string
	ptr         any // *string, *bool, *int, *int64, *float64, *time.Duration, *[]string, *[]int or *map[string]string
}

func (s setting) path() string { return s.block + "." + s.attr }

// blocks lists the block names in the order of the file.
var blocks = []string{"node", "log", "store", "admin", "inbound", "outbound", "sync", "relay", "tracing", "flags", "intercept"}

// settings lists every attribute; its order is the order of the blocks above.
func (c *Config) settings() []setting {
	return []setting{
		{"node", "name", &c.Node.Name},

		{"log", "level", &c.Log.Level},
		{"log", "format", &c.Log.Format},

		{"store", "path", &c.Store.Path},
		{"store", "commit_window", &c.Store.CommitWindow},
		{"store", "checkpoint_interval", &c.Store.CheckpointInterval},
		{"store", "open_timeout", &c.Store.OpenTimeout},
		{"store", "sweep_interval", &c.Store.SweepInterval},
		{"store", "tombstone_ttl", &c.Store.TombstoneTTL},
		{"store", "max_contexts", &c.Store.MaxContexts},
		{"store", "max_values_per_context", &c.Store.MaxValuesPerContext},
		{"store", "max_value_bytes", &c.Store.MaxValueBytes},
		{"store", "max_set_members", &c.Store.MaxSetMembers},
		{"store", "context_ttl", &c.Store.ContextTTL},
		{"store", "request_context_ttl", &c.Store.RequestContextTTL},
		{"store", "fixed_ttl", &c.Store.FixedTTL},

		{"admin", "address", &c.Admin.Address},
		{"admin", "allow_non_loopback", &c.Admin.AllowNonLoopback},
		{"admin", "max_body_bytes", &c.Admin.MaxBodyBytes},
		{"admin", "shutdown_timeout", &c.Admin.ShutdownTimeout},
		{"admin", "allowed_hosts", &c.Admin.AllowedHosts},
		{"admin", "context_metrics_max", &c.Admin.ContextMetricsMax},
		{"admin", "context_metrics", &c.Admin.ContextMetrics},
		{"admin", "chart_interval", &c.Admin.ChartInterval},
		{"admin", "chart_window", &c.Admin.ChartWindow},

		{"inbound", "address", &c.Inbound.Address},
		{"inbound", "app", &c.Inbound.App},
		{"inbound", "trust_inbound_ops", &c.Inbound.TrustInboundOps},
		{"inbound", "read_header_timeout", &c.Inbound.ReadHeaderTimeout},
		{"inbound", "idle_timeout", &c.Inbound.IdleTimeout},
		{"inbound", "response_header_timeout", &c.Inbound.ResponseHeaderTimeout},
		{"inbound", "max_header_bytes", &c.Inbound.MaxHeaderBytes},
		{"inbound", "trusted_sources", &c.Inbound.TrustedSources},
		{"inbound", "context_header", &c.Inbound.ContextHeader},
		{"inbound", "context_baggage", &c.Inbound.ContextBaggage},
		{"inbound", "body_timeout", &c.Inbound.BodyTimeout},
		{"inbound", "fast_path", &c.Inbound.FastPath},

		{"outbound", "address", &c.Outbound.Address},
		{"outbound", "transparent_address", &c.Outbound.TransparentAddress},
		{"outbound", "transparent_max_connections", &c.Outbound.TransparentMaxConnections},
		{"outbound", "sniff_timeout", &c.Outbound.SniffTimeout},
		{"outbound", "allow_non_loopback", &c.Outbound.AllowNonLoopback},
		{"outbound", "max_idle_conns_per_host", &c.Outbound.MaxIdleConnsPerHost},
		{"outbound", "dial_timeout", &c.Outbound.DialTimeout},

		{"sync", "address", &c.Sync.Address},
		{"sync", "peers", &c.Sync.Peers},
		{"sync", "dns", &c.Sync.DNS},
		{"sync", "xds", &c.Sync.XDS},
		{"sync", "xds_ca_file", &c.Sync.XDSCAFile},
		{"sync", "xds_cert_file", &c.Sync.XDSCertFile},
		{"sync", "xds_key_file", &c.Sync.XDSKeyFile},
		{"sync", "xds_server_name", &c.Sync.XDSServerName},
		{"sync", "xds_insecure", &c.Sync.XDSInsecure},
		{"sync", "interval", &c.Sync.Interval},
		{"sync", "fanout", &c.Sync.Fanout},
		{"sync", "key_file", &c.Sync.KeyFile},
		{"sync", "max_peers", &c.Sync.MaxPeers},
		{"sync", "peer_metrics", &c.Sync.PeerMetrics},
		{"sync", "retire_after", &c.Sync.RetireAfter},

		{"relay", "urls", &c.Relay.URLs},
		{"relay", "cluster", &c.Relay.Cluster},
		{"relay", "subject_prefix", &c.Relay.SubjectPrefix},
		{"relay", "stream", &c.Relay.Stream},
		{"relay", "bucket", &c.Relay.Bucket},
		{"relay", "creds_file", &c.Relay.CredsFile},
		{"relay", "nkey_file", &c.Relay.NKeyFile},
		{"relay", "token_file", &c.Relay.TokenFile},
		{"relay", "user", &c.Relay.User},
		{"relay", "password_file", &c.Relay.PasswordFile},
		{"relay", "tls_ca_file", &c.Relay.TLSCAFile},
		{"relay", "tls_cert_file", &c.Relay.TLSCertFile},
		{"relay", "tls_key_file", &c.Relay.TLSKeyFile},
		{"relay", "tls_server_name", &c.Relay.TLSServerName},
		{"relay", "retention", &c.Relay.Retention},
		{"relay", "state_interval", &c.Relay.StateInterval},
		{"relay", "flush_interval", &c.Relay.FlushInterval},
		{"relay", "ack_wait", &c.Relay.AckWait},
		{"relay", "max_in_flight", &c.Relay.MaxInFlight},
		{"relay", "max_batch", &c.Relay.MaxBatch},

		{"tracing", "mode", &c.Tracing.Mode},
		{"tracing", "enabled", &c.Tracing.Enabled},
		{"tracing", "otlp_endpoint", &c.Tracing.OTLPEndpoint},
		{"tracing", "sample_ratio", &c.Tracing.SampleRatio},
		{"tracing", "tracestate_key", &c.Tracing.TracestateKey},

		{"flags", "files", &c.Flags.Files},
		{"flags", "pinned", &c.Flags.Pinned},
		{"flags", "poll_interval", &c.Flags.PollInterval},
		{"flags", "targeting_key_header", &c.Flags.TargetingKeyHeader},
		{"flags", "context_headers", &c.Flags.ContextHeaders},
		{"flags", "context_baggage", &c.Flags.ContextBaggage},

		{"intercept", "proxy_uid", &c.Intercept.ProxyUID},
		{"intercept", "inbound_ports", &c.Intercept.InboundPorts},
		{"intercept", "exclude_inbound_ports", &c.Intercept.ExcludeInboundPorts},
		{"intercept", "exclude_outbound_ports", &c.Intercept.ExcludeOutboundPorts},
		{"intercept", "exclude_outbound_cidrs", &c.Intercept.ExcludeOutboundCIDRs},
		{"intercept", "ipv6", &c.Intercept.IPv6},
		{"intercept", "backend", &c.Intercept.Backend},
	}
}

// setOrigin records where the value of path came from.
func (c *Config) setOrigin(path, origin string) {
	if c.origins == nil {
		c.origins = make(map[string]string)
	}
	c.origins[path] = origin
}
