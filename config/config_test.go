package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// withoutOrigins drops the bookkeeping Validate uses so Configs compare by their settings.
func withoutOrigins(c Config) Config {
	c.origins = nil
	return c
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no host name: %v", err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"node.name", c.Node.Name, host},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"store.path", c.Store.Path, "data/ctxprop.db"},
		{"store.commit_window", c.Store.CommitWindow, 100 * time.Millisecond},
		{"store.checkpoint_interval", c.Store.CheckpointInterval, 10 * time.Second},
		{"store.open_timeout", c.Store.OpenTimeout, 5 * time.Second},
		{"store.sweep_interval", c.Store.SweepInterval, 30 * time.Second},
		{"store.tombstone_ttl", c.Store.TombstoneTTL, 24 * time.Hour},
		{"store.max_contexts", c.Store.MaxContexts, 100000},
		{"store.max_values_per_context", c.Store.MaxValuesPerContext, 10000},
		{"store.max_value_bytes", c.Store.MaxValueBytes, 65536},
		{"store.max_set_members", c.Store.MaxSetMembers, 10000},
		{"store.context_ttl", c.Store.ContextTTL, time.Duration(0)},
		{"store.request_context_ttl", c.Store.RequestContextTTL, 24 * time.Hour},
		{"store.fixed_ttl", c.Store.FixedTTL, false},
		{"admin.address", c.Admin.Address, "127.0.0.1:7400"},
		{"admin.allow_non_loopback", c.Admin.AllowNonLoopback, false},
		{"admin.max_body_bytes", c.Admin.MaxBodyBytes, int64(1048576)},
		{"admin.shutdown_timeout", c.Admin.ShutdownTimeout, 10 * time.Second},
		{"admin.allowed_hosts", len(c.Admin.AllowedHosts), 0},
		{"admin.context_metrics_max", c.Admin.ContextMetricsMax, 50},
		{"admin.context_metrics", len(c.Admin.ContextMetrics), 0},
		{"admin.chart_interval", c.Admin.ChartInterval, 5 * time.Second},
		{"admin.chart_window", c.Admin.ChartWindow, 10 * time.Minute},
		{"inbound.address", c.Inbound.Address, "0.0.0.0:7401"},
		{"inbound.app", c.Inbound.App, "127.0.0.1:8080"},
		{"inbound.trust_inbound_ops", c.Inbound.TrustInboundOps, false},
		{"inbound.read_header_timeout", c.Inbound.ReadHeaderTimeout, 10 * time.Second},
		{"inbound.idle_timeout", c.Inbound.IdleTimeout, 90 * time.Second},
		{"inbound.response_header_timeout", c.Inbound.ResponseHeaderTimeout, time.Duration(0)},
		{"inbound.max_header_bytes", c.Inbound.MaxHeaderBytes, 65536},
		{"inbound.body_timeout", c.Inbound.BodyTimeout, 60 * time.Second},
		{"inbound.fast_path", c.Inbound.FastPath, true},
		{"outbound.address", c.Outbound.Address, "127.0.0.1:7402"},
		{"outbound.transparent_address", c.Outbound.TransparentAddress, "127.0.0.1:7404"},
		{"outbound.transparent_max_connections", c.Outbound.TransparentMaxConnections, 16384},
		{"outbound.sniff_timeout", c.Outbound.SniffTimeout, time.Second},
		{"outbound.allow_non_loopback", c.Outbound.AllowNonLoopback, false},
		{"outbound.max_idle_conns_per_host", c.Outbound.MaxIdleConnsPerHost, 256},
		{"outbound.dial_timeout", c.Outbound.DialTimeout, 5 * time.Second},
		{"sync.address", c.Sync.Address, "0.0.0.0:7403"},
		{"sync.peers", len(c.Sync.Peers), 0},
		{"sync.dns", c.Sync.DNS, ""},
		{"sync.xds", c.Sync.XDS, ""},
		{"sync.xds_ca_file", c.Sync.XDSCAFile, ""},
		{"sync.xds_cert_file", c.Sync.XDSCertFile, ""},
		{"sync.xds_key_file", c.Sync.XDSKeyFile, ""},
		{"sync.xds_server_name", c.Sync.XDSServerName, ""},
		{"sync.xds_insecure", c.Sync.XDSInsecure, false},
		{"sync.interval", c.Sync.Interval, 200 * time.Millisecond},
		{"sync.fanout", c.Sync.Fanout, 3},
		{"sync.key_file", c.Sync.KeyFile, ""},
		{"sync.max_peers", c.Sync.MaxPeers, 1024},
		{"sync.peer_metrics", c.Sync.PeerMetrics, false},
		{"sync.retire_after", c.Sync.RetireAfter, time.Hour},
		{"tracing.mode", c.Tracing.Mode, "participate"},
		{"tracing.enabled", c.Tracing.Enabled, false},
		{"tracing.tracestate_key", c.Tracing.TracestateKey, ""},
		{"tracing.otlp_endpoint", c.Tracing.OTLPEndpoint, ""},
		{"tracing.sample_ratio", c.Tracing.SampleRatio, 1.0},
		{"flags.files", len(c.Flags.Files), 0},
		{"flags.pinned", len(c.Flags.Pinned), 0},
		{"flags.poll_interval", c.Flags.PollInterval, 2 * time.Second},
		{"flags.targeting_key_header", c.Flags.TargetingKeyHeader, ""},
		{"flags.context_headers", len(c.Flags.ContextHeaders), 0},
		{"flags.context_baggage", len(c.Flags.ContextBaggage), 0},
		{"inbound.trusted_sources", len(c.Inbound.TrustedSources), 0},
		{"inbound.context_header", c.Inbound.ContextHeader, ""},
		{"inbound.context_baggage", c.Inbound.ContextBaggage, ""},
	} {
		if tc.got != tc.want {
			t.Errorf("default %s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if got, want := len(c.settings()), 97; got != want {
		t.Errorf("%d settings, want %d: add the new one to this test and to config.hcl", got, want)
	}
}

func TestDefaultConfig_Fresh(t *testing.T) {
	a := DefaultConfig()
	a.Sync.Peers = append(a.Sync.Peers, "10.0.0.7:7403")
	a.Store.Path = "elsewhere"
	b := DefaultConfig()
	if len(b.Sync.Peers) != 0 || b.Store.Path != "data/ctxprop.db" {
		t.Fatalf("changing one DefaultConfig changed the next: %+v", b)
	}
}

func TestParse_Empty(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "node {}\nstore {}\n"} {
		got, err := Parse([]byte(src), "empty.hcl")
		if err != nil {
			t.Fatalf("Parse(%q): %v", src, err)
		}
		if want := DefaultConfig(); !reflect.DeepEqual(withoutOrigins(got), want) {
			t.Errorf("Parse(%q) = %+v, want the defaults %+v", src, got, want)
		}
	}
}

