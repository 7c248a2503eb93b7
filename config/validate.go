package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/ctxprop/ctxprop/headers"
	"github.com/ctxprop/ctxprop/ops"
)

// maxCommitWindow bounds store.commit_window: SPEC §3 promises request-path writes reach
// disk within a bounded window, and beyond seconds that promise means little.
const maxCommitWindow = 10 * time.Second

// maxCheckpointInterval bounds store.checkpoint_interval: the log holds what bbolt does not,
// and a restart replays it.
const maxCheckpointInterval = time.Hour

// maxChartSamples bounds admin.chart_window / admin.chart_interval, the samples the web
// page's history keeps in memory (webui.MaxHistorySamples, which NewHistory enforces too).
const maxChartSamples = 1440

// Validate reports every invalid setting at once, one per line, each prefixed with the
// file:line or environment variable that set it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		msg := path + " " + fmt.Sprintf(format, args...)
		if origin, ok := c.origins[path]; ok {
			msg = origin + ": " + msg
		}
		errs = append(errs, errors.New(msg))
	}
	positive := func(path string, n int64) {
		if n <= 0 {
			bad(path, "is %d; want a positive number", n)
		}
	}
	positiveDuration := func(path string, d time.Duration) {
		if d <= 0 {
			bad(path, "is %s; want a positive duration such as \"5s\"", d)
		}
	}
	address := func(path, addr string, listen bool) {
		if err := checkHostPort(addr, listen); err != nil {
			bad(path, "%q %v", addr, err)
		}
	}

	switch name := c.Node.Name; {
	case name == "":
		bad("node.name", "is empty (the host name was not available); set node { name = \"pod-a\" } or %s", EnvVar("node", "name"))
	case len(name) > 253 || strings.IndexFunc(name, notPrintable) >= 0:
		bad("node.name", "%q must be 1 to 253 bytes of printable text", name)
	}

	if !slices.Contains([]string{"trace", "debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "%q is not a level; want trace, debug, info, warn or error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		bad("log.format", "%q is not a format; want text or json", c.Log.Format)
	}

	if c.Store.Path == "" {
		bad("store.path", "is empty; want the path of the bbolt file, such as \"data/ctxprop.db\"")
	}
	if w := c.Store.CommitWindow; w <= 0 || w > maxCommitWindow {
		bad("store.commit_window", "is %s; want more than 0 and at most %s", w, maxCommitWindow)
	}
	if w := c.Store.CheckpointInterval; w <= 0 || w > maxCheckpointInterval {
		bad("store.checkpoint_interval", "is %s; want more than 0 and at most %s", w, maxCheckpointInterval)
	}
	positiveDuration("store.open_timeout", c.Store.OpenTimeout)
	positiveDuration("store.sweep_interval", c.Store.SweepInterval)
	positiveDuration("store.tombstone_ttl", c.Store.TombstoneTTL)
	positive("store.max_contexts", int64(c.Store.MaxContexts))
	positive("store.max_values_per_context", int64(c.Store.MaxValuesPerContext))
	positive("store.max_value_bytes", int64(c.Store.MaxValueBytes))
	positive("store.max_set_members", int64(c.Store.MaxSetMembers))
	if c.Store.ContextTTL < 0 {
		bad("store.context_ttl", "is %s; want \"0\" for no expiry or a positive duration", c.Store.ContextTTL)
	}
	if d := c.Store.RequestContextTTL; d < 0 || d > ops.MaxTTL {
		bad("store.request_context_ttl", "is %s; want \"0\" (such contexts get store.context_ttl) or a positive duration of at most %s", d, ops.MaxTTL)
	}

	address("admin.address", c.Admin.Address, true)
	if host, _, err := net.SplitHostPort(c.Admin.Address); err == nil && !c.Admin.AllowNonLoopback && !isLoopback(host) {
		bad("admin.address", "%s is not a loopback address; the admin API has no authentication — use 127.0.0.1 or set admin.allow_non_loopback = true", c.Admin.Address)
	}
	positive("admin.max_body_bytes", c.Admin.MaxBodyBytes)
	positiveDuration("admin.shutdown_timeout", c.Admin.ShutdownTimeout)
	for i, h := range c.Admin.AllowedHosts {
		if !isHostName(h) {
			bad("admin.allowed_hosts", "entry %d %q is not a host name; list bare names as the Host header gives them, such as \"ctxprop-admin.internal\" (no scheme, port or path)", i+1, h)
		}
	}
	if c.Admin.ContextMetricsMax < 0 {
		bad("admin.context_metrics_max", "is %d; want 0 to export no per-context metrics or a positive number of contexts", c.Admin.ContextMetricsMax)
	}
	if n := len(c.Admin.ContextMetrics); n > 0 && n > c.Admin.ContextMetricsMax {
		bad("admin.context_metrics", "lists %d contexts but admin.context_metrics_max = %d gives series to at most that many; raise admin.context_metrics_max to at least %d or list fewer", n, c.Admin.ContextMetricsMax, n)
	}
	seenContext := map[string]bool{}
	for i, name := range c.Admin.ContextMetrics {
		switch {
		case name == "" || name == "_other":
			bad("admin.context_metrics", "entry %d %q is not a context name; \"_other\" is the series of the contexts not listed", i+1, name)
		case seenContext[name]:
			bad("admin.context_metrics", "entry %d %q is listed twice; list each context once", i+1, name)
		}
		seenContext[name] = true
	}
	if d := c.Admin.ChartInterval; d != 0 && d < time.Second {
		bad("admin.chart_interval", "is %s; want \"0\" to keep no history for the web page's charts, or at least 1s (each sample reads the store as a /metrics scrape does)", d)
	}
	if iv, w := c.Admin.ChartInterval, c.Admin.ChartWindow; iv >= time.Second {
		if n := w / iv; n < 2 || n > maxChartSamples {
			bad("admin.chart_window", "is %s, %d samples of admin.chart_interval = %s; want 2 to %d samples: a window between %s and %s", w, n, iv, maxChartSamples, 2*iv, maxChartSamples*iv)
		}
	}

	address("inbound.address", c.Inbound.Address, true)
	address("inbound.app", c.Inbound.App, false)
	positiveDuration("inbound.read_header_timeout", c.Inbound.ReadHeaderTimeout)
	positiveDuration("inbound.idle_timeout", c.Inbound.IdleTimeout)
	if c.Inbound.ResponseHeaderTimeout < 0 {
		bad("inbound.response_header_timeout", "is %s; want \"0\" for no limit or a positive duration", c.Inbound.ResponseHeaderTimeout)
	}
	positive("inbound.max_header_bytes", int64(c.Inbound.MaxHeaderBytes))
	for i, src := range c.Inbound.TrustedSources {
		if _, err := ParsePrefix(src); err != nil {
			bad("inbound.trusted_sources", "entry %d %q is not an IP address or CIDR; want such as \"10.8.0.0/16\" or \"10.8.3.4\"", i+1, src)
		}
	}
	if h := c.Inbound.ContextHeader; h != "" && strings.IndexFunc(h, notTokenChar) >= 0 {
		bad("inbound.context_header", "%q is not a header name; want such as \"X-Workflow-Id\"", h)
	}
	switch b := c.Inbound.ContextBaggage; {
	case b == "":
	case strings.IndexFunc(b, notTokenChar) >= 0:
		bad("inbound.context_baggage", "%q is not a baggage key; want \"ctx.name\" or a key of your own such as \"workflow.id\"", b)
	case strings.HasPrefix(b, "ctx.") && b != "ctx.name":
		bad("inbound.context_baggage", "%q is reserved by ctxprop (ctx.*); want \"ctx.name\" or a key of your own such as \"workflow.id\"", b)
	}
	if c.Inbound.BodyTimeout < 0 {
		bad("inbound.body_timeout", "is %s; want \"0\" for no limit or a positive duration such as \"60s\"", c.Inbound.BodyTimeout)
	}

	address("outbound.address", c.Outbound.Address, true)
	if host, _, err := net.SplitHostPort(c.Outbound.Address); err == nil && !c.Outbound.AllowNonLoopback && !isLoopback(host) {
		bad("outbound.address", "%s is not a loopback address; the outbound proxy has no authentication and other hosts could use it — use 127.0.0.1 or set outbound.allow_non_loopback = true", c.Outbound.Address)
	}
	if t := c.Outbound.TransparentAddress; t != "" {
		address("outbound.transparent_address", t, true)
		if host, _, err := net.SplitHostPort(t); err == nil && !c.Outbound.AllowNonLoopback && !isLoopback(host) {
			bad("outbound.transparent_address", "%s is not a loopback address; redirected connections arrive on loopback, and other hosts could use a listener they reach — use 127.0.0.1, \"\" for none, or set outbound.allow_non_loopback = true", t)
		}
	}
	positive("outbound.transparent_max_connections", int64(c.Outbound.TransparentMaxConnections))
	positiveDuration("outbound.sniff_timeout", c.Outbound.SniffTimeout)
	positive("outbound.max_idle_conns_per_host", int64(c.Outbound.MaxIdleConnsPerHost))
	positiveDuration("outbound.dial_timeout", c.Outbound.DialTimeout)

	address("sync.address", c.Sync.Address, true)
	for i, p := range c.Sync.Peers {
		if err := checkHostPort(p, false); err != nil {
			bad("sync.peers", "entry %d %q %v", i+1, p, err)
		}
	}
	if d := c.Sync.DNS; d != "" && (strings.Contains(d, "://") || strings.IndexFunc(d, unicode.IsSpace) >= 0) {
		bad("sync.dns", "%q is not a DNS name; want a headless Service name such as \"ctxprop-peers.default.svc.cluster.local\"", d)
	}
	if c.Sync.XDS != "" {
		address("sync.xds", c.Sync.XDS, false)
	}
	// The xDS server chooses this sidecar's peers: whoever can rewrite its answers on the
	// way can add peers of their own. Plaintext is therefore allowed on loopback (inside
	// the pod, where the admin API is trusted too) and elsewhere only when asked for.
	xdsTLS := map[string]string{
		"sync.xds_ca_file": c.Sync.XDSCAFile, "sync.xds_cert_file": c.Sync.XDSCertFile,
		"sync.xds_key_file": c.Sync.XDSKeyFile, "sync.xds_server_name": c.Sync.XDSServerName,
	}
	var xdsTLSSet []string
	for _, path := range slices.Sorted(maps.Keys(xdsTLS)) {
		if xdsTLS[path] != "" {
			xdsTLSSet = append(xdsTLSSet, path)
		}
	}
	switch host, _, _ := net.SplitHostPort(c.Sync.XDS); {
	case c.Sync.XDS == "":
		for _, path := range xdsTLSSet {
			bad(path, "is set but sync.xds is empty; set sync.xds to the xDS server's host:port, or remove %s", path)
		}
		if c.Sync.XDSInsecure {
			bad("sync.xds_insecure", "is true but sync.xds is empty; set sync.xds to the xDS server's host:port, or remove sync.xds_insecure")
		}
	case c.Sync.XDSInsecure && len(xdsTLSSet) > 0:
		bad("sync.xds_insecure", "is true but %s is set too; remove sync.xds_insecure to connect to sync.xds by TLS, or the TLS settings for plaintext", strings.Join(xdsTLSSet, ", "))
	case len(xdsTLSSet) > 0:
		if c.Sync.XDSCAFile == "" {
			bad("sync.xds_ca_file", "is empty but %s is set; set it to the PEM file of the CA that signs the xDS server's certificate", strings.Join(xdsTLSSet, ", "))
		}
		switch cert, key := c.Sync.XDSCertFile != "", c.Sync.XDSKeyFile != ""; {
		case cert && !key:
			bad("sync.xds_cert_file", "is set but sync.xds_key_file is not; mTLS to the xDS server needs the client certificate and its private key: set both, or neither")
		case key && !cert:
			bad("sync.xds_key_file", "is set but sync.xds_cert_file is not; mTLS to the xDS server needs the client certificate and its private key: set both, or neither")
		}
	case !c.Sync.XDSInsecure && checkHostPort(c.Sync.XDS, false) == nil && !isLoopback(host):
		bad("sync.xds", "%s is not a loopback address and no TLS is set; the xDS server chooses this sidecar's peers, so set sync.xds_ca_file to the PEM file of the CA that signs its certificate (and sync.xds_cert_file and sync.xds_key_file for mTLS), or set sync.xds_insecure = true for a plaintext control plane behind a mesh that already encrypts", c.Sync.XDS)
	}
	positiveDuration("sync.interval", c.Sync.Interval)
	positiveDuration("sync.retire_after", c.Sync.RetireAfter)
	positive("sync.fanout", int64(c.Sync.Fanout))
	positive("sync.max_peers", int64(c.Sync.MaxPeers))

	c.validateRelay(bad, positive, positiveDuration)

	switch m := c.Tracing.Mode; {
	case !slices.Contains([]string{TraceParticipate, TraceExport, TracePassthrough}, m):
		bad("tracing.mode", "%q is not a mode; want participate (take part in W3C Trace Context, export nothing), export (the same, and export spans to tracing.otlp_endpoint) or passthrough (forward trace headers byte for byte)", m)
	case c.Tracing.Enabled && m == TracePassthrough:
		bad("tracing.enabled", "is true, which asks for mode export, but tracing.mode is passthrough; remove tracing.enabled and set tracing.mode = \"export\" or \"passthrough\"")
	}
	switch {
	case c.Tracing.Enabled && c.Tracing.OTLPEndpoint == "":
		bad("tracing.otlp_endpoint", "is empty but tracing.enabled is true; set it to your collector, such as \"otel-collector:4317\"")
	case c.Tracing.Mode == TraceExport && c.Tracing.OTLPEndpoint == "":
		bad("tracing.otlp_endpoint", "is empty but tracing.mode is export; set it to your collector, such as \"otel-collector:4317\", or use mode participate to take part in traces without exporting")
	}
	if k := c.Tracing.TracestateKey; k != "" && !headers.ValidTracestateKey(k) {
		bad("tracing.tracestate_key", "%q is not a tracestate key; want up to 256 of a-z 0-9 _ - * / @, starting with a lowercase letter or digit, such as \"ctxprop\"", k)
	}
	if r := c.Tracing.SampleRatio; !(r >= 0 && r <= 1) {
		bad("tracing.sample_ratio", "is %v; want a number from 0 to 1", r)
	}

	for i, f := range c.Flags.Files {
		if f == "" {
			bad("flags.files", "entry %d is empty; want the path of a flagd JSON file", i+1)
		}
	}
	for i, name := range c.Flags.Pinned {
		if name == "" || strings.IndexFunc(name, notTokenChar) >= 0 {
			bad("flags.pinned", "entry %d %q is not a flag name usable in the baggage key ctx.flag.<name>; use letters, digits and !#$%%&'*+-.^_`|~", i+1, name)
		}
	}
	// flags.Options reads zero or less as its own default, so such a value would be
	// ignored without a word; zero would otherwise poll without pause.
	if d := c.Flags.PollInterval; d <= 0 {
		bad("flags.poll_interval", "is %s; want more than 0, such as \"2s\"", d)
	}

	c.validateIntercept(bad)

	errs = append(errs, c.checkPortClashes()...)
	return errors.Join(errs...)
}

