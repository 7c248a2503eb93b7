package k8s

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ctxprop/ctxprop/config"
)

// Pod annotations read and written by the injector. All are optional except Inject, which the
// webhook needs to see "true" before it touches a pod.
const (
	// AnnotationInject opts a pod in ("true") or out ("false").
	AnnotationInject = "ctxprop.io/inject"
	// AnnotationStatus is written by the injector: "injected" or "skipped".
	AnnotationStatus = "ctxprop.io/status"
	// AnnotationSkipReason is written next to status "skipped" and says why.
	AnnotationSkipReason = "ctxprop.io/skip-reason"

	// AnnotationAppPort is the port the app listens on (inbound proxy target 127.0.0.1:PORT).
	// Unset: the sidecar's configured inbound.app (127.0.0.1:8080 by default).
	AnnotationAppPort = "ctxprop.io/app-port"
	// AnnotationImage replaces the sidecar image for this pod.
	AnnotationImage = "ctxprop.io/image"
	// AnnotationConfigMap names the ConfigMap mounted at /etc/ctxprop (default ctxprop-config).
	AnnotationConfigMap = "ctxprop.io/configmap"
	// AnnotationDataClaim names a PersistentVolumeClaim for the bbolt file instead of an
	// emptyDir, so the store outlives the pod.
	AnnotationDataClaim = "ctxprop.io/data-claim"
	// AnnotationDataVolume names a volume the pod already has (for example one made from a
	// StatefulSet volumeClaimTemplate) to hold the bbolt file; no volume is added.
	AnnotationDataVolume = "ctxprop.io/data-volume"
	// AnnotationSyncKeySecret names the Secret whose key "key" is the fleet key
	// (sync.key_file); it replaces Config.SyncKeySecret for this pod. SyncKeyNone runs the
	// pod without a key.
	AnnotationSyncKeySecret = "ctxprop.io/sync-key-secret"
	// AnnotationSyncKey is written by the injector: the Secret the fleet key comes from, or
	// SyncKeyNone, so that an unkeyed pod shows as one.
	AnnotationSyncKey = "ctxprop.io/sync-key"
	// AnnotationNoProxy adds comma-separated entries to the app containers' NO_PROXY.
	AnnotationNoProxy = "ctxprop.io/no-proxy"
	// Resource annotations replace the sidecar's requests and limits (Kubernetes quantities).
	AnnotationCPURequest    = "ctxprop.io/cpu-request"
	AnnotationCPULimit      = "ctxprop.io/cpu-limit"
	AnnotationMemoryRequest = "ctxprop.io/memory-request"
	AnnotationMemoryLimit   = "ctxprop.io/memory-limit"
	// AnnotationInterception chooses how the pod's traffic reaches the sidecar: InterceptIPTables
	// (redirection rules installed by the init container ctxprop-init; the default) or
	// InterceptHTTPProxy (HTTP_PROXY on the app containers, no extra privileges). Unset: the
	// injector's Config.Interception. The injector writes the mode it chose here.
	AnnotationInterception = "ctxprop.io/interception"
	// AnnotationInterceptionReason is written by the injector when it chose http-proxy for a
	// pod that did not ask for a mode, and says why.
	AnnotationInterceptionReason = "ctxprop.io/interception-reason"
	// Interception settings, comma-separated; they become the CTXPROP_INTERCEPT_* variables of
	// ctxprop-init (the intercept block of config.hcl) and are checked in both modes.
	// AnnotationInboundPorts lists the app ports redirected to the inbound proxy (unset: all).
	AnnotationInboundPorts = "ctxprop.io/inbound-ports"
	// AnnotationExcludeInboundPorts lists ports whose inbound traffic is never redirected.
	AnnotationExcludeInboundPorts = "ctxprop.io/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts lists destination ports the app reaches directly.
	AnnotationExcludeOutboundPorts = "ctxprop.io/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs lists destination CIDRs the app reaches directly.
	AnnotationExcludeOutboundCIDRs = "ctxprop.io/exclude-outbound-cidrs"
	// AnnotationConfigPrefix starts a config override: ctxprop.io/config-<block>-<attr> = value
	// sets the sidecar's environment variable CTXPROP_<BLOCK>_<ATTR>, which overrides that
	// config.hcl attribute (SPEC §9). Dashes become underscores, so nested blocks work too:
	// ctxprop.io/config-store-commit_window → CTXPROP_STORE_COMMIT_WINDOW.
	AnnotationConfigPrefix = "ctxprop.io/config-"

	// LabelPeer marks injected pods; the headless peer Service selects on it.
	LabelPeer = "ctxprop.io/peer"

	StatusInjected = "injected"
	StatusSkipped  = "skipped"
)

