# ctxprop sidecar configuration: the documented default, valid as shipped.
#
#   sidecar run -config config.hcl
#
# Every block and attribute is optional; what you leave out keeps the value shown here.
# Unknown blocks or attributes are an error, so a typo never goes unnoticed.
#
# Durations are Go duration strings: "100ms", "30s", "5m", "24h"; "0" where zero means none.
# Relative paths are relative to the sidecar's working directory, not to this file.
#
# Any attribute can be overridden by an environment variable CTXPROP_<BLOCK>_<ATTRIBUTE>,
# upper-case, for example CTXPROP_NODE_NAME=pod-b, CTXPROP_STORE_COMMIT_WINDOW=50ms, or
# CTXPROP_SYNC_PEERS=10.0.0.7:7403,10.0.0.8:7403 (lists are comma-separated).
# The CTXPROP_ prefix is reserved for these: any other variable that starts with it stops
# the sidecar with an error naming it, as an unknown attribute here does. The exceptions
# are CTXPROP_ADMIN_ADDR, the admin API URL that `sidecar ctl` reads, and the variables
# Kubernetes sets for a Service named ctxprop-… (CTXPROP_…_SERVICE_HOST, CTXPROP_…_PORT…).

node {
  # Replica label shown to peers and in the admin API. Default: the host name, which in
  # Kubernetes is the pod name.
  name = "pod-a"
}

log {
  # Least severe level logged: trace, debug, info, warn or error.
  level = "info"
  # text for people, json for log collectors.
  format = "text"
}

store {
  # The bbolt file holding contexts, the replica id and the clock; its write-ahead log is
  # the same path + "-wal". Mount a volume here in Kubernetes; losing the file gives the
  # sidecar a new replica identity.
  path = "data/ctxprop.db"
  # Longest time a write made on the request path (telemetry, ctx-ops headers) waits before
  # it is on disk (in the write-ahead log). The proxy sums each context's telemetry over
  # this window and writes it once per window. Writes through the admin API are on disk
  # before they are acknowledged.
  # More than 0, at most 10s.
  commit_window = "100ms"
  # Longest time a change stays only in the write-ahead log before the bbolt file takes it
  # (sooner when the log is half full). Longer rewrites large, busy contexts less often;
  # shorter leaves less log to replay at start-up. More than 0, at most 1h.
  checkpoint_interval = "10s"
  # How long to wait for the file lock at start-up before giving up, in case another
  # process still holds the file.
  open_timeout = "5s"
  # How often expired contexts, entries and members are reclaimed.
  sweep_interval = "30s"
  # How long deletions and expiries are remembered so that peers which were away learn
  # of them. A peer gone longer than this receives full state when it returns.
  tombstone_ttl = "24h"
  # Limits. Exceeding one is refused with an error naming it; nothing stored is lost.
  max_contexts           = 100000 # contexts holding data (the markers deletes leave do not count)
  max_values_per_context = 10000  # counters, map entries and sets in one context
  max_value_bytes        = 65536  # size of one map value, in bytes of JSON
  max_set_members        = 10000  # members of one set
  # TTL given to new contexts: "0" means contexts never expire unless given a TTL.
  context_ttl = "0"
  # TTL given to a context that the request path creates: the proxy's telemetry and the
  # ctx-ops headers of a request whose ctx.name (baggage) names a context this sidecar does
  # not hold, or holds deleted or expired. Such a context expires unless written to again
  # (writes slide the TTL, unless fixed_ttl); stray names from requests go away by
  # themselves. A context created through the admin API keeps no expiry even when the
  # proxy writes to it later. To keep a context the requests created, remove its expiry:
  # PUT /v1/contexts/{ctx}/ttl with {"ttl":"0"} (sidecar ctl ttl CTX 0). "0": such
  # contexts get context_ttl like any other. At most 876000h (100 years).
  request_context_ttl = "24h"
  # false: a context's TTL restarts on every write (sliding). true: it runs from creation.
  fixed_ttl = false
}