const everyAttribute = `
node { name = "pod-z" }
log {
  level  = "debug"
  format = "json"
}
store {
  path                   = "/var/lib/ctxprop/db"
  commit_window          = "50ms"
  checkpoint_interval    = "30s"
  open_timeout           = "1s"
  sweep_interval         = "1m"
  tombstone_ttl          = "48h"
  max_contexts           = 7
  max_values_per_context = 8
  max_value_bytes        = 9
  max_set_members        = 10
  context_ttl            = "2h"
  request_context_ttl    = "90m"
  fixed_ttl              = true
}
admin {
  address            = "10.1.2.3:7400"
  allow_non_loopback = true
  max_body_bytes     = 4096
  shutdown_timeout   = "3s"
  allowed_hosts      = ["ctxprop-admin.internal", "10.1.2.3"]
  context_metrics_max = 3
  context_metrics     = ["checkout"]
  chart_interval      = "2s"
  chart_window        = "4m"
}
inbound {
  address                 = "0.0.0.0:9001"
  app                     = "127.0.0.1:3000"
  trust_inbound_ops       = true
  read_header_timeout     = "2s"
  idle_timeout            = "30s"
  response_header_timeout = "15s"
  max_header_bytes        = 8192
  trusted_sources         = ["10.8.0.0/16", "192.168.1.7"]
  context_header          = "X-Workflow-Id"
  context_baggage         = "ctx.name"
  body_timeout            = "20s"
  fast_path               = false
}
outbound {
  address                 = "127.0.0.1:9002"
  allow_non_loopback      = true
  max_idle_conns_per_host = 16
  dial_timeout            = "750ms"
  transparent_address     = "127.0.0.1:9004"
  transparent_max_connections = 99
  sniff_timeout           = "250ms"
}
sync {
  address  = "0.0.0.0:9003"
  peers    = ["10.0.0.7:7403", "peer-b.example:7403"]
  dns      = "ctxprop-peers.default.svc.cluster.local"
  xds      = "xds.example:18000"
  xds_ca_file     = "/etc/ctxprop/xds/ca.pem"
  xds_cert_file   = "/etc/ctxprop/xds/tls.crt"
  xds_key_file    = "/etc/ctxprop/xds/tls.key"
  xds_server_name = "control-plane.example"
  xds_insecure    = false
  interval = "100ms"
  fanout   = 5
  key_file = "/etc/ctxprop/keyring"
  max_peers = 64
  peer_metrics = true
  retire_after = "3h"
}
relay {
  urls = ["nats://nats-a:4222", "tls://nats-b:4222"]
  cluster = "eu-west"
  subject_prefix = "acme.ctx"
  stream = "ACME_DELTAS"
  bucket = "acme_state"
  creds_file = ""
  nkey_file = ""
  token_file = ""
  user = "ctxprop"
  password_file = "/etc/nats/password"
  tls_ca_file = "/etc/nats/ca.pem"
  tls_cert_file = "/etc/nats/tls.crt"
  tls_key_file = "/etc/nats/tls.key"
  tls_server_name = "nats.example"
  retention = "12h"
  state_interval = "5s"
  flush_interval = "50ms"
  ack_wait = "30s"
  max_in_flight = 512
  max_batch = 64
}
tracing {
  mode          = "export"
  enabled       = true
  otlp_endpoint = "otel-collector:4317"
  sample_ratio  = 0.25
  tracestate_key = "ctxprop@acme"
}
flags {
  files  = ["flags.json", "/etc/flags/more.json"]
  pinned = ["new-checkout", "dark_mode"]
  poll_interval = "5s"
  targeting_key_header = "X-User-Id"
  context_headers = { plan = "X-Plan" }
  context_baggage = { tenant = "tenant.id" }
}
intercept {
  proxy_uid              = 1337
  inbound_ports          = [3000, 3001]
  exclude_inbound_ports  = [3002]
  exclude_outbound_ports = [5432]
  exclude_outbound_cidrs = ["169.254.169.254", "10.96.0.0/12"]
  ipv6                   = false
  backend                = "legacy"
}
`

func everyAttributeConfig() Config {
	return Config{
		Node: Node{Name: "pod-z"},
		Log:  Log{Level: "debug", Format: "json"},
		Store: Store{
			Path: "/var/lib/ctxprop/db", CommitWindow: 50 * time.Millisecond, CheckpointInterval: 30 * time.Second, OpenTimeout: time.Second,
			SweepInterval: time.Minute, TombstoneTTL: 48 * time.Hour,
			MaxContexts: 7, MaxValuesPerContext: 8, MaxValueBytes: 9, MaxSetMembers: 10,
			ContextTTL: 2 * time.Hour, RequestContextTTL: 90 * time.Minute, FixedTTL: true,
		},
		Admin: Admin{Address: "10.1.2.3:7400", AllowNonLoopback: true, MaxBodyBytes: 4096, ShutdownTimeout: 3 * time.Second,
			AllowedHosts: []string{"ctxprop-admin.internal", "10.1.2.3"}, ContextMetricsMax: 3, ContextMetrics: []string{"checkout"},
			ChartInterval: 2 * time.Second, ChartWindow: 4 * time.Minute},
		Inbound: Inbound{
			Address: "0.0.0.0:9001", App: "127.0.0.1:3000", TrustInboundOps: true,
			ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 30 * time.Second,
			ResponseHeaderTimeout: 15 * time.Second, MaxHeaderBytes: 8192, BodyTimeout: 20 * time.Second,
			TrustedSources: []string{"10.8.0.0/16", "192.168.1.7"}, ContextHeader: "X-Workflow-Id", ContextBaggage: "ctx.name",
		},
		Outbound: Outbound{Address: "127.0.0.1:9002", TransparentAddress: "127.0.0.1:9004", TransparentMaxConnections: 99, SniffTimeout: 250 * time.Millisecond, AllowNonLoopback: true, MaxIdleConnsPerHost: 16, DialTimeout: 750 * time.Millisecond},
		Sync: Sync{
			Address: "0.0.0.0:9003", Peers: []string{"10.0.0.7:7403", "peer-b.example:7403"},
			DNS: "ctxprop-peers.default.svc.cluster.local", XDS: "xds.example:18000",
			Interval: 100 * time.Millisecond, Fanout: 5, KeyFile: "/etc/ctxprop/keyring",
			MaxPeers: 64, PeerMetrics: true, RetireAfter: 3 * time.Hour,
			XDSCAFile: "/etc/ctxprop/xds/ca.pem", XDSCertFile: "/etc/ctxprop/xds/tls.crt", XDSKeyFile: "/etc/ctxprop/xds/tls.key",
			XDSServerName: "control-plane.example",
		},
		Relay: Relay{URLs: []string{"nats://nats-a:4222", "tls://nats-b:4222"}, Cluster: "eu-west", SubjectPrefix: "acme.ctx",
			Stream: "ACME_DELTAS", Bucket: "acme_state", User: "ctxprop", PasswordFile: "/etc/nats/password",
			TLSCAFile: "/etc/nats/ca.pem", TLSCertFile: "/etc/nats/tls.crt", TLSKeyFile: "/etc/nats/tls.key", TLSServerName: "nats.example",
			Retention: 12 * time.Hour, StateInterval: 5 * time.Second, FlushInterval: 50 * time.Millisecond, AckWait: 30 * time.Second,
			MaxInFlight: 512, MaxBatch: 64},
		Tracing: Tracing{Mode: "export", Enabled: true, OTLPEndpoint: "otel-collector:4317", SampleRatio: 0.25, TracestateKey: "ctxprop@acme"},
		Flags: Flags{Files: []string{"flags.json", "/etc/flags/more.json"}, Pinned: []string{"new-checkout", "dark_mode"},
			PollInterval: 5 * time.Second, TargetingKeyHeader: "X-User-Id",
			ContextHeaders: map[string]string{"plan": "X-Plan"}, ContextBaggage: map[string]string{"tenant": "tenant.id"}},
		Intercept: Intercept{ProxyUID: 1337, InboundPorts: []int{3000, 3001}, ExcludeInboundPorts: []int{3002},
			ExcludeOutboundPorts: []int{5432}, ExcludeOutboundCIDRs: []string{"169.254.169.254", "10.96.0.0/12"}, Backend: "legacy"},
	}
}

