// Package k8s puts the ctxprop sidecar into Kubernetes pods (SPEC §8).
//
// One mutation, [Config.InjectPod], is shared by both ways in:
//
//   - [Server], a mutating admission webhook (`sidecar webhook`) that the API server calls
//     for every pod it creates; it injects into pods annotated `ctxprop.io/inject: "true"`;
//   - [Config.InjectManifests], the offline form (`sidecar inject -f FILE`), which rewrites the
//     pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and
//     bare Pods in a multi-document YAML stream and passes every other object through as is.
//
// The sidecar is a native sidecar (an init container with `restartPolicy: Always`, Kubernetes
// ≥ 1.29): the kubelet starts it first, starts the app containers only once its startup probe
// passes, and stops it after them, so Jobs still complete.
//
// Interception, how the pod's traffic reaches the sidecar, is iptables by default: the init
// container ctxprop-init (`sidecar intercept`, root with NET_ADMIN and NET_RAW only) runs
// right before the sidecar and installs redirection rules, so the app needs no proxy settings
// and its Service no change. The other mode, http-proxy, sets HTTP_PROXY on the app
// containers instead and needs no privilege: Pod Security baseline and restricted refuse
// NET_ADMIN, and the webhook gives their namespaces' pods http-proxy (the API server sends
// those to [MutateNoNetAdminPath], matching the namespace's labels) or refuses a pod that
// asked for iptables, naming the annotation to set.
//
// The startup, readiness and liveness probes run `sidecar probe` inside the sidecar container
// (an exec probe) rather than an httpGet probe: the admin API listens on 127.0.0.1 only (SPEC
// §2), and the kubelet's httpGet probes dial the pod IP, which never reaches a loopback
// listener. Exposing /readyz on the inbound port instead would shadow the app's own paths.
//
// Per-pod settings are annotations (see the Annotation constants); every config.hcl attribute
// can be set per pod with `ctxprop.io/config-<block>-<attr>`, which becomes the environment
// override CTXPROP_<BLOCK>_<ATTR> of the sidecar (SPEC §9).
//
// Injection is idempotent: a pod that already has the sidecar container is never given a
// second one, and running either form twice changes nothing. Nothing in this package is on the
// request path of the proxy.
package k8s