// checkPortClashes refuses two listeners on one port, and an app address that is one of
// the sidecar's own listeners, which would make the proxy forward to itself forever.
func (c *Config) checkPortClashes() []error {
	type addr struct{ path, value string }
	listeners := []addr{
		{"admin.address", c.Admin.Address},
		{"inbound.address", c.Inbound.Address},
		{"outbound.address", c.Outbound.Address},
		{"sync.address", c.Sync.Address},
	}
	if c.Outbound.TransparentAddress != "" {
		listeners = append(listeners, addr{"outbound.transparent_address", c.Outbound.TransparentAddress})
	}
	var errs []error
	report := func(a, b addr, why string) {
		msg := fmt.Sprintf("%s %s and %s %s %s; give them different ports", a.path, a.value, b.path, b.value, why)
		if origin, ok := c.origins[b.path]; ok {
			msg = origin + ": " + msg
		}
		errs = append(errs, errors.New(msg))
	}
	for i, a := range listeners {
		for _, b := range listeners[i+1:] {
			if overlap(a.value, b.value) {
				report(a, b, "use the same port")
			}
		}
	}
	app := addr{"inbound.app", c.Inbound.App}
	for _, l := range listeners {
		if overlap(l.value, app.value) {
			report(l, app, "are the same, so the proxy would forward to itself")
		}
	}
	return errs
}