func TestParse_EveryAttribute(t *testing.T) {
	got, err := Parse([]byte(everyAttribute), "every.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if want := everyAttributeConfig(); !reflect.DeepEqual(withoutOrigins(got), want) {
		t.Fatalf("Parse =\n%+v\nwant\n%+v", withoutOrigins(got), want)
	}
	if got, want := len(got.origins), len(got.settings()); got != want {
		t.Errorf("%d settings have a file origin, want all %d", got, want)
	}
	if got, want := got.origins["sync.peers"], "every.hcl:58"; got != want {
		t.Errorf("origin of sync.peers = %q, want %q", got, want)
	}
}

func TestParse_JSONSyntax(t *testing.T) {
	got, err := Parse([]byte(`{"node": {"name": "pod-j"}, "sync": {"peers": ["10.0.0.7:7403"], "interval": "1s"}}`), "config.hcl.json")
	if err != nil {
		t.Fatal(err)
	}
	if got.Node.Name != "pod-j" || !reflect.DeepEqual(got.Sync.Peers, []string{"10.0.0.7:7403"}) || got.Sync.Interval != time.Second {
		t.Fatalf("Parse of JSON syntax = %+v", got)
	}
}

func TestParse_NullKeepsDefault(t *testing.T) {
	got, err := Parse([]byte("store {\n  path = null\n}\n"), "null.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := got.Store.Path, "data/ctxprop.db"; got != want {
		t.Fatalf("store.path = %q, want the default %q", got, want)
	}
}