// Names and paths of what the injector adds to a pod.
const (
	ContainerName = "ctxprop"
	// InitContainerName runs `sidecar intercept` before the sidecar starts (iptables mode).
	InitContainerName = "ctxprop-init"
	// XtablesVolumeName is an emptyDir at /run in ctxprop-init, where iptables takes its
	// lock (/run/xtables.lock) on an otherwise read-only root file system.
	XtablesVolumeName = "ctxprop-xtables-lock"
	DataVolumeName    = "ctxprop-data"
	ConfigVolumeName  = "ctxprop-config"
	SyncKeyVolume     = "ctxprop-sync-key"
	SyncKeyDir        = "/etc/ctxprop-sync"
	DataDir           = "/var/lib/ctxprop"
	ConfigDir         = "/etc/ctxprop"
	StoreFile         = "ctxprop.db"

	// SyncKeySecretKey is the key of the Secret that holds the fleet key, mounted as the
	// file SyncKeyDir/key.
	SyncKeySecretKey = "key"
	// DefaultSyncKeySecret is the Secret, in each pod's namespace, that keys the fleet
	// unless the webhook or the pod names another.
	DefaultSyncKeySecret = "ctxprop-sync-key"
	// SyncKeyNone in place of a Secret name injects a pod without a fleet key. It is not a
	// usable Secret name here, so that it cannot be mistaken for one.
	SyncKeyNone = "none"

	// Defaults of SPEC §2; a pod's config overrides move the probe and proxy addresses along.
	AdminAddress    = "127.0.0.1:7400"
	OutboundAddress = "127.0.0.1:7402"
	InboundPort     = 7401
	SyncPort        = 7403
	InboundPortName = "ctxprop-in"
	SyncPortName    = "ctxprop-sync"
	// The other listeners of SPEC §2 and §5: the admin API and the transparent outbound
	// listener, which redirected app connections reach.
	AdminPort       = 7400
	OutboundPort    = 7402
	TransparentPort = 7404

	// SidecarUID is the user and group the sidecar runs as; ctxprop-init exempts this uid's
	// traffic from redirection (intercept.proxy_uid), so the sidecar's own calls go out.
	SidecarUID = 65532
)

// Interception is how a pod's traffic reaches the sidecar.
type Interception string

const (
	// InterceptIPTables: ctxprop-init (NET_ADMIN, NET_RAW) redirects the app's outbound TCP to
	// the transparent listener and inbound TCP for the app's ports to the inbound proxy. The
	// app and its Service change nothing.
	InterceptIPTables Interception = "iptables"
	// InterceptHTTPProxy: the app containers get HTTP_PROXY; only clients that honour it are
	// seen outbound, and Services target the sidecar's port ctxprop-in. Needs no privilege,
	// so it is what Pod Security baseline and restricted admit.
	InterceptHTTPProxy Interception = "http-proxy"
)

// ParseInterception accepts the two modes by name.
func ParseInterception(s string) (Interception, error) {
	switch m := Interception(s); m {
	case InterceptIPTables, InterceptHTTPProxy:
		return m, nil
	}
	return "", fmt.Errorf("%q is not an interception mode; %s", s, interceptionWant)
}

var interceptionWant = fmt.Sprintf("want %q (redirection rules, the default) or %q (HTTP_PROXY, for namespaces whose Pod Security level forbids NET_ADMIN)", InterceptIPTables, InterceptHTTPProxy)

// NamespacePolicy is what the injector knows of the pod's namespace. The webhook learns it
// from the path the API server calls: the shipped configuration sends pods of namespaces that
// enforce Pod Security baseline or restricted to MutateNoNetAdminPath.
type NamespacePolicy struct {
	// NoNetAdmin: containers that add NET_ADMIN or NET_RAW are refused in this namespace.
	NoNetAdmin bool
}

// Config is what the injector puts into every pod; annotations adjust it per pod.
type Config struct {
	// Image is the sidecar image. Required.
	Image string
	// ImagePullPolicy of the sidecar; empty leaves it to Kubernetes' default for the tag.
	ImagePullPolicy corev1.PullPolicy
	// Binary is the sidecar executable inside the image, run by the exec probes.
	Binary string
	// ConfigMap holding config.hcl, mounted at /etc/ctxprop as an optional volume.
	ConfigMap string
	// PeerService is the headless Service used for peer discovery in the pod's namespace;
	// empty sets no CTXPROP_SYNC_DNS and no peer label.
	PeerService string
	// SyncKeySecret names the Secret, in each pod's namespace, whose key "key" holds the
	// fleet key: it authenticates and encrypts peer traffic (SPEC §7) and authenticates the
	// context sidecars pass to each other (SPEC §4a). It is mounted at /etc/ctxprop-sync and
	// named in CTXPROP_SYNC_KEY_FILE; while the Secret is missing the pod does not start.
	// SyncKeyNone injects pods without a key. Empty is refused by Validate: a blank value
	// left by a template must not turn authentication off.
	SyncKeySecret string
	// ClusterDomain completes the peer Service's DNS name.
	ClusterDomain string
	// NoProxy is the app containers' NO_PROXY list. Service names must stay out of it: calls
	// to other services have to go through the outbound proxy to carry context (SPEC §4).
	NoProxy []string
	// Resources of the sidecar container.
	Resources corev1.ResourceRequirements
	// Interception is the mode of pods that do not choose one with AnnotationInterception;
	// empty means InterceptIPTables.
	Interception Interception
	// InjectUnannotated treats pods without the inject annotation as opted in; the offline
	// `sidecar inject` sets it, since running it is the opt-in. "false" still opts out.
	InjectUnannotated bool
}