admin {
  # Admin API, OFREP, /metrics and the web page. Keep it on loopback: it has no
  # authentication. Reach it from outside the pod with kubectl port-forward.
  address = "127.0.0.1:7400"
  # Set to true only to listen on a non-loopback address, behind your own access control.
  allow_non_loopback = false
  # Largest request body accepted, in bytes; bigger requests are refused before being read.
  max_body_bytes = 1048576
  # On SIGTERM, how long in-flight requests may take to finish before connections close.
  shutdown_timeout = "10s"
  # Host names, besides loopback addresses and localhost, under which the API may be
  # called (no port, no scheme). A request whose Host header names anything else is refused
  # with 403, so that no web page reaches the API through DNS rebinding. Writes from web
  # pages of other origins are refused too, and a write must be JSON or carry the header
  # X-Requested-By (see README, "The admin API and browsers").
  allowed_hosts = []
  # Per-context telemetry on /metrics (ctxprop_context_requests_total, _errors_total and
  # the _request_duration_seconds histogram, fleet-wide sums): how many contexts get
  # series of their own, the busiest by requests; the others are summed under
  # context="_other". 0 exports none.
  context_metrics_max = 50
  # Contexts that always get series of their own, within context_metrics_max, so their
  # series stay put when the traffic of others changes. Default: none.
  context_metrics = []
  # The web page's charts show the last chart_window: the sidecar samples, every
  # chart_interval, the requests, errors and latency of the context_metrics_max busiest
  # contexts (the rest summed as _other), the lag of as many peers and the flag
  # evaluations into a ring in memory (about 100 bytes per context and peer per sample),
  # served on GET /v1/history. Each sample reads the store as a /metrics scrape does.
  # "0" keeps no history and the page shows no charts; otherwise at least "1s".
  chart_interval = "5s"
  chart_window   = "10m" # 2 to 1440 samples of chart_interval
}

inbound {
  # Where other pods reach this pod: point the Service's targetPort here.
  address = "0.0.0.0:7401"
  # The app container, which receives the requests.
  app = "127.0.0.1:8080"
  # Apply ctx-ops headers arriving from other pods. Off: only the local app may change
  # contexts through headers, and ctx-ops from outside is dropped.
  trust_inbound_ops = false
  # Time allowed to read a request's headers (guards against slow clients).
  read_header_timeout = "10s"
  # How long an idle keep-alive connection stays open.
  idle_timeout = "90s"
  # How long to wait for the app's response headers; "0" waits as long as the client does.
  response_header_timeout = "0"
  # Largest request header block accepted, in bytes.
  max_header_bytes = 65536

  # Who may set a request's context (baggage ctx.name) and pinned flags (ctx.flag.*).
  # Other sidecars of the fleet sign what they forward (the ctx-sig header, with the key
  # of sync.key_file), and their context is kept. From anybody else the members are
  # removed before the app sees them (counted in ctxprop_proxy_refused_members_total);
  # the request still goes through. See "Security model" in the README.
  #
  # Client addresses whose context is kept unsigned, as IPs or CIDRs, such as an
  # ingress's pod range ["10.8.0.0/16"]. Empty: none.
  trusted_sources = []
  # At the edge of the fleet (the sidecar behind an ingress): a request header whose
  # value names the context of a request from outside, such as "X-Workflow-Id". The
  # app gets it as baggage ctx.name. Empty: none.
  context_header = ""
  # The same for a baggage member, such as "workflow.id"; "ctx.name" takes the ctx.name
  # of any caller (never its ctx.flag.* members). Empty: none.
  context_baggage = ""
  # Longest wait for the next bytes of a request body once it has started (nginx's
  # client_body_timeout): a client that stalls its body longer gets 408, the app's request
  # is cancelled and the connection closes. Not a limit on the whole body, which may stream
  # as long as it keeps moving; raise it for client streams that pause longer (a quiet
  # gRPC client stream counts too). "0" means no limit.
  body_timeout = "60s"
  # Serve plain HTTP/1.1 requests on the sidecar's own data path: one goroutine per client
  # connection, pooled connections to the app, the same header work, about half the CPU
  # per request of net/http's server and Transport (BENCHMARKS.md "Fast path"). Anything
  # else on a connection (h2c and gRPC, WebSocket and other Upgrades, CONNECT, Expect,
  # HTTP/1.0, unusual or ambiguous framing) is handed to the net/http path without the
  # client noticing. false serves every inbound connection on the net/http path.
  fast_path = true
}