func TestParse_Errors(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []string // substrings of the error
	}{
		{"syntax", "store {\n  path = \n}\n", []string{"bad.hcl:2:"}},
		{"unknown block", "node { name = \"a\" }\nstorage {}\n", []string{"bad.hcl:2:1:", `Blocks of type "storage" are not expected here`, `Did you mean "store"?`}},
		{"unknown attribute", "store {\n  path = \"x\"\n  commit_windo = \"1s\"\n}\n", []string{"bad.hcl:3:3:", "Unsupported argument in store block", `"commit_windo"`, `Did you mean "commit_window"?`}},
		{"top-level attribute", "name = \"pod-a\"\n", []string{"bad.hcl:1:1:", `An argument named "name" is not expected here`}},
		{"block label", "store \"main\" {}\n", []string{"bad.hcl:1:", "Extraneous label for store"}},
		{"duplicate block", "node {}\nlog {}\nnode {}\n", []string{"bad.hcl:3:1:", "Duplicate node block", "already at bad.hcl:1"}},
		{"bad duration", "store {\n  commit_window = \"fast\"\n}\n", []string{"bad.hcl:2:19:", "Invalid value for store.commit_window", `"fast" is not a Go duration`}},
		{"duration without unit", "sync {\n  interval = 200\n}\n", []string{"bad.hcl:2:", "sync.interval", `"200" is not a Go duration`}},
		{"list for string", "node {\n  name = [\"a\"]\n}\n", []string{"bad.hcl:2:", "node.name", "want a string"}},
		{"string for int", "store {\n  max_contexts = \"many\"\n}\n", []string{"bad.hcl:2:", "store.max_contexts", "want an integer"}},
		{"fraction for int", "sync {\n  fanout = 2.5\n}\n", []string{"bad.hcl:2:", "sync.fanout", "want an integer, got 2.5"}},
		{"string for bool", "admin {\n  allow_non_loopback = \"perhaps\"\n}\n", []string{"bad.hcl:2:", "admin.allow_non_loopback", "want true or false"}},
		{"string for list", "sync {\n  peers = \"10.0.0.7:7403\"\n}\n", []string{"bad.hcl:2:", "sync.peers", "want a list of strings"}},
		{"null in list", "flags {\n  files = [\"a\", null]\n}\n", []string{"bad.hcl:2:", "flags.files", "null"}},
		{"variable", "node {\n  name = var.pod\n}\n", []string{"bad.hcl:2:", "Variables not allowed"}},
		{"two problems", "store {\n  commit_window = \"x\"\n  open_timeout = \"y\"\n}\n", []string{"bad.hcl:2:", "bad.hcl:3:", "store.open_timeout"}},

		// Validate's errors point at the line that set the bad value.
		{"non-loopback admin", "admin {\n  address = \"10.1.2.3:7400\"\n}\n", []string{"bad.hcl:2: admin.address 10.1.2.3:7400 is not a loopback address; the admin API has no authentication — use 127.0.0.1 or set admin.allow_non_loopback = true"}},
		{"all interfaces admin", "admin {\n  address = \":7400\"\n}\n", []string{"bad.hcl:2: admin.address :7400 is not a loopback address"}},
		{"non-loopback outbound", "outbound {\n  address = \"0.0.0.0:7402\"\n}\n", []string{"bad.hcl:2: outbound.address 0.0.0.0:7402 is not a loopback address; the outbound proxy has no authentication and other hosts could use it — use 127.0.0.1 or set outbound.allow_non_loopback = true"}},
		{"all interfaces outbound", "outbound {\n  address = \":7402\"\n}\n", []string{"bad.hcl:2: outbound.address :7402 is not a loopback address"}},
		{"non-loopback transparent", "outbound {\n  transparent_address = \"0.0.0.0:7404\"\n}\n", []string{"bad.hcl:2: outbound.transparent_address 0.0.0.0:7404 is not a loopback address; redirected connections arrive on loopback"}},
		{"transparent port clash", "outbound {\n  transparent_address = \"127.0.0.1:7402\"\n}\n", []string{"bad.hcl:2: outbound.address 127.0.0.1:7402 and outbound.transparent_address 127.0.0.1:7402 use the same port"}},
		{"zero sniff timeout", "outbound {\n  sniff_timeout = \"0\"\n}\n", []string{"bad.hcl:2: outbound.sniff_timeout is 0s; want a positive duration"}},
		{"zero transparent connections", "outbound {\n  transparent_max_connections = 0\n}\n", []string{"bad.hcl:2: outbound.transparent_max_connections is 0; want a positive number"}},
		{"negative body timeout", "inbound {\n  body_timeout = \"-1s\"\n}\n", []string{"bad.hcl:2: inbound.body_timeout is -1s; want \"0\" for no limit"}},
		{"relay cluster without urls", "relay {\n  cluster = \"eu\"\n}\n", []string{"relay.urls is empty but relay.cluster is \"eu\""}},
		{"relay without cluster", "relay {\n  urls = [\"nats://n:4222\"]\n}\n", []string{"relay.cluster \"\" must be 1 to 64 of letters, digits, - and _"}},
		{"relay bad url", "relay {\n  urls = [\"http://n:4222\"]\n  cluster = \"eu\"\n}\n", []string{"bad.hcl:2: relay.urls entry 1 \"http://n:4222\" is not a NATS URL"}},
		{"relay cluster with a dot", "relay {\n  urls = [\"nats://n:4222\"]\n  cluster = \"eu.west\"\n}\n", []string{"bad.hcl:3: relay.cluster \"eu.west\" must be"}},
		{"relay wildcard prefix", "relay {\n  urls = [\"nats://n:4222\"]\n  cluster = \"eu\"\n  subject_prefix = \"a.*\"\n}\n", []string{"bad.hcl:4: relay.subject_prefix \"a.*\" must be dot-separated tokens"}},
		{"relay two auths", "relay {\n  urls = [\"nats://n:4222\"]\n  cluster = \"eu\"\n  token_file = \"t\"\n  creds_file = \"c\"\n}\n", []string{"more than one is set"}},
		{"relay user without password", "relay {\n  urls = [\"nats://n:4222\"]\n  cluster = \"eu\"\n  user = \"u\"\n}\n", []string{"relay.user and relay.password_file go together"}},
		{"relay cert without key", "relay {\n  urls = [\"nats://n:4222\"]\n  cluster = \"eu\"\n  tls_cert_file = \"c\"\n}\n", []string{"relay.tls_cert_file and relay.tls_key_file go together"}},
		{"relay zero batch", "relay {\n  urls = [\"nats://n:4222\"]\n  cluster = \"eu\"\n  max_batch = 0\n}\n", []string{"bad.hcl:4: relay.max_batch is 0; want a positive number"}},
		{"commit window zero", "store {\n  commit_window = \"0\"\n}\n", []string{"bad.hcl:2: store.commit_window is 0s; want more than 0 and at most 10s"}},
		{"commit window too long", "store {\n  commit_window = \"11s\"\n}\n", []string{"bad.hcl:2: store.commit_window is 11s"}},
		{"checkpoint interval too long", "store {\n  checkpoint_interval = \"2h\"\n}\n", []string{"bad.hcl:2: store.checkpoint_interval is 2h0m0s; want more than 0 and at most 1h0m0s"}},
		{"negative limit", "store {\n\n  max_value_bytes = -1\n}\n", []string{"bad.hcl:3: store.max_value_bytes is -1; want a positive number"}},
		{"log level", "log {\n  level = \"verbose\"\n}\n", []string{"bad.hcl:2: log.level \"verbose\" is not a level; want trace, debug, info, warn or error"}},
		{"log format", "log {\n  format = \"xml\"\n}\n", []string{"bad.hcl:2: log.format \"xml\""}},
		{"address without port", "inbound {\n  app = \"localhost\"\n}\n", []string{"bad.hcl:2: inbound.app \"localhost\" is not host:port"}},
		{"app without host", "inbound {\n  app = \":8080\"\n}\n", []string{"bad.hcl:2: inbound.app \":8080\" has no host"}},
		{"bad port", "outbound {\n  address = \"127.0.0.1:http\"\n}\n", []string{"bad.hcl:2: outbound.address \"127.0.0.1:http\" has port \"http\""}},
		{"peer", "sync {\n  peers = [\"10.0.0.7:7403\", \"10.0.0.8\"]\n}\n", []string{"bad.hcl:2: sync.peers entry 2 \"10.0.0.8\" is not host:port"}},
		{"xds", "sync {\n  xds = \"xds\"\n}\n", []string{"bad.hcl:2: sync.xds \"xds\" is not host:port"}},
		// An xDS server chooses the peers: plaintext only on loopback or when asked for.
		{"xds plaintext off loopback", "sync {\n  xds = \"xds.example:18000\"\n}\n", []string{"bad.hcl:2: sync.xds xds.example:18000 is not a loopback address and no TLS is set", "set sync.xds_ca_file", "sync.xds_insecure = true"}},
		{"xds plaintext on all interfaces", "sync {\n  xds = \"0.0.0.0:18000\"\n}\n", []string{"bad.hcl:2: sync.xds 0.0.0.0:18000 is not a loopback address"}},
		{"xds insecure and tls", "sync {\n  xds = \"xds.example:18000\"\n  xds_ca_file = \"ca.pem\"\n  xds_insecure = true\n}\n", []string{"bad.hcl:4: sync.xds_insecure is true but sync.xds_ca_file is set too"}},
		{"xds cert without key", "sync {\n  xds = \"xds.example:18000\"\n  xds_ca_file = \"ca.pem\"\n  xds_cert_file = \"tls.crt\"\n}\n", []string{"bad.hcl:4: sync.xds_cert_file is set but sync.xds_key_file is not"}},
		{"xds key without cert", "sync {\n  xds = \"xds.example:18000\"\n  xds_ca_file = \"ca.pem\"\n  xds_key_file = \"tls.key\"\n}\n", []string{"bad.hcl:4: sync.xds_key_file is set but sync.xds_cert_file is not"}},
		{"xds client cert without ca", "sync {\n  xds = \"xds.example:18000\"\n  xds_cert_file = \"tls.crt\"\n  xds_key_file = \"tls.key\"\n}\n", []string{"sync.xds_ca_file is empty but sync.xds_cert_file, sync.xds_key_file is set"}},
		{"xds server name without ca", "sync {\n  xds = \"127.0.0.1:18000\"\n  xds_server_name = \"cp.example\"\n}\n", []string{"sync.xds_ca_file is empty but sync.xds_server_name is set"}},
		{"xds tls without xds", "sync {\n  xds_ca_file = \"ca.pem\"\n}\n", []string{"bad.hcl:2: sync.xds_ca_file is set but sync.xds is empty"}},
		{"xds insecure without xds", "sync {\n  xds_insecure = true\n}\n", []string{"bad.hcl:2: sync.xds_insecure is true but sync.xds is empty"}},
		{"dns url", "sync {\n  dns = \"http://peers\"\n}\n", []string{"bad.hcl:2: sync.dns \"http://peers\" is not a DNS name"}},
		{"fanout", "sync {\n  fanout = 0\n}\n", []string{"bad.hcl:2: sync.fanout is 0"}},
		{"max_peers", "sync {\n  max_peers = 0\n}\n", []string{"bad.hcl:2: sync.max_peers is 0; want a positive number"}},
		{"retire_after", "sync {\n  retire_after = \"0\"\n}\n", []string{"bad.hcl:2: sync.retire_after is 0s; want a positive duration"}},
		{"sample ratio", "tracing {\n  sample_ratio = 1.5\n}\n", []string{"bad.hcl:2: tracing.sample_ratio is 1.5; want a number from 0 to 1"}},
		{"tracing without endpoint", "tracing {\n  enabled = true\n}\n", []string{"tracing.otlp_endpoint is empty but tracing.enabled is true"}},
		{"pinned flag name", "flags {\n  pinned = [\"ok\", \"not ok\"]\n}\n", []string{"bad.hcl:2: flags.pinned entry 2 \"not ok\""}},
		{"negative poll interval", "flags {\n  poll_interval = \"-1s\"\n}\n", []string{"bad.hcl:2: flags.poll_interval is -1s; want more than 0, such as \"2s\""}},
		{"zero poll interval", "flags {\n\n  poll_interval = \"0\"\n}\n", []string{"bad.hcl:3: flags.poll_interval is 0s; want more than 0"}},
		{"allowed host with port", "admin {\n  allowed_hosts = [\"ok.example\", \"admin.example:7400\"]\n}\n", []string{"bad.hcl:2: admin.allowed_hosts entry 2 \"admin.example:7400\" is not a host name"}},
		{"allowed host as URL", "admin {\n  allowed_hosts = [\"http://admin.example\"]\n}\n", []string{"bad.hcl:2: admin.allowed_hosts entry 1 \"http://admin.example\" is not a host name"}},
		{"allowed host empty", "admin {\n  allowed_hosts = [\"\"]\n}\n", []string{"bad.hcl:2: admin.allowed_hosts entry 1 \"\" is not a host name"}},
		{"allowed host wildcard", "admin {\n  allowed_hosts = [\"*.example\"]\n}\n", []string{"bad.hcl:2: admin.allowed_hosts entry 1 \"*.example\" is not a host name"}},
		{"context metrics max negative", "admin {\n  context_metrics_max = -1\n}\n", []string{"bad.hcl:2: admin.context_metrics_max is -1; want 0"}},
		{"context metrics past max", "admin {\n  context_metrics_max = 1\n  context_metrics = [\"a\", \"b\"]\n}\n", []string{"admin.context_metrics lists 2 contexts but admin.context_metrics_max = 1", "raise admin.context_metrics_max to at least 2"}},
		{"context metrics other", "admin {\n  context_metrics = [\"_other\"]\n}\n", []string{"bad.hcl:2: admin.context_metrics entry 1 \"_other\" is not a context name"}},
		{"context metrics twice", "admin {\n  context_metrics = [\"a\", \"a\"]\n}\n", []string{"bad.hcl:2: admin.context_metrics entry 2 \"a\" is listed twice"}},
		{"chart interval too short", "admin {\n  chart_interval = \"100ms\"\n}\n", []string{"bad.hcl:2: admin.chart_interval is 100ms; want \"0\" to keep no history for the web page's charts, or at least 1s"}},
		{"chart window one sample", "admin {\n  chart_interval = \"1m\"\n  chart_window = \"1m\"\n}\n", []string{"bad.hcl:3: admin.chart_window is 1m0s, 1 samples of admin.chart_interval = 1m0s; want 2 to 1440 samples: a window between 2m0s and 24h0m0s"}},
		{"chart window too many samples", "admin {\n  chart_interval = \"1s\"\n  chart_window = \"1h\"\n}\n", []string{"bad.hcl:3: admin.chart_window is 1h0m0s, 3600 samples", "a window between 2s and 24m0s"}},
		{"empty node name", "node {\n  name = \"\"\n}\n", []string{"bad.hcl:2: node.name is empty", "CTXPROP_NODE_NAME"}},
		{"trusted source", "inbound {\n  trusted_sources = [\"10.0.0.0/8\", \"10.0.0.300\"]\n}\n", []string{"bad.hcl:2: inbound.trusted_sources entry 2 \"10.0.0.300\" is not an IP address or CIDR"}},
		{"context header", "inbound {\n  context_header = \"X Workflow\"\n}\n", []string{"bad.hcl:2: inbound.context_header \"X Workflow\" is not a header name"}},
		{"context baggage of a flag", "inbound {\n  context_baggage = \"ctx.flag.beta\"\n}\n", []string{"bad.hcl:2: inbound.context_baggage \"ctx.flag.beta\" is reserved by ctxprop"}},
		{"negative context ttl", "store {\n  context_ttl = \"-1h\"\n}\n", []string{"bad.hcl:2: store.context_ttl is -1h0m0s"}},
		{"negative request context ttl", "store {\n  request_context_ttl = \"-1s\"\n}\n", []string{"bad.hcl:2: store.request_context_ttl is -1s"}},
		{"request context ttl over the ops maximum", "store {\n  request_context_ttl = \"876001h\"\n}\n", []string{"bad.hcl:2: store.request_context_ttl is 876001h0m0s", "at most 876000h0m0s"}},
		{"port clash", "outbound {\n  address = \"127.0.0.1:7401\"\n}\n", []string{"bad.hcl:2: inbound.address 0.0.0.0:7401 and outbound.address 127.0.0.1:7401 use the same port"}},
		{"app is the inbound listener", "inbound {\n  app = \"127.0.0.1:7401\"\n}\n", []string{"bad.hcl:2: inbound.address 0.0.0.0:7401 and inbound.app 127.0.0.1:7401 are the same, so the proxy would forward to itself"}},
		{"intercept proxy uid root", "intercept {\n  proxy_uid = 0\n}\n", []string{"bad.hcl:2: intercept.proxy_uid is 0 (root)"}},
		{"intercept proxy uid negative", "intercept {\n  proxy_uid = -1\n}\n", []string{"bad.hcl:2: intercept.proxy_uid is -1; want the uid the sidecar runs as"}},
		{"intercept port out of range", "intercept {\n  exclude_outbound_ports = [443, 70000]\n}\n", []string{"bad.hcl:2: intercept.exclude_outbound_ports entry 2 is 70000; want a port from 1 to 65535"}},
		{"intercept port not a number", "intercept {\n  inbound_ports = [\"http\"]\n}\n", []string{"bad.hcl:2:", "Invalid value for intercept.inbound_ports; want a list of numbers such as [8080, 9090]"}},
		{"intercept inbound port of the sidecar", "intercept {\n  inbound_ports = [8080, 7403]\n}\n", []string{"bad.hcl:2: intercept.inbound_ports holds 7403, the port of sync.address; the sidecar's own ports are never redirected"}},
		{"intercept port both in and out", "intercept {\n  exclude_inbound_ports = [8080]\n  inbound_ports = [8080]\n}\n", []string{"bad.hcl:3: intercept.inbound_ports holds 8080, which intercept.exclude_inbound_ports holds too"}},
		{"intercept cidr", "intercept {\n  exclude_outbound_cidrs = [\"10.96.0.0/33\"]\n}\n", []string{"bad.hcl:2: intercept.exclude_outbound_cidrs entry 1 \"10.96.0.0/33\" is not an IP address or CIDR"}},
		{"intercept backend", "intercept {\n  backend = \"nftables\"\n}\n", []string{"bad.hcl:2: intercept.backend \"nftables\" is not a backend; want auto"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.src), "bad.hcl")
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tc.src, c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error\n%s\nwant it to contain\n%s", tc.src, err, w)
				}
			}
		})
	}
}