// DefaultConfig returns the injector's defaults.
func DefaultConfig() Config {
	return Config{
		Image:         "ctxprop/sidecar:latest",
		Binary:        "/sidecar",
		ConfigMap:     "ctxprop-config",
		PeerService:   "ctxprop-peers",
		SyncKeySecret: DefaultSyncKeySecret,
		ClusterDomain: "cluster.local",
		NoProxy: []string{
			"localhost", "127.0.0.1", "::1",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
			// Expanded by the kubelet from the service environment of every container.
			"$(KUBERNETES_SERVICE_HOST)",
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("50m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("1"),
				corev1.ResourceMemory: resource.MustParse("256Mi"),
			},
		},
	}
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Image == "":
		return errors.New("k8s config: image is empty; set the sidecar image (-image)")
	case c.Binary == "" || !strings.HasPrefix(c.Binary, "/"):
		return fmt.Errorf("k8s config: binary %q must be an absolute path inside the image", c.Binary)
	case c.ConfigMap == "":
		return errors.New("k8s config: configmap is empty; name the ConfigMap holding config.hcl")
	}
	if c.Interception != "" {
		if _, err := ParseInterception(string(c.Interception)); err != nil {
			return fmt.Errorf("k8s config: interception: %v (-interception)", err)
		}
	}
	if err := checkSyncKeySecret(c.SyncKeySecret); err != nil {
		return fmt.Errorf("k8s config: sync key secret %q: %s (-sync-key-secret)", c.SyncKeySecret, err)
	}
	if errs := validation.IsDNS1123Subdomain(c.ConfigMap); len(errs) > 0 {
		return fmt.Errorf("k8s config: configmap %q: %s", c.ConfigMap, strings.Join(errs, "; "))
	}
	if c.PeerService != "" {
		if errs := validation.IsDNS1035Label(c.PeerService); len(errs) > 0 {
			return fmt.Errorf("k8s config: peer service %q: %s", c.PeerService, strings.Join(errs, "; "))
		}
	}
	return nil
}

// Outcome says what InjectPod did.
type Outcome int

const (
	// NotRequested: the pod has no inject annotation; it was not touched.
	NotRequested Outcome = iota
	// Injected: the sidecar was added.
	Injected
	// AlreadyInjected: the sidecar was there before; at most missing proxy variables of app
	// containers added by a later webhook were filled in.
	AlreadyInjected
	// Skipped: the pod opted out or cannot take the sidecar; Result.Reason says why and the
	// pod carries the reason in its skip-reason annotation.
	Skipped
)