// overlap reports whether two host:port addresses name one socket: the same non-zero port
// on the same host or where either listens on every interface.
func overlap(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	return ha == hb || isUnspecified(ha) || isUnspecified(hb)
}

func isUnspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHostPort checks a host:port address. A listen address may leave the host empty
// (every interface) and use port 0 (any free port, handy in tests); a dial address may not.
func checkHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("is not host:port (%v); want an address such as \"127.0.0.1:8080\"", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("has port %q; want a number from 1 to 65535", port)
	}
	if !listen {
		if host == "" {
			return errors.New("has no host; want an address such as \"10.0.0.7:7403\"")
		}
		if n == 0 {
			return errors.New("has port 0; want a number from 1 to 65535")
		}
	}
	if strings.IndexFunc(host, notPrintable) >= 0 || strings.ContainsRune(host, ' ') {
		return errors.New("has spaces or control characters in the host")
	}
	return nil
}

func notPrintable(r rune) bool { return !unicode.IsPrint(r) }

// isHostName reports whether h is a DNS name (letters, digits, '-', '_' and dots between
// labels, a trailing dot allowed) or an IP literal, as a Host header names a server.
func isHostName(h string) bool {
	if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
		return true
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || strings.IndexFunc(label, notHostChar) >= 0 {
			return false
		}
	}
	return true
}