outbound {
  # Forward proxy for the app's own calls: the app's HTTP_PROXY is http://127.0.0.1:7402.
  address = "127.0.0.1:7402"
  # Where the app's outbound TCP arrives when sidecar intercept's rules redirect it (the
  # default mode in Kubernetes): each connection goes on to the address the app dialled;
  # HTTP/1.x and h2c (gRPC) get the context headers, TLS and other protocols are spliced
  # through untouched. A 127.0.0.1 host also listens on [::1] at the same port, for IPv6.
  # "" for none (HTTP_PROXY mode only). Loopback only, unless allow_non_loopback.
  transparent_address = "127.0.0.1:7404"
  # Connections the transparent listener holds at once; past it new ones are reset,
  # logged and counted (ctxprop_proxy_transparent_refused_total).
  transparent_max_connections = 16384
  # How long a redirected connection (outbound, or inbound to the app's ports) may take to
  # send the first bytes that tell HTTP from anything else; a client silent that long (a
  # server-first protocol such as SMTP or MySQL, whose ports are better excluded from the
  # redirect) is spliced through untouched, having waited this long once.
  sniff_timeout = "1s"
  # Set to true only to listen on a non-loopback address: the proxy has no authentication,
  # so anyone who reaches it sends requests from the pod. Even then, clients that are not
  # on loopback are refused (403) any target that is or resolves to a loopback address, so
  # they never reach the pod's own services such as the admin API.
  allow_non_loopback = false
  # Idle connections kept per upstream host.
  max_idle_conns_per_host = 256
  # Time allowed to connect to an upstream.
  dial_timeout = "5s"
}

sync {
  # Listener for other sidecars' replication traffic.
  address = "0.0.0.0:7403"
  # Peers to join, as host:port. Any one reachable peer is enough; the rest are learned.
  peers = []
  # Or: a Kubernetes headless Service whose DNS records are the peers, such as
  # "ctxprop-peers.default.svc.cluster.local". Empty: not used.
  dns = ""
  # Or: an xDS server (host:port) whose EDS endpoints are the peers (cluster
  # "ctxprop-peers", over ADS; this sidecar's node id is node.name). Empty: not used.
  # The xDS server chooses the peers, so the connection is plaintext only to a loopback
  # address (a control plane in the pod) or with xds_insecure; otherwise set xds_ca_file.
  xds = ""
  # PEM file of the CA that signs the xDS server's certificate; set, the connection to xds
  # is TLS (1.2 or later) and the server's certificate must name xds_server_name, or the
  # host of xds. Read at start-up. Empty: no TLS.
  xds_ca_file = ""
  # PEM client certificate and its private key, for mTLS to the xDS server: both or
  # neither, and only with xds_ca_file. Read at start-up: restart to rotate them.
  xds_cert_file = ""
  xds_key_file  = "" # the private key of xds_cert_file
  # Name the xDS server's certificate must hold, when it is not the host of xds (such
  # as "istiod.istio-system.svc" for xds = "10.0.0.9:15012"). Empty: the host of xds.
  xds_server_name = ""
  # Set to true to connect to an xds that is not on loopback in plaintext, such as a
  # control plane reached through a mesh that already encrypts: whoever can change the
  # answers on the way could make this sidecar sync with hosts of their choosing.
  xds_insecure = false
  # Time between gossip rounds.
  interval = "200ms"
  # Peers sent to in each gossip round.
  fanout = 3
  # File holding the memberlist keyring secret that authenticates and encrypts peer
  # traffic; every sidecar needs the same one. Empty: peer traffic is not encrypted.
  key_file = ""
  # Most peers this sidecar tracks, and members memberlist lists, at once: more are
  # refused (ctxprop_sync_refused_peers_total, a WARN naming this). Set it above the
  # fleet's size. Without key_file it bounds what hosts that are not sidecars can make
  # a sidecar remember; peers that never answer are forgotten after 30s.
  max_peers = 1024
  # Also export replication metrics per peer (ctxprop_sync_peer_*{peer=...}). Off, /metrics
  # has fleet-wide ones only (bytes in and out, errors, lag over peers), so that a fleet of
  # N sidecars exports N times a few series rather than N × N; GET /v1/peers and
  # `sidecar ctl peers` show each peer either way.
  peer_metrics = false
  # How long a replica must be gone (neither alive in membership nor heard from) before
  # its counter slots are folded into a live replica's and, store.tombstone_ttl later,
  # dropped from every context: each replaced pod is a new replica, and without this
  # every pod that ever lived would keep a slot in every counter it touched. Longer than
  # any partition you expect: a sidecar cut off longer is retired, and when it returns
  # it restarts under a new replica id, keeping what it wrote. More than 0.
  retire_after = "1h"
}