func (o Outcome) String() string {
	switch o {
	case NotRequested:
		return "not requested"
	case Injected:
		return StatusInjected
	case AlreadyInjected:
		return "already injected"
	case Skipped:
		return StatusSkipped
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is the outcome of one InjectPod call.
type Result struct {
	Outcome Outcome
	// Reason is why a pod was skipped; empty otherwise.
	Reason string
	// Interception is the mode of an injected pod.
	Interception Interception
	// Fallback says why an injected pod got InterceptHTTPProxy although the injector's
	// default is InterceptIPTables; empty otherwise.
	Fallback string
	// Warnings are what the pod's author should hear about an injection that went ahead.
	Warnings []string
}

// AnnotationError is a pod annotation the injector cannot use. The webhook denies such a pod
// rather than start it with a sidecar that is not what its author asked for.
type AnnotationError struct {
	Key, Value string
	Problem    string
}

func (e *AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q: %s", e.Key, e.Value, e.Problem)
}

// InjectPod adds the sidecar to a pod or pod template in place. It is idempotent: a pod that
// already has the sidecar container gets no second one. A pod that opted out is left alone
// except for the status and skip-reason annotations. Only an *AnnotationError is returned.
func (c Config) InjectPod(meta *metav1.ObjectMeta, spec *corev1.PodSpec) (Result, error) {
	return c.InjectPodIn(meta, spec, NamespacePolicy{})
}

// noNetAdminProblem is what a pod hears when its namespace refuses ctxprop-init.
var noNetAdminProblem = fmt.Sprintf("the namespace enforces Pod Security baseline or restricted (label pod-security.kubernetes.io/enforce), which refuses the NET_ADMIN and NET_RAW capabilities of the init container %s that installs the redirection rules; set %s: %q (the app's clients must then honour HTTP_PROXY), or label the namespace pod-security.kubernetes.io/enforce=privileged", InitContainerName, AnnotationInterception, InterceptHTTPProxy)

// InjectPodIn is InjectPod for a pod of a namespace with the given policy. A pod that did not
// choose a mode falls back from iptables to http-proxy where the namespace forbids NET_ADMIN,
// and says so in AnnotationInterceptionReason; a pod that asked for iptables there is refused.
func (c Config) InjectPodIn(meta *metav1.ObjectMeta, spec *corev1.PodSpec, ns NamespacePolicy) (Result, error) {
	inject, asked := meta.Annotations[AnnotationInject]
	if !asked && !c.InjectUnannotated {
		return Result{Outcome: NotRequested}, nil
	}
	if asked && inject != "true" {
		reason := fmt.Sprintf("%s is %q", AnnotationInject, inject)
		if inject != "false" {
			reason += `; use "true" or "false"`
		}
		return skip(meta, reason), nil
	}
	if i := containerIndex(spec.InitContainers, ContainerName); i >= 0 {
		if containerIndex(spec.InitContainers, InitContainerName) >= 0 {
			// Injected earlier (by `sidecar inject`, or before the namespace was labelled):
			// Pod Security would refuse it with a message that does not say what to change.
			if ns.NoNetAdmin {
				return Result{}, &AnnotationError{AnnotationInterception, string(InterceptIPTables), noNetAdminProblem + ", and inject the pod again"}
			}
			return Result{Outcome: AlreadyInjected, Interception: InterceptIPTables}, nil
		}
		// Filling in proxy variables lets a pod pass through the webhook again (reinvocation
		// after another webhook added a container) without a second sidecar.
		outbound := envValue(spec.InitContainers[i].Env, "CTXPROP_OUTBOUND_ADDRESS")
		if outbound == "" {
			outbound = OutboundAddress
		}
		env := appEnv(outbound, noProxyFor(c.NoProxy, meta.Annotations))
		for i := range spec.Containers {
			addMissingEnv(&spec.Containers[i], env)
		}
		return Result{Outcome: AlreadyInjected, Interception: InterceptHTTPProxy}, nil
	}
	if containerIndex(spec.Containers, ContainerName) >= 0 {
		return skip(meta, fmt.Sprintf("the pod already has an app container named %q", ContainerName)), nil
	}
	if containerIndex(spec.Containers, InitContainerName) >= 0 || containerIndex(spec.InitContainers, InitContainerName) >= 0 {
		return skip(meta, fmt.Sprintf("the pod already has a container named %q", InitContainerName)), nil
	}
	if spec.HostNetwork {
		return skip(meta, fmt.Sprintf("hostNetwork pods share the node's ports; the sidecar's %d and %d would clash", InboundPort, SyncPort)), nil
	}

	p, err := c.podSettings(meta.Annotations, ns)
	if err != nil {
		return Result{}, err
	}
	c.inject(meta, spec, p)
	res := Result{Outcome: Injected, Interception: p.mode, Fallback: p.fallback}
	if p.mode == InterceptIPTables {
		res.Warnings = sidecarUIDWarnings(spec)
	}
	return res, nil
}

func skip(meta *metav1.ObjectMeta, reason string) Result {
	setAnnotation(meta, AnnotationStatus, StatusSkipped)
	setAnnotation(meta, AnnotationSkipReason, reason)
	return Result{Outcome: Skipped, Reason: reason}
}

// podSettings is the Config adjusted by one pod's annotations.
type podSettings struct {
	image      string
	configMap  string
	dataVolume corev1.Volume // Name == "": mount the volume named by existing
	existing   string
	env        []corev1.EnvVar // sidecar environment, in dependency order
	syncKey    string          // Secret name, or SyncKeyNone
	adminAddr  string
	outbound   string
	resources  corev1.ResourceRequirements
	noProxy    []string

	mode         Interception
	fallback     string          // why mode is http-proxy against the default; empty otherwise
	interceptEnv []corev1.EnvVar // ctxprop-init's environment (iptables mode)
}

func (c Config) podSettings(ann map[string]string, ns NamespacePolicy) (podSettings, error) {
	p := podSettings{
		image:     c.Image,
		configMap: c.ConfigMap,
		syncKey:   c.SyncKeySecret,
		adminAddr: AdminAddress,
		outbound:  OutboundAddress,
		resources: *c.Resources.DeepCopy(),
		noProxy:   noProxyFor(c.NoProxy, ann),
		dataVolume: corev1.Volume{Name: DataVolumeName, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{},
		}},
	}
	if v, ok := ann[AnnotationImage]; ok {
		if v == "" || strings.ContainsAny(v, " \t\n") {
			return p, &AnnotationError{AnnotationImage, v, "not an image reference"}
		}
		p.image = v
	}
	if v, ok := ann[AnnotationConfigMap]; ok {
		if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
			return p, &AnnotationError{AnnotationConfigMap, v, strings.Join(errs, "; ")}
		}
		p.configMap = v
	}
	if v, ok := ann[AnnotationSyncKeySecret]; ok {
		if err := checkSyncKeySecret(v); err != nil {
			return p, &AnnotationError{AnnotationSyncKeySecret, v, err.Error()}
		}
		p.syncKey = v
	}
	claim, hasClaim := ann[AnnotationDataClaim]
	vol, hasVol := ann[AnnotationDataVolume]
	switch {
	case hasClaim && hasVol:
		return p, &AnnotationError{AnnotationDataClaim, claim, "set either it or " + AnnotationDataVolume + ", not both"}
	case hasClaim:
		if errs := validation.IsDNS1123Subdomain(claim); len(errs) > 0 {
			return p, &AnnotationError{AnnotationDataClaim, claim, strings.Join(errs, "; ")}
		}
		p.dataVolume.VolumeSource = corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
		}
	case hasVol:
		if errs := validation.IsDNS1123Label(vol); len(errs) > 0 {
			return p, &AnnotationError{AnnotationDataVolume, vol, strings.Join(errs, "; ")}
		}
		p.dataVolume = corev1.Volume{}
		p.existing = vol
	}
	for _, r := range []struct {
		key  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationCPURequest, &p.resources.Requests, corev1.ResourceCPU},
		{AnnotationCPULimit, &p.resources.Limits, corev1.ResourceCPU},
		{AnnotationMemoryRequest, &p.resources.Requests, corev1.ResourceMemory},
		{AnnotationMemoryLimit, &p.resources.Limits, corev1.ResourceMemory},
	} {
		v, ok := ann[r.key]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return p, &AnnotationError{r.key, v, "not a Kubernetes quantity such as 100m or 128Mi"}
		}
		if *r.list == nil {
			*r.list = corev1.ResourceList{}
		}
		(*r.list)[r.name] = q
	}

	// The sidecar's environment: fixed per-pod settings first, so that $(POD_NAMESPACE) is
	// defined before CTXPROP_SYNC_DNS refers to it, then the pod's overrides, which win.
	env := []corev1.EnvVar{
		{Name: "POD_NAMESPACE", ValueFrom: fieldRef("metadata.namespace")},
		{Name: "CTXPROP_NODE_NAME", ValueFrom: fieldRef("metadata.name")},
		{Name: "CTXPROP_STORE_PATH", Value: DataDir + "/" + StoreFile},
	}
	if c.PeerService != "" {
		env = append(env, corev1.EnvVar{
			Name:  "CTXPROP_SYNC_DNS",
			Value: fmt.Sprintf("%s.$(POD_NAMESPACE).svc.%s", c.PeerService, c.ClusterDomain),
		})
	}
	if v, ok := ann[AnnotationAppPort]; ok {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			return p, &AnnotationError{AnnotationAppPort, v, "not a port number 1-65535"}
		}
		if port == InboundPort || port == SyncPort {
			return p, &AnnotationError{AnnotationAppPort, v, "the sidecar listens on that port"}
		}
		env = setEnv(env, "CTXPROP_INBOUND_APP", net.JoinHostPort("127.0.0.1", v))
	}
	if p.syncKey != SyncKeyNone {
		env = setEnv(env, "CTXPROP_SYNC_KEY_FILE", SyncKeyDir+"/"+SyncKeySecretKey)
	}
	// The Go runtime collects harder as it nears this, before the kernel's OOM killer acts
	// at the container's limit (memory.go).
	if v, ok := goMemLimit(p.resources); ok {
		env = setEnv(env, "GOMEMLIMIT", v)
	}
	mode, fallback, err := c.interception(ann, ns)
	if err != nil {
		return p, err
	}
	p.mode, p.fallback = mode, fallback
	// Checked in both modes: a bad value is refused even where it is not used yet.
	intercept, err := interceptSettings(ann)
	if err != nil {
		return p, err
	}
	overrides := make([]string, 0)
	for k := range ann {
		if strings.HasPrefix(k, AnnotationConfigPrefix) {
			overrides = append(overrides, k)
		}
	}
	sort.Strings(overrides)
	for _, k := range overrides {
		name, err := overrideEnvName(k)
		if err != nil {
			return p, &AnnotationError{k, ann[k], err.Error()}
		}
		if name == envProxyUID {
			return p, &AnnotationError{k, ann[k], fmt.Sprintf("the injector sets it to the sidecar's uid %d, so that the sidecar's own traffic is not redirected back to it", SidecarUID)}
		}
		for _, is := range intercept {
			if is.env == name {
				return p, &AnnotationError{k, ann[k], "set either it or " + is.key + ", not both"}
			}
		}
		// A misspelt override would stop the sidecar at start-up (config refuses unknown
		// CTXPROP_ variables); refusing the pod here says so where the pod is created.
		if ok, block, attr := config.LookupEnv(name); !ok {
			problem := fmt.Sprintf("%s is not a ctxprop setting (%s<block>-<attribute>, as in config.hcl)", name, AnnotationConfigPrefix)
			if block != "" {
				problem = fmt.Sprintf("%s is not a ctxprop setting; did you mean %s%s-%s?", name, AnnotationConfigPrefix, block, attr)
			}
			return p, &AnnotationError{k, ann[k], problem}
		}
		v := ann[k]
		// ctxprop-init reads the same config as the sidecar, so that both agree on the
		// listeners' ports.
		p.interceptEnv = append(p.interceptEnv, corev1.EnvVar{Name: name, Value: v})
		switch name {
		case "CTXPROP_ADMIN_ADDRESS":
			p.adminAddr = v
		case "CTXPROP_OUTBOUND_ADDRESS":
			p.outbound = v
		}
		env = setEnv(env, name, v)
	}
	for _, a := range []struct{ key, addr, optIn string }{
		{AnnotationConfigPrefix + "admin-address", p.adminAddr, "admin-allow_non_loopback"},
		{AnnotationConfigPrefix + "outbound-address", p.outbound, "outbound-allow_non_loopback"},
	} {
		if _, err := loopbackURL(a.addr); err != nil {
			return p, &AnnotationError{a.key, a.addr, err.Error()}
		}
		// The sidecar refuses to start on a non-loopback admin or outbound address without
		// the opt-in (SPEC §4a): say so now, not in a crash loop.
		if host, _, _ := net.SplitHostPort(a.addr); !isLoopbackHost(host) && ann[AnnotationConfigPrefix+a.optIn] != "true" {
			return p, &AnnotationError{a.key, a.addr, fmt.Sprintf("a non-loopback address is reachable from other pods; set %s%s: \"true\" as well if that is meant", AnnotationConfigPrefix, a.optIn)}
		}
	}
	p.env = env
	p.interceptEnv = append(p.interceptEnv, corev1.EnvVar{Name: envProxyUID, Value: strconv.Itoa(SidecarUID)})
	for _, is := range intercept {
		p.interceptEnv = append(p.interceptEnv, corev1.EnvVar{Name: is.env, Value: is.value})
	}
	return p, nil
}