func notHostChar(r rune) bool {
	return !(r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)) || r == '-' || r == '_')
}

// notTokenChar reports runes outside the RFC 9110 token characters that W3C baggage keys use.
func notTokenChar(r rune) bool {
	if r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
		return false
	}
	return !strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

// ParsePrefix reads an entry of inbound.trusted_sources: a CIDR, or one IP address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// maxUID is the largest uid: (uid_t)-1 means "no uid" to the kernel.
const maxUID = 1<<32 - 2

// validateIntercept checks the intercept block, which `sidecar intercept` turns into
// iptables rules: a mistake there either loops the sidecar's traffic back to itself or
// leaves a port unintercepted without a word.
func (c *Config) validateIntercept(bad func(path, format string, args ...any)) {
	ic := c.Intercept
	switch uid := ic.ProxyUID; {
	case uid == 0:
		bad("intercept.proxy_uid", "is 0 (root); every process running as root, often the app, would bypass the sidecar — run the sidecar as a uid of its own (65532 in an injected pod) and set that here")
	case uid < 0 || uid > maxUID:
		bad("intercept.proxy_uid", "is %d; want the uid the sidecar runs as, from 1 to %d", uid, maxUID)
	}
	ports := func(path string, list []int) {
		for i, p := range list {
			if p < 1 || p > 65535 {
				bad(path, "entry %d is %d; want a port from 1 to 65535", i+1, p)
			}
		}
	}
	ports("intercept.inbound_ports", ic.InboundPorts)
	ports("intercept.exclude_inbound_ports", ic.ExcludeInboundPorts)
	ports("intercept.exclude_outbound_ports", ic.ExcludeOutboundPorts)
	own := map[string]string{
		"admin.address": c.Admin.Address, "inbound.address": c.Inbound.Address,
		"outbound.address": c.Outbound.Address, "outbound.transparent_address": c.Outbound.TransparentAddress,
		"sync.address": c.Sync.Address,
	}
	for _, path := range slices.Sorted(maps.Keys(own)) {
		_, port, err := net.SplitHostPort(own[path])
		if err != nil {
			continue
		}
		if n, _ := strconv.Atoi(port); n != 0 && slices.Contains(ic.InboundPorts, n) {
			bad("intercept.inbound_ports", "holds %d, the port of %s; the sidecar's own ports are never redirected — remove it", n, path)
		}
	}
	for _, p := range ic.InboundPorts {
		if slices.Contains(ic.ExcludeInboundPorts, p) {
			bad("intercept.inbound_ports", "holds %d, which intercept.exclude_inbound_ports holds too; keep it in one of them", p)
		}
	}
	for i, cidr := range ic.ExcludeOutboundCIDRs {
		if _, err := ParsePrefix(cidr); err != nil {
			bad("intercept.exclude_outbound_cidrs", "entry %d %q is not an IP address or CIDR; want such as \"10.96.0.0/12\" or \"169.254.169.254\"", i+1, cidr)
		}
	}
	if !slices.Contains([]string{BackendAuto, BackendLegacy, BackendNFT}, ic.Backend) {
		bad("intercept.backend", "%q is not a backend; want auto (legacy if the pod's network namespace already holds iptables-legacy rules, else nft), legacy (iptables-legacy) or nft (iptables-nft)", ic.Backend)
	}
}