# Replication between clusters through NATS JetStream (README "Multi-cluster"). Off
# unless urls is set. Every sidecar with it publishes the deltas of its own writes to
# <subject_prefix>.delta.<cluster> on stream, merges the other clusters' deltas through
# one durable consumer its cluster shares (named cluster), and joins the contexts it
# holds into the KV bucket, from which a new cluster, or one cut off longer than
# retention, catches up. Gossip (the sync block) spreads them inside the cluster.
relay {
  # NATS servers, such as ["nats://nats.nats.svc:4222"]; tls:// for TLS. Empty: no relay.
  urls = []
  # This cluster's name, the same on all its sidecars and different in every cluster:
  # letters, digits, - and _. Required with urls.
  cluster = ""
  # First token(s) of the delta subjects; NATS permissions can allow <prefix>.> and $JS.>.
  subject_prefix = "ctxprop"
  # JetStream stream of the deltas, created if missing.
  stream = "CTXPROP_DELTAS"
  # JetStream KV bucket of the contexts' full states, created if missing; next to it
  # <bucket>_replicas holds every sidecar's heartbeat, so that no cluster retires another
  # cluster's live replicas (their heartbeats count for sync.retire_after).
  bucket = "ctxprop_state"
  # How to authenticate to NATS, at most one: a credentials file (user JWT and nkey
  # seed, as `nsc` writes), an nkey seed file, a file holding a token, or a user with a
  # file holding its password. Read at start-up. Empty: no authentication.
  creds_file    = ""
  nkey_file     = "" # an nkey seed file (SU...)
  token_file    = "" # a file holding the token
  user          = "" # with password_file
  password_file = "" # the file holding user's password
  # PEM CA that signs the NATS server's certificate; with tls:// URLs. Empty: the
  # system's roots.
  tls_ca_file = ""
  # PEM client certificate and its key, for mTLS to NATS: both or neither.
  tls_cert_file = ""
  tls_key_file  = "" # the private key of tls_cert_file
  # Name the server's certificate must hold when it is not the URL's host.
  tls_server_name = ""
  # How long the stream keeps a delta. A cluster cut off longer catches up from the
  # bucket instead.
  retention = "24h"
  # How often a sidecar joins the contexts that changed here into the bucket
  # (compare-and-set, written only when it adds something).
  state_interval = "2s"
  # How long local deltas are joined per context before they are published: one message
  # per window, not per write.
  flush_interval = "20ms"
  # How long a delivered delta may go unacknowledged (its sidecar killed) before
  # JetStream delivers it again, to any sidecar of the cluster.
  ack_wait = "10s"
  # Messages delivered to this cluster and not yet acknowledged (the consumer's
  # MaxAckPending), and publishes awaiting acknowledgement, at most.
  max_in_flight = 1024
  # Stream messages merged in one store commit at most.
  max_batch = 256
}