// envProxyUID is intercept.proxy_uid's variable, which the injector owns.
var envProxyUID = config.EnvVar("intercept", "proxy_uid")

// interception is the pod's mode: its annotation, else the injector's default, falling back
// from iptables to http-proxy where the namespace forbids NET_ADMIN unless the pod asked for
// iptables itself, which is then refused.
func (c Config) interception(ann map[string]string, ns NamespacePolicy) (mode Interception, fallback string, err error) {
	mode = c.Interception
	if mode == "" {
		mode = InterceptIPTables
	}
	v, explicit := ann[AnnotationInterception]
	if explicit {
		if mode, err = ParseInterception(v); err != nil {
			return "", "", &AnnotationError{AnnotationInterception, v, "not an interception mode; " + interceptionWant}
		}
	}
	if mode != InterceptIPTables || !ns.NoNetAdmin {
		return mode, "", nil
	}
	if explicit {
		return "", "", &AnnotationError{AnnotationInterception, v, noNetAdminProblem}
	}
	return InterceptHTTPProxy, fmt.Sprintf("the namespace enforces Pod Security baseline or restricted, which refuses the NET_ADMIN capability of %s; HTTP_PROXY instead, so only clients that honour it are seen outbound (%s: %q asks for the rules and is refused here)", InitContainerName, AnnotationInterception, InterceptIPTables), nil
}