// validateRelay checks the relay block (issue 15); without relay.urls the relay is off and
// only relay.cluster is checked, as a sign of a forgotten url.
func (c *Config) validateRelay(bad func(path, format string, args ...any), positive func(string, int64), positiveDuration func(string, time.Duration)) {
	r := c.Relay
	if len(r.URLs) == 0 {
		if r.Cluster != "" {
			bad("relay.urls", "is empty but relay.cluster is %q; set relay.urls to the NATS servers, such as [\"nats://nats.nats:4222\"], or remove relay.cluster", r.Cluster)
		}
		return
	}
	for i, raw := range r.URLs {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			bad("relay.urls", "entry %d %q: %v", i+1, raw, err)
		case !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme) || u.Host == "":
			bad("relay.urls", "entry %d %q is not a NATS URL; want nats://host:4222 (or tls://, ws://, wss://)", i+1, raw)
		}
	}
	name := func(path, v, allowed string, ok func(rune) bool) {
		if v == "" || len(v) > 64 || strings.IndexFunc(v, func(r rune) bool { return !ok(r) }) >= 0 {
			bad(path, "%q must be 1 to 64 of %s", v, allowed)
		}
	}
	word := func(r rune) bool {
		return r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_')
	}
	name("relay.cluster", r.Cluster, "letters, digits, - and _ (it is a subject token and the durable consumer's name), such as \"eu-west-1\"", word)
	for _, tok := range strings.Split(r.SubjectPrefix, ".") {
		if tok == "" || strings.IndexFunc(tok, func(r rune) bool { return !word(r) }) >= 0 {
			bad("relay.subject_prefix", "%q must be dot-separated tokens of letters, digits, - and _ (no wildcards), such as \"ctxprop\" or \"acme.ctxprop\"", r.SubjectPrefix)
			break
		}
	}
	name("relay.stream", r.Stream, "letters, digits, - and _", word)
	name("relay.bucket", r.Bucket, "letters, digits, - and _", word)
	auths := 0
	for _, v := range []string{r.CredsFile, r.NKeyFile, r.TokenFile, r.User} {
		if v != "" {
			auths++
		}
	}
	if auths > 1 {
		bad("relay.creds_file", "and relay.nkey_file, relay.token_file, relay.user: more than one is set; keep the one your NATS server expects")
	}
	if (r.User == "") != (r.PasswordFile == "") {
		bad("relay.user", "and relay.password_file go together: set both or neither")
	}
	if (r.TLSCertFile == "") != (r.TLSKeyFile == "") {
		bad("relay.tls_cert_file", "and relay.tls_key_file go together: set both or neither")
	}
	positiveDuration("relay.retention", r.Retention)
	positiveDuration("relay.state_interval", r.StateInterval)
	positiveDuration("relay.flush_interval", r.FlushInterval)
	positiveDuration("relay.ack_wait", r.AckWait)
	positive("relay.max_in_flight", int64(r.MaxInFlight))
	positive("relay.max_batch", int64(r.MaxBatch))
}