func TestValidate_AcceptsEdgeValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"admin on localhost", func(c *Config) { c.Admin.Address = "localhost:7400" }},
		{"admin on ::1", func(c *Config) { c.Admin.Address = "[::1]:7400" }},
		{"allowed hosts", func(c *Config) {
			c.Admin.AllowedHosts = []string{"ctxprop-admin.internal", "Admin.Example.", "my_host", "10.0.0.7", "::1", "[fe80::1]"}
		}},
		{"ephemeral ports", func(c *Config) {
			c.Admin.Address, c.Inbound.Address, c.Outbound.Address, c.Sync.Address = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		}},
		{"commit window at the limit", func(c *Config) { c.Store.CommitWindow = 10 * time.Second }},
		{"no charts", func(c *Config) { c.Admin.ChartInterval, c.Admin.ChartWindow = 0, 0 }},
		{"charts at their bounds", func(c *Config) {
			c.Admin.ChartInterval, c.Admin.ChartWindow = time.Second, 1440*time.Second+999*time.Millisecond
		}},
		{"charts of two samples", func(c *Config) { c.Admin.ChartInterval, c.Admin.ChartWindow = time.Minute, 2*time.Minute }},
		{"sample ratio zero", func(c *Config) { c.Tracing.SampleRatio = 0 }},
		{"xds plaintext on 127.0.0.1", func(c *Config) { c.Sync.XDS = "127.0.0.1:18000" }},
		{"xds plaintext on localhost", func(c *Config) { c.Sync.XDS = "localhost:18000" }},
		{"xds plaintext on ::1", func(c *Config) { c.Sync.XDS = "[::1]:18000" }},
		{"xds plaintext off loopback, asked for", func(c *Config) { c.Sync.XDS, c.Sync.XDSInsecure = "xds.example:18000", true }},
		{"xds tls", func(c *Config) { c.Sync.XDS, c.Sync.XDSCAFile = "xds.example:18000", "ca.pem" }},
		{"xds mtls", func(c *Config) {
			c.Sync.XDS, c.Sync.XDSCAFile, c.Sync.XDSCertFile, c.Sync.XDSKeyFile = "10.0.0.9:18000", "ca.pem", "tls.crt", "tls.key"
			c.Sync.XDSServerName = "control-plane.example"
		}},
		{"inbound and sync on different hosts, same port", func(c *Config) {
			c.Inbound.Address, c.Sync.Address = "10.0.0.1:7000", "10.0.0.2:7000"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Node.Name = "pod-a"
			tc.edit(&c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidate_NaNSampleRatio(t *testing.T) {
	c := DefaultConfig()
	c.Node.Name = "pod-a"
	c.Tracing.SampleRatio = nan()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "tracing.sample_ratio") {
		t.Fatalf("Validate = %v, want an error naming tracing.sample_ratio", err)
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestApplyEnv(t *testing.T) {
	env := map[string]string{
		"CTXPROP_NODE_NAME":                 "pod-env",
		"CTXPROP_ADMIN_ADDRESS":             "127.0.0.1:9400",
		"CTXPROP_ADMIN_MAX_BODY_BYTES":      "2048",
		"CTXPROP_STORE_COMMIT_WINDOW":       "25ms",
		"CTXPROP_STORE_FIXED_TTL":           "true",
		"CTXPROP_STORE_MAX_CONTEXTS":        "12",
		"CTXPROP_SYNC_PEERS":                " 10.0.0.7:7403 , 10.0.0.8:7403,, ",
		"CTXPROP_FLAGS_FILES":               "",
		"CTXPROP_TRACING_SAMPLE_RATIO":      "0.5",
		"CTXPROP_INBOUND_TRUST_INBOUND_OPS": "1",
		"UNRELATED":                         "x",
	}
	c := DefaultConfig()
	c.Flags.Files = []string{"from-file.json"}
	if err := c.ApplyEnv(environ(env)); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Node.Name = "pod-env"
	want.Admin.Address = "127.0.0.1:9400"
	want.Admin.MaxBodyBytes = 2048
	want.Store.CommitWindow = 25 * time.Millisecond
	want.Store.FixedTTL = true
	want.Store.MaxContexts = 12
	want.Sync.Peers = []string{"10.0.0.7:7403", "10.0.0.8:7403"}
	want.Flags.Files = []string{}
	want.Tracing.SampleRatio = 0.5
	want.Inbound.TrustInboundOps = true
	if !reflect.DeepEqual(withoutOrigins(c), want) {
		t.Fatalf("after ApplyEnv\n%+v\nwant\n%+v", withoutOrigins(c), want)
	}
	if got, want := c.origins["store.commit_window"], "CTXPROP_STORE_COMMIT_WINDOW"; got != want {
		t.Errorf("origin = %q, want %q", got, want)
	}
}

func TestApplyEnv_Intercept(t *testing.T) {
	c := DefaultConfig()
	env := map[string]string{
		"CTXPROP_INTERCEPT_INBOUND_PORTS":          "8080, 9090,",
		"CTXPROP_INTERCEPT_EXCLUDE_INBOUND_PORTS":  "",
		"CTXPROP_INTERCEPT_EXCLUDE_OUTBOUND_CIDRS": "169.254.169.254,10.96.0.0/12",
		"CTXPROP_INTERCEPT_PROXY_UID":              "1337",
		"CTXPROP_INTERCEPT_IPV6":                   "false",
	}
	if err := c.ApplyEnv(environ(env)); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Intercept.InboundPorts = []int{8080, 9090}
	want.Intercept.ExcludeOutboundCIDRs = []string{"169.254.169.254", "10.96.0.0/12"}
	want.Intercept.ProxyUID = 1337
	want.Intercept.IPv6 = false
	if !reflect.DeepEqual(withoutOrigins(c), want) {
		t.Fatalf("after ApplyEnv\n%+v\nwant\n%+v", withoutOrigins(c).Intercept, want.Intercept)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestApplyEnv_Errors(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
	}{
		{"CTXPROP_STORE_COMMIT_WINDOW", "100", `CTXPROP_STORE_COMMIT_WINDOW="100": "100" is not a Go duration`},
		{"CTXPROP_STORE_MAX_CONTEXTS", "lots", `CTXPROP_STORE_MAX_CONTEXTS="lots": not an integer`},
		{"CTXPROP_ADMIN_ALLOW_NON_LOOPBACK", "yes", `CTXPROP_ADMIN_ALLOW_NON_LOOPBACK="yes": not a boolean`},
		{"CTXPROP_TRACING_SAMPLE_RATIO", "half", `CTXPROP_TRACING_SAMPLE_RATIO="half": not a number`},
		{"CTXPROP_INTERCEPT_EXCLUDE_INBOUND_PORTS", "9090,metrics", `CTXPROP_INTERCEPT_EXCLUDE_INBOUND_PORTS="9090,metrics": "metrics" is not an integer; want a comma-separated list such as 8080,9090`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			err := c.ApplyEnv(environ(map[string]string{tc.name: tc.value}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ApplyEnv(%s=%s) = %v, want an error containing %q", tc.name, tc.value, err, tc.want)
			}
		})
	}
}

func TestApplyEnv_UnknownVariable(t *testing.T) {
	for _, tc := range []struct {
		name, want string
	}{
		{"CTXPROP_STORE_PAHT", "CTXPROP_STORE_PAHT is not a ctxprop setting; did you mean CTXPROP_STORE_PATH? (config attributes are CTXPROP_<BLOCK>_<ATTRIBUTE>)"},
		{"CTXPROP_store_path", "CTXPROP_store_path is not a ctxprop setting; did you mean CTXPROP_STORE_PATH?"},
		{"CTXPROP_COMMIT_WINDOW", "CTXPROP_COMMIT_WINDOW is not a ctxprop setting; did you mean CTXPROP_STORE_COMMIT_WINDOW?"},
		{"CTXPROP_ADMIN_ADDRES", "CTXPROP_ADMIN_ADDRES is not a ctxprop setting; did you mean CTXPROP_ADMIN_ADDRESS?"},
		{"CTXPROP_SYNC_GOSSIP_INTERVAL", "CTXPROP_SYNC_GOSSIP_INTERVAL is not a ctxprop setting; did you mean CTXPROP_SYNC_INTERVAL?"},
		{"CTXPROP_CRASH_CYCLES", "CTXPROP_CRASH_CYCLES is not a ctxprop setting; unset it (config attributes are CTXPROP_<BLOCK>_<ATTRIBUTE>, as in config.hcl)"},
		{"CTXPROP_", "CTXPROP_ is not a ctxprop setting; unset it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			err := c.ApplyEnv([]string{"PATH=/bin", tc.name + "=s3cret", "CTXPROP_NODE_NAME=pod-env"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ApplyEnv with %s = %v, want an error containing %q", tc.name, err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the value, which may be a secret: %v", err)
			}
		})
	}

	// Names a Service could give, with values Kubernetes would not: still refused.
	for _, kv := range []string{
		"CTXPROP_INBOUND_PORT=7401",
		"CTXPROP_UI_SERVICE_HOST=ui.example",
		"CTXPROP_UI_SERVICE_PORT=http",
		"CTXPROP_UI_PORT=10.96.0.17:80",
		"CTXPROP_UI_PORT_80_TCP_PROTO=http",
		"CTXPROP_UI_PORT_80_TCP_PORT=0",
		"CTXPROP_UI_PORT_80_TCP=tcp://ui:80",
	} {
		t.Run(kv, func(t *testing.T) {
			c := DefaultConfig()
			name, _, _ := strings.Cut(kv, "=")
			if err := c.ApplyEnv([]string{kv}); err == nil || !strings.HasPrefix(err.Error(), name+" is not a ctxprop setting") {
				t.Fatalf("ApplyEnv(%s) = %v, want it refused", kv, err)
			}
		})
	}

	t.Run("every unknown one, in order", func(t *testing.T) {
		c := DefaultConfig()
		err := c.ApplyEnv([]string{"CTXPROP_ZZZ_TOP=1", "CTXPROP_STORE_PAHT=x", "CTXPROP_STORE_MAX_CONTEXTS=lots"})
		if err == nil {
			t.Fatal("ApplyEnv = nil, want three errors")
		}
		lines := strings.Split(err.Error(), "\n")
		if got, want := len(lines), 3; got != want {
			t.Fatalf("%d error lines, want %d:\n%v", got, want, err)
		}
		for i, prefix := range []string{"CTXPROP_STORE_MAX_CONTEXTS=", "CTXPROP_STORE_PAHT is not", "CTXPROP_ZZZ_TOP is not"} {
			if !strings.HasPrefix(lines[i], prefix) {
				t.Errorf("line %d = %q, want it to start with %q", i+1, lines[i], prefix)
			}
		}
	})
}

func TestApplyEnv_NotSettings(t *testing.T) {
	c := DefaultConfig()
	err := c.ApplyEnv([]string{
		"CTXPROP_ADMIN_ADDR=http://127.0.0.1:7400", // sidecar ctl's
		"CTXPROPTEST_CRASH_CYCLES=3",               // tests' own prefix
		"ctxprop_store_path=elsewhere",             // names are case-sensitive: not ours
		"XCTXPROP_STORE_PATH=elsewhere",
		"NOEQUALS",
		"=weird",
		// Kubernetes service links for Services "ctxprop-ui" and "ctxprop" of the namespace.
		"CTXPROP_UI_SERVICE_HOST=10.96.0.17",
		"CTXPROP_UI_SERVICE_PORT=80",
		"CTXPROP_UI_SERVICE_PORT_HTTP=80",
		"CTXPROP_UI_PORT=tcp://10.96.0.17:80",
		"CTXPROP_UI_PORT_80_TCP=tcp://10.96.0.17:80",
		"CTXPROP_UI_PORT_80_TCP_PROTO=tcp",
		"CTXPROP_UI_PORT_80_TCP_PORT=80",
		"CTXPROP_UI_PORT_80_TCP_ADDR=10.96.0.17",
		"CTXPROP_SERVICE_HOST=fd00::17",
		"CTXPROP_PORT=udp://[fd00::17]:7403",
		"CTXPROP_PORT_7403_UDP_ADDR=fd00::17",
	})
	if err != nil {
		t.Fatalf("ApplyEnv = %v, want no error", err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(withoutOrigins(c), want) {
		t.Errorf("variables that are not settings changed the config:\n%+v", withoutOrigins(c))
	}
}

// TestApplyEnv_LastWins: a list built as exec.Cmd's Env is, append(os.Environ(), "K=v"),
// means what the child would see.
func TestApplyEnv_LastWins(t *testing.T) {
	c := DefaultConfig()
	if err := c.ApplyEnv([]string{"CTXPROP_NODE_NAME=first", "CTXPROP_NODE_NAME=last"}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Node.Name, "last"; got != want {
		t.Errorf("node.name = %q, want %q", got, want)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"PATH", "PATH", 0},
		{"PAHT", "PATH", 1}, // a swap
		{"PATH", "", 4},
		{"", "PATH", 4},
		{"PTH", "PATH", 1},
		{"PATHS", "PATH", 1},
		{"PXTH", "PATH", 1},
		{"COMMIT_WINDOW", "STORE_COMMIT_WINDOW", 6},
		{"CA", "ABC", 3}, // optimal string alignment, not Damerau: no edit of a swapped pair
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// environ renders env as os.Environ does, in no particular order.
func environ(env map[string]string) []string {
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	return list
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(path, []byte("node { name = \"pod-file\" }\nadmin { address = \"127.0.0.1:7500\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("file", func(t *testing.T) {
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Admin.Address, "127.0.0.1:7500"; got != want {
			t.Errorf("admin.address = %q, want %q", got, want)
		}
	})
	t.Run("environment over file", func(t *testing.T) {
		t.Setenv("CTXPROP_ADMIN_ADDRESS", "127.0.0.1:7600")
		t.Setenv("CTXPROP_SYNC_PEERS", "10.0.0.7:7403,10.0.0.8:7403")
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Admin.Address, "127.0.0.1:7600"; got != want {
			t.Errorf("admin.address = %q, want %q", got, want)
		}
		if got, want := c.Sync.Peers, []string{"10.0.0.7:7403", "10.0.0.8:7403"}; !reflect.DeepEqual(got, want) {
			t.Errorf("sync.peers = %q, want %q", got, want)
		}
		if got, want := c.Node.Name, "pod-file"; got != want {
			t.Errorf("node.name = %q, want %q", got, want)
		}
	})
	t.Run("environment fails validation", func(t *testing.T) {
		t.Setenv("CTXPROP_ADMIN_ADDRESS", "10.1.2.3:7400")
		_, err := Load(path)
		if err == nil || !strings.HasPrefix(err.Error(), "CTXPROP_ADMIN_ADDRESS: admin.address 10.1.2.3:7400 is not a loopback address") {
			t.Fatalf("Load = %v, want the error to name CTXPROP_ADMIN_ADDRESS", err)
		}
	})
	t.Run("environment poll interval", func(t *testing.T) {
		t.Setenv("CTXPROP_FLAGS_POLL_INTERVAL", "-1s")
		_, err := Load(path)
		if err == nil || !strings.HasPrefix(err.Error(), "CTXPROP_FLAGS_POLL_INTERVAL: flags.poll_interval is -1s; want more than 0") {
			t.Fatalf("Load = %v, want the error to name CTXPROP_FLAGS_POLL_INTERVAL and the bound", err)
		}
	})
	t.Run("unknown variable", func(t *testing.T) {
		t.Setenv("CTXPROP_STORE_PAHT", "/var/lib/ctxprop/ctx.db")
		_, err := Load(path)
		if err == nil || err.Error() != "CTXPROP_STORE_PAHT is not a ctxprop setting; did you mean CTXPROP_STORE_PATH? (config attributes are CTXPROP_<BLOCK>_<ATTRIBUTE>)" {
			t.Fatalf("Load = %v, want the error to name CTXPROP_STORE_PAHT and CTXPROP_STORE_PATH", err)
		}
	})
	t.Run("sidecar ctl's variable", func(t *testing.T) {
		t.Setenv("CTXPROP_ADMIN_ADDR", "http://127.0.0.1:7400")
		if _, err := Load(path); err != nil {
			t.Fatalf("Load = %v, want CTXPROP_ADMIN_ADDR accepted", err)
		}
	})
	t.Run("bad environment", func(t *testing.T) {
		t.Setenv("CTXPROP_STORE_COMMIT_WINDOW", "soon")
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "CTXPROP_STORE_COMMIT_WINDOW") {
			t.Fatalf("Load = %v, want an error naming CTXPROP_STORE_COMMIT_WINDOW", err)
		}
	})
	t.Run("no file", func(t *testing.T) {
		t.Setenv("CTXPROP_NODE_NAME", "pod-env")
		c, err := Load("")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Node.Name, "pod-env"; got != want {
			t.Errorf("node.name = %q, want %q", got, want)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "absent.hcl"))
		if err == nil || !strings.Contains(err.Error(), "absent.hcl") || !strings.Contains(err.Error(), "-config") {
			t.Fatalf("Load = %v, want an error naming the file and -config", err)
		}
	})
}

// TestShippedConfig keeps the config.hcl users read valid, equal to the defaults, and
// complete: every attribute appears in it under a comment.
func TestShippedConfig(t *testing.T) {
	src, err := os.ReadFile("../config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(src, "config.hcl")
	if err != nil {
		t.Fatalf("the shipped config.hcl does not load: %v", err)
	}
	want := DefaultConfig()
	want.Node.Name = "pod-a"
	want.Sync.Peers, want.Flags.Files, want.Flags.Pinned = []string{}, []string{}, []string{}
	want.Admin.AllowedHosts = []string{}
	if !reflect.DeepEqual(withoutOrigins(got), want) {
		t.Fatalf("config.hcl differs from the defaults:\n%+v\nwant\n%+v", withoutOrigins(got), want)
	}

	lines := strings.Split(string(src), "\n")
	for _, s := range got.settings() {
		origin, ok := got.origins[s.path()]
		if !ok {
			t.Errorf("config.hcl does not set %s", s.path())
			continue
		}
		m := lineNumber.FindStringSubmatch(origin)
		if m == nil {
			t.Fatalf("origin %q of %s has no line number", origin, s.path())
		}
		line, _ := strconv.Atoi(m[1])
		text := lines[line-1]
		before := strings.TrimSpace(lines[line-2])
		if !strings.HasPrefix(before, "#") && !strings.Contains(text, "#") {
			t.Errorf("config.hcl:%d sets %s without a comment explaining it", line, s.path())
		}
	}
}

var lineNumber = regexp.MustCompile(`:(\d+)$`)

func FuzzParse(f *testing.F) {
	f.Add([]byte(everyAttribute))
	f.Add([]byte("store {\n  commit_window = \"x\"\n}\n"))
	f.Add([]byte(`{"node": {"name": "a"}}`))
	f.Add([]byte("node { name = \"${1+1}\" }\nsync { peers = [for p in [1,2]: p] }\n"))
	if src, err := os.ReadFile("../config.hcl"); err == nil {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		for _, name := range []string{"fuzz.hcl", "fuzz.hcl.json"} {
			c, err := Parse(src, name)
			if err != nil {
				continue
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse(%q, %s) returned a Config that fails Validate: %v", src, name, err)
			}
		}
	})
}

func TestApplyEnv_Map(t *testing.T) {
	c := DefaultConfig()
	env := map[string]string{"CTXPROP_FLAGS_CONTEXT_HEADERS": "plan=X-Plan, tier = X-Tier"}
	if err := c.ApplyEnv(environ(env)); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(c.Flags.ContextHeaders), "map[plan:X-Plan tier:X-Tier]"; got != want {
		t.Errorf("context_headers = %s, want %s", got, want)
	}
	env["CTXPROP_FLAGS_CONTEXT_HEADERS"] = "plan"
	err := c.ApplyEnv(environ(env))
	if err == nil || !strings.Contains(err.Error(), "CTXPROP_FLAGS_CONTEXT_HEADERS") {
		t.Errorf("bad map value: err = %v, want one naming the variable", err)
	}
}

// TestValidate_TracingMode covers tracing.mode and its older form tracing.enabled:
// the mode in effect, and the errors that name the attribute to fix.
func TestValidate_TracingMode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		mode    string // in effect, when valid
		errAttr string // named by the error, when not
	}{
		{"default participates", func(*Config) {}, "participate", ""},
		{"passthrough", func(c *Config) { c.Tracing.Mode = "passthrough" }, "passthrough", ""},
		{"export", func(c *Config) { c.Tracing.Mode, c.Tracing.OTLPEndpoint = "export", "collector:4318" }, "export", ""},
		{"enabled means export", func(c *Config) { c.Tracing.Enabled, c.Tracing.OTLPEndpoint = true, "collector:4318" }, "export", ""},
		{"enabled with mode export", func(c *Config) {
			c.Tracing.Enabled, c.Tracing.Mode, c.Tracing.OTLPEndpoint = true, "export", "collector:4318"
		}, "export", ""},
		{"tracestate key with @", func(c *Config) { c.Tracing.TracestateKey = "ctxprop@acme" }, "participate", ""},
		{"unknown mode", func(c *Config) { c.Tracing.Mode = "on" }, "", "tracing.mode"},
		{"export without endpoint", func(c *Config) { c.Tracing.Mode = "export" }, "", "tracing.otlp_endpoint"},
		{"enabled without endpoint", func(c *Config) { c.Tracing.Enabled = true }, "", "tracing.otlp_endpoint"},
		{"enabled and passthrough", func(c *Config) {
			c.Tracing.Enabled, c.Tracing.Mode, c.Tracing.OTLPEndpoint = true, "passthrough", "collector:4318"
		}, "", "tracing.enabled"},
		{"tracestate key uppercase", func(c *Config) { c.Tracing.TracestateKey = "Ctxprop" }, "", "tracing.tracestate_key"},
		{"tracestate key starting with @", func(c *Config) { c.Tracing.TracestateKey = "@ctxprop" }, "", "tracing.tracestate_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Node.Name = "pod-a"
			tc.edit(&c)
			err := c.Validate()
			if tc.errAttr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errAttr) {
					t.Fatalf("Validate = %v, want an error naming %s", err, tc.errAttr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got, want := c.Tracing.ModeInEffect(), tc.mode; got != want {
				t.Errorf("ModeInEffect() = %q, want %q", got, want)
			}
		})
	}
}