// interceptSetting is one comma-list annotation and the ctxprop-init variable it sets.
type interceptSetting struct {
	key, env, value string
}

// interceptSettings checks the interception annotations and returns those the pod sets, in a
// fixed order.
func interceptSettings(ann map[string]string) ([]interceptSetting, error) {
	sidecarPort := map[int]bool{AdminPort: true, InboundPort: true, OutboundPort: true, SyncPort: true, TransparentPort: true}
	var out []interceptSetting
	for _, a := range []struct {
		key, attr string
		check     func(string) (string, error)
	}{
		{AnnotationInboundPorts, "inbound_ports", func(e string) (string, error) {
			n, err := parsePort(e)
			if err == nil && sidecarPort[n] {
				err = fmt.Errorf("%d is a port of the sidecar (%d-%d), never redirected to itself", n, AdminPort, TransparentPort)
			}
			return strconv.Itoa(n), err
		}},
		{AnnotationExcludeInboundPorts, "exclude_inbound_ports", portString},
		{AnnotationExcludeOutboundPorts, "exclude_outbound_ports", portString},
		{AnnotationExcludeOutboundCIDRs, "exclude_outbound_cidrs", func(e string) (string, error) {
			// A lone address is one host, as in intercept.exclude_outbound_cidrs.
			pfx, err := netip.ParsePrefix(e)
			if ip, ipErr := netip.ParseAddr(e); ipErr == nil && ip.Zone() == "" {
				pfx, err = netip.PrefixFrom(ip, ip.BitLen()), nil
			}
			if err != nil {
				return "", fmt.Errorf("%q is not an IP address or CIDR such as 10.0.0.0/8, 169.254.169.254 or fd00::/8", e)
			}
			return pfx.Masked().String(), nil
		}},
	} {
		v, ok := ann[a.key]
		if !ok {
			continue
		}
		var list []string
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			norm, err := a.check(e)
			if err != nil {
				return nil, &AnnotationError{a.key, v, err.Error() + "; want a comma-separated list"}
			}
			list = append(list, norm)
		}
		out = append(out, interceptSetting{a.key, config.EnvVar("intercept", a.attr), strings.Join(list, ",")})
	}
	// sidecar intercept refuses a port in both lists; say so before ctxprop-init fails.
	if in, ex := ann[AnnotationInboundPorts], ann[AnnotationExcludeInboundPorts]; in != "" && ex != "" {
		for _, p := range strings.Split(in, ",") {
			n, _ := strconv.Atoi(strings.TrimSpace(p)) // checked above
			for _, q := range strings.Split(ex, ",") {
				if m, _ := strconv.Atoi(strings.TrimSpace(q)); m == n {
					return nil, &AnnotationError{AnnotationInboundPorts, in, fmt.Sprintf("holds %d, which %s holds too; keep it in one of them", n, AnnotationExcludeInboundPorts)}
				}
			}
		}
	}
	return out, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number 1-65535", s)
	}
	return n, nil
}

func portString(s string) (string, error) {
	n, err := parsePort(s)
	return strconv.Itoa(n), err
}

