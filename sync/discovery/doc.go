// Package discovery tells the replication layer where the other sidecars may be
// (SPEC §7, "joined through a pluggable peer source").
//
// Every type here has one method the sync layer relies on,
//
//	Peers(ctx context.Context) ([]string, error)
//
// which answers host:port addresses of peer sync listeners. The answer may include
// this node's own address (a headless Service lists every ready pod, this one too);
// the caller filters it. The sync layer polls Peers every few seconds and hands the
// addresses to memberlist, which owns liveness: a source only has to say where peers
// might be, not whether they are up. That is why the sources prefer a stale list to an
// empty one (see ErrStale).
//
// The sources:
//
//   - Static: a fixed list, config sync { peers = [...] }.
//   - DNS: the records of a Kubernetes headless Service, re-resolved on every call
//     (A/AAAA joined with a port, or SRV when the name starts with "_"). Plain DNS, no
//     Kubernetes client: the sidecar needs no RBAC to find its peers.
//   - XDS: the endpoints of one cluster, streamed by any xDS server as EDS over ADS.
//   - Multi: the union of several sources, which is what FromConfig builds.
//
// Lifecycle follows the rest of ctxprop: constructors start nothing; Open starts the
// background work of sources that have any (only XDS does); Close stops it and is safe
// to call twice. Peers is safe for concurrent use on every type and never blocks longer
// than its context.
package discovery