tracing {
  # How the proxy takes part in W3C Trace Context (traceparent, tracestate):
  #   "participate": each proxied request is a hop of its trace: same trace-id, a new
  #     parent-id, flags kept, tracestate carried; a request without a valid
  #     traceparent starts a new trace. Nothing is recorded or exported.
  #   "export": the same through a span per proxied request (and per sync round that
  #     sent deltas), exported with every metric of /metrics every 30s by OTLP/HTTP to
  #     otlp_endpoint.
  #   "passthrough": a valid traceparent and its tracestate are forwarded byte for
  #     byte, an invalid one is removed, and a request without one gets none.
  mode = "participate"
  # The older way to choose mode "export": true means export.
  enabled = false
  # OTLP/HTTP collector host:port, such as "otel-collector:4318"; required in mode export.
  otlp_endpoint = ""
  # Fraction of the traces the sidecar starts that it marks sampled, from 0 to 1
  # (participate and export).
  sample_ratio = 1.0
  # When set, such as "ctxprop", each hop writes "<key>=<its parent-id>" at the left of
  # tracestate, replacing the key's older entry, so the next hop sees which system wrote
  # the traceparent. "" adds no entry.
  tracestate_key = ""
}

flags {
  # flagd-format JSON flag files, reloaded when they change, such as ["flags.json"].
  files = []
  # Flags whose value is pinned into baggage (ctx.flag.<name>) at the edge of a request
  # chain, so that every hop of the chain sees the same value.
  pinned = []
  # How often the flag files are checked for changes.
  poll_interval = "2s"
  # Request header whose value is the evaluation context's targetingKey when the edge
  # evaluates a pinned flag, such as "X-User-Id"; "" means none (fractional rollouts then
  # need the key from context_headers or context_baggage).
  targeting_key_header = ""
  # Evaluation-context attributes taken from request headers at the edge, such as
  # { plan = "X-Plan" }.
  context_headers = {}
  # Evaluation-context attributes taken from baggage members at the edge, such as
  # { tenant = "tenant.id" }.
  context_baggage = {}
}

intercept {
  # Read by `sidecar intercept` only (the injected init container, which needs NET_ADMIN
  # and NET_RAW): it redirects the pod's TCP to the sidecar with iptables nat rules in its
  # own chains CTXPROP_INBOUND and CTXPROP_OUTBOUND. See README, "How traffic reaches the
  # sidecar"; `sidecar intercept -dry-run` prints the rules.
  #
  # The uid the sidecar runs as: its own traffic (sync, the proxies' upstream connections)
  # is never redirected. Not 0.
  proxy_uid = 65532
  # The app's ports whose inbound TCP goes to the inbound proxy; [] means every port
  # except the sidecar's own (admin, inbound, outbound, transparent and sync).
  inbound_ports = []
  # Ports never redirected inbound, besides the sidecar's own, such as [9090].
  exclude_inbound_ports = []
  # Destination ports never redirected outbound, such as [5432].
  exclude_outbound_ports = []
  # Destinations never redirected outbound, CIDRs or IPs, such as ["169.254.169.254"];
  # loopback never is.
  exclude_outbound_cidrs = []
  # Set up the same rules for IPv6 (ip6tables). false on a node without IPv6.
  ipv6 = true
  # iptables flavour: legacy (iptables-legacy), nft (iptables-nft), or auto: legacy if
  # the pod's network namespace already holds iptables-legacy rules, else nft.
  backend = "auto"
}