// isLoopbackHost reports whether a listener on host is reachable from the pod only.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// overrideEnvName maps ctxprop.io/config-store-commit_window to CTXPROP_STORE_COMMIT_WINDOW.
func overrideEnvName(key string) (string, error) {
	rest := strings.TrimPrefix(key, AnnotationConfigPrefix)
	parts := strings.FieldsFunc(rest, func(r rune) bool { return r == '-' || r == '.' })
	if len(parts) < 2 {
		return "", errors.New("name a block and an attribute: " + AnnotationConfigPrefix + "<block>-<attr>, e.g. " + AnnotationConfigPrefix + "inbound-app")
	}
	for _, p := range parts {
		for _, r := range p {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
				return "", fmt.Errorf("block and attribute names are lowercase letters, digits and _, not %q", r)
			}
		}
	}
	return "CTXPROP_" + strings.ToUpper(strings.Join(parts, "_")), nil
}

// loopbackURL turns a listener address into the http URL a process in the pod dials: a
// wildcard host is reached on 127.0.0.1.
func loopbackURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("not host:port: %v", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q is not 1-65535", port)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func (c Config) inject(meta *metav1.ObjectMeta, spec *corev1.PodSpec, p podSettings) {
	dataVolume := p.existing
	if dataVolume == "" {
		dataVolume = DataVolumeName
		// A volume the author already called ctxprop-data is theirs to choose; keep it.
		if volumeIndex(spec.Volumes, DataVolumeName) < 0 {
			spec.Volumes = append(spec.Volumes, p.dataVolume)
		}
	}
	if volumeIndex(spec.Volumes, ConfigVolumeName) < 0 {
		optional := true
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: ConfigVolumeName, VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: p.configMap},
				// Optional: a missing ConfigMap does not hold the pod in ContainerCreating; the
				// sidecar reports the missing file and restarts until the ConfigMap exists
				// and the kubelet fills the volume.
				Optional: &optional,
			},
		}})
	}

	mounts := []corev1.VolumeMount{
		{Name: dataVolume, MountPath: DataDir},
		{Name: ConfigVolumeName, MountPath: ConfigDir, ReadOnly: true},
	}
	if p.syncKey != SyncKeyNone {
		if volumeIndex(spec.Volumes, SyncKeyVolume) < 0 {
			// Not optional: a pod must not join its peers unkeyed because the Secret is
			// missing; it waits in ContainerCreating with a FailedMount event naming the
			// Secret. Listing the key does the same for a Secret without "key", rather than
			// leave the sidecar to find an empty folder.
			spec.Volumes = append(spec.Volumes, corev1.Volume{Name: SyncKeyVolume, VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{
					SecretName: p.syncKey,
					Items:      []corev1.KeyToPath{{Key: SyncKeySecretKey, Path: SyncKeySecretKey}},
				},
			}})
		}
		mounts = append(mounts, corev1.VolumeMount{Name: SyncKeyVolume, MountPath: SyncKeyDir, ReadOnly: true})
	}

	adminURL, _ := loopbackURL(p.adminAddr) // checked in podSettings
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
				Command: []string{c.Binary, "probe", "-url", adminURL + path},
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   2,
			FailureThreshold: failures,
		}
	}
	always := corev1.ContainerRestartPolicyAlways
	yes, no := true, false
	uid := int64(SidecarUID)
	sidecar := corev1.Container{
		Name:            ContainerName,
		Image:           p.image,
		ImagePullPolicy: c.ImagePullPolicy,
		// -config-optional: the ConfigMap volume is optional, and without it the sidecar
		// starts on the defaults and the per-pod environment instead of crash-looping.
		Args: []string{"run", "-config", ConfigDir + "/config.hcl", "-config-optional"},
		Ports: []corev1.ContainerPort{
			{Name: InboundPortName, ContainerPort: InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: SyncPortName, ContainerPort: SyncPort, Protocol: corev1.ProtocolTCP},
		},
		Env:          p.env,
		Resources:    p.resources,
		VolumeMounts: mounts,
		// The kubelet holds the app containers back until this passes: up to 2 minutes for
		// the store to open and the listeners to come up.
		StartupProbe:   probe("/readyz", 1, 120),
		ReadinessProbe: probe("/readyz", 5, 3),
		LivenessProbe:  probe("/healthz", 10, 3),
		RestartPolicy:  &always,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             &yes,
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	// Appended, not prepended: the init containers already there keep their indexes (an
	// admission patch then only adds), and run before the sidecar as they did before. They
	// also run before ctxprop-init, so their traffic is never redirected to a sidecar that is
	// not running yet.
	if p.mode == InterceptIPTables {
		if volumeIndex(spec.Volumes, XtablesVolumeName) < 0 {
			spec.Volumes = append(spec.Volumes, corev1.Volume{Name: XtablesVolumeName, VolumeSource: corev1.VolumeSource{
				EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory},
			}})
		}
		spec.InitContainers = append(spec.InitContainers, c.initContainer(p))
	} else {
		env := appEnv(p.outbound, p.noProxy)
		for i := range spec.Containers {
			addMissingEnv(&spec.Containers[i], env)
		}
	}
	spec.InitContainers = append(spec.InitContainers, sidecar)

	if c.PeerService != "" {
		if meta.Labels == nil {
			meta.Labels = map[string]string{}
		}
		meta.Labels[LabelPeer] = "true"
	}
	setAnnotation(meta, AnnotationStatus, StatusInjected)
	setAnnotation(meta, AnnotationSyncKey, p.syncKey)
	setAnnotation(meta, AnnotationInterception, string(p.mode))
	if p.fallback != "" {
		setAnnotation(meta, AnnotationInterceptionReason, p.fallback)
	}
	if _, ok := meta.Annotations[AnnotationSkipReason]; ok {
		delete(meta.Annotations, AnnotationSkipReason)
	}
}

// interceptArgs run `sidecar intercept` on what the sidecar runs on: the ConfigMap's
// config.hcl when there is one (the volume is optional), then the pod's interception
// annotations and config overrides in its environment, so that both agree on the ports.
var interceptArgs = []string{"intercept", "-config", ConfigDir + "/config.hcl", "-config-optional"}

// initContainer installs the redirection rules in the pod's network namespace and exits. It
// is root with NET_ADMIN and NET_RAW (iptables' raw sockets) and nothing else: every other
// capability dropped, no privilege escalation, a read-only root file system.
func (c Config) initContainer(p podSettings) corev1.Container {
	yes, no := true, false
	root := int64(0)
	return corev1.Container{
		Name:            InitContainerName,
		Image:           p.image,
		ImagePullPolicy: c.ImagePullPolicy,
		Args:            slices.Clone(interceptArgs),
		Env:             p.interceptEnv,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("500m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: ConfigVolumeName, MountPath: ConfigDir, ReadOnly: true},
			{Name: XtablesVolumeName, MountPath: "/run"},
		},
		SecurityContext: &corev1.SecurityContext{
			// Capabilities added to a non-root user do not reach its effective set.
			RunAsUser:                &root,
			RunAsGroup:               &root,
			RunAsNonRoot:             &no,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// sidecarUIDWarnings names the app containers that run as the sidecar's uid: ctxprop-init
// exempts that uid's traffic, so theirs would bypass the sidecar.
func sidecarUIDWarnings(spec *corev1.PodSpec) []string {
	var out []string
	for _, ctr := range spec.Containers {
		var uid *int64
		if spec.SecurityContext != nil {
			uid = spec.SecurityContext.RunAsUser
		}
		if ctr.SecurityContext != nil && ctr.SecurityContext.RunAsUser != nil {
			uid = ctr.SecurityContext.RunAsUser
		}
		if uid != nil && *uid == SidecarUID {
			out = append(out, fmt.Sprintf("container %q runs as uid %d, the sidecar's: its traffic is not intercepted; give it another runAsUser", ctr.Name, SidecarUID))
		}
	}
	return out
}

// checkSyncKeySecret accepts a Secret name or SyncKeyNone.
func checkSyncKeySecret(name string) error {
	switch name {
	case SyncKeyNone:
		return nil
	case "":
		return fmt.Errorf("empty; name the Secret holding the fleet key (default %s), or %q to run without one", DefaultSyncKeySecret, SyncKeyNone)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// noProxyFor is the NO_PROXY list of a pod: the configured one and the pod's additions.
func noProxyFor(base []string, ann map[string]string) []string {
	list := base[:len(base):len(base)] // appends must not write into the shared Config
	for _, e := range strings.Split(ann[AnnotationNoProxy], ",") {
		if e = strings.TrimSpace(e); e != "" {
			list = append(list, e)
		}
	}
	return list
}

// appEnv is the proxy environment of app containers. Both spellings are set: curl and many
// runtimes read only the lowercase one, others only the uppercase one.
func appEnv(outbound string, noProxy []string) []corev1.EnvVar {
	proxyURL, err := loopbackURL(outbound)
	if err != nil {
		proxyURL = "http://" + OutboundAddress
	}
	np := strings.Join(noProxy, ",")
	return []corev1.EnvVar{
		{Name: "HTTP_PROXY", Value: proxyURL},
		{Name: "http_proxy", Value: proxyURL},
		{Name: "NO_PROXY", Value: np},
		{Name: "no_proxy", Value: np},
	}
}

// addMissingEnv appends the variables the container does not set itself: an author's own
// HTTP_PROXY or NO_PROXY wins.
func addMissingEnv(ctr *corev1.Container, env []corev1.EnvVar) {
	for _, e := range env {
		if envIndex(ctr.Env, e.Name) < 0 {
			ctr.Env = append(ctr.Env, e)
		}
	}
}

func setEnv(env []corev1.EnvVar, name, value string) []corev1.EnvVar {
	if i := envIndex(env, name); i >= 0 {
		env[i] = corev1.EnvVar{Name: name, Value: value}
		return env
	}
	return append(env, corev1.EnvVar{Name: name, Value: value})
}

func envValue(env []corev1.EnvVar, name string) string {
	if i := envIndex(env, name); i >= 0 {
		return env[i].Value
	}
	return ""
}

func envIndex(env []corev1.EnvVar, name string) int {
	for i, e := range env {
		if e.Name == name {
			return i
		}
	}
	return -1
}

func containerIndex(cs []corev1.Container, name string) int {
	for i, c := range cs {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func volumeIndex(vs []corev1.Volume, name string) int {
	for i, v := range vs {
		if v.Name == name {
			return i
		}
	}
	return -1
}

func fieldRef(path string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
}

func setAnnotation(meta *metav1.ObjectMeta, key, value string) {
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[key] = value
}
