package k8s

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// checkInjected asserts the pieces of an injected pod that the kubelet and the sidecar rely
// on; the webhook tests run it on what the API server stored.
func checkInjected(t *testing.T, meta *metav1.ObjectMeta, spec *corev1.PodSpec) {
	t.Helper()
	if got, want := meta.Annotations[AnnotationStatus], StatusInjected; got != want {
		t.Errorf("annotation %s = %q, want %q", AnnotationStatus, got, want)
	}
	n := 0
	var sidecar corev1.Container
	for _, c := range spec.InitContainers {
		if c.Name == ContainerName {
			n++
			sidecar = c
		}
	}
	if n != 1 {
		t.Fatalf("%d init containers named %s, want 1", n, ContainerName)
	}
	if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar restartPolicy = %v, want Always (a native sidecar)", sidecar.RestartPolicy)
	}
	if p := sidecar.StartupProbe; p == nil || p.Exec == nil || !strings.HasSuffix(p.Exec.Command[len(p.Exec.Command)-1], "/readyz") {
		t.Errorf("sidecar startupProbe = %+v, want an exec probe of /readyz", p)
	}
	if got, want := strings.Join(sidecar.Args, " "), "run -config /etc/ctxprop/config.hcl -config-optional"; got != want {
		t.Errorf("sidecar args = %q, want %q", got, want)
	}
	if e := sidecar.Env[envIndex(sidecar.Env, "CTXPROP_NODE_NAME")]; e.ValueFrom == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("CTXPROP_NODE_NAME = %+v, want the pod name from the downward API", e)
	}
	if got, want := envValue(sidecar.Env, "CTXPROP_STORE_PATH"), "/var/lib/ctxprop/ctxprop.db"; got != want {
		t.Errorf("CTXPROP_STORE_PATH = %q, want %q", got, want)
	}
	if sidecar.Resources.Requests.Memory().IsZero() || sidecar.Resources.Limits.Memory().IsZero() {
		t.Errorf("sidecar resources = %+v, want memory request and limit", sidecar.Resources)
	}
	mounts := map[string]string{}
	for _, m := range sidecar.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	for _, path := range []string{DataDir, ConfigDir} {
		name, ok := mounts[path]
		if !ok {
			t.Errorf("nothing mounted at %s", path)
			continue
		}
		if volumeIndex(spec.Volumes, name) < 0 && name != DataVolumeName {
			continue // a volumeClaimTemplate's volume, added by the StatefulSet controller
		}
		if volumeIndex(spec.Volumes, name) < 0 {
			t.Errorf("volume %s mounted at %s is missing", name, path)
		}
	}
	checkSyncKey(t, meta, spec, sidecar)
	switch mode := Interception(meta.Annotations[AnnotationInterception]); mode {
	case InterceptIPTables:
		checkInitContainer(t, spec)
		for _, c := range spec.Containers {
			for _, name := range []string{"HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"} {
				if i := envIndex(c.Env, name); i >= 0 {
					t.Errorf("container %s has %s=%q in iptables mode, want no proxy settings", c.Name, name, c.Env[i].Value)
				}
			}
		}
	case InterceptHTTPProxy:
		if i := containerIndex(spec.InitContainers, InitContainerName); i >= 0 {
			t.Errorf("http-proxy pod has the init container %s", InitContainerName)
		}
		for _, c := range spec.Containers {
			if got := envValue(c.Env, "HTTP_PROXY"); got == "" {
				t.Errorf("container %s has no HTTP_PROXY", c.Name)
			}
			if got := envValue(c.Env, "NO_PROXY"); !strings.Contains(got, "127.0.0.1") {
				t.Errorf("container %s NO_PROXY = %q, want loopback in it", c.Name, got)
			}
		}
	default:
		t.Errorf("annotation %s = %q, want %q or %q", AnnotationInterception, mode, InterceptIPTables, InterceptHTTPProxy)
	}
}

// checkInitContainer asserts ctxprop-init of an iptables pod: once, right before the
// sidecar, `sidecar intercept` as root with NET_ADMIN and NET_RAW only, and the sidecar's uid
// exempted from redirection.
func checkInitContainer(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	n, at := 0, -1
	for i, c := range spec.InitContainers {
		if c.Name == InitContainerName {
			n, at = n+1, i
		}
	}
	if n != 1 {
		t.Fatalf("%d init containers named %s, want 1", n, InitContainerName)
	}
	if got, want := at+1, containerIndex(spec.InitContainers, ContainerName); got != want {
		t.Errorf("%s is init container %d, the sidecar %d; want it right before the sidecar", InitContainerName, at, want)
	}
	ic, sidecar := spec.InitContainers[at], spec.InitContainers[at+1]
	if ic.RestartPolicy != nil {
		t.Errorf("%s restartPolicy = %v, want none (it runs to completion before the sidecar)", InitContainerName, *ic.RestartPolicy)
	}
	if got, want := ic.Image, sidecar.Image; got != want {
		t.Errorf("%s image = %q, want the sidecar's %q", InitContainerName, got, want)
	}
	if got, want := strings.Join(ic.Args, " "), "intercept -config /etc/ctxprop/config.hcl -config-optional"; got != want {
		t.Errorf("%s args = %q, want %q", InitContainerName, got, want)
	}
	sc := ic.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatalf("%s securityContext = %+v, want capabilities", InitContainerName, sc)
	}
	if got, want := fmt.Sprint(sc.Capabilities.Add), "[NET_ADMIN NET_RAW]"; got != want {
		t.Errorf("%s adds capabilities %s, want %s", InitContainerName, got, want)
	}
	if got, want := fmt.Sprint(sc.Capabilities.Drop), "[ALL]"; got != want {
		t.Errorf("%s drops capabilities %s, want %s", InitContainerName, got, want)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.RunAsNonRoot == nil || *sc.RunAsNonRoot {
		t.Errorf("%s runAsUser %v runAsNonRoot %v, want 0 and false (capabilities reach root's effective set only)", InitContainerName, sc.RunAsUser, sc.RunAsNonRoot)
	}
	if sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s privileged %v allowPrivilegeEscalation %v, want neither", InitContainerName, sc.Privileged, sc.AllowPrivilegeEscalation)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s root file system is writable", InitContainerName)
	}
	if ssc := sidecar.SecurityContext; ssc == nil || ssc.RunAsUser == nil {
		t.Errorf("sidecar has no runAsUser")
	} else if got, want := envValue(ic.Env, "CTXPROP_INTERCEPT_PROXY_UID"), strconv.FormatInt(*ssc.RunAsUser, 10); got != want {
		t.Errorf("CTXPROP_INTERCEPT_PROXY_UID = %q, want the sidecar's uid %s", got, want)
	}
	mounts := map[string]string{}
	for _, m := range ic.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	if i := volumeIndex(spec.Volumes, mounts["/run"]); i < 0 || spec.Volumes[i].EmptyDir == nil {
		t.Errorf("%s has no emptyDir at /run for the xtables lock", InitContainerName)
	}
	// The sidecar's config, so that both agree on the ports an intercept block moves.
	if i := volumeIndex(spec.Volumes, mounts[ConfigDir]); i < 0 || spec.Volumes[i].ConfigMap == nil {
		t.Errorf("%s does not mount the ConfigMap at %s", InitContainerName, ConfigDir)
	}
}

// checkSyncKey asserts that an injected pod mounts the fleet key its sync-key annotation
// names, or that it says "none" and has no key at all.
func checkSyncKey(t *testing.T, meta *metav1.ObjectMeta, spec *corev1.PodSpec, sidecar corev1.Container) {
	t.Helper()
	secret, ok := meta.Annotations[AnnotationSyncKey]
	if !ok || secret == "" {
		t.Errorf("annotation %s = %q, want the Secret of the fleet key or %q", AnnotationSyncKey, secret, SyncKeyNone)
		return
	}
	vi := volumeIndex(spec.Volumes, SyncKeyVolume)
	keyFile := envValue(sidecar.Env, "CTXPROP_SYNC_KEY_FILE")
	var mount *corev1.VolumeMount
	for i, m := range sidecar.VolumeMounts {
		if m.Name == SyncKeyVolume {
			mount = &sidecar.VolumeMounts[i]
		}
	}
	if secret == SyncKeyNone {
		if vi >= 0 || keyFile != "" || mount != nil {
			t.Errorf("unkeyed pod has key volume %v, CTXPROP_SYNC_KEY_FILE %q, mount %+v; want none of them", vi >= 0, keyFile, mount)
		}
		return
	}
	if vi < 0 {
		t.Fatalf("no volume %s for the fleet key", SyncKeyVolume)
	}
	v := spec.Volumes[vi].Secret
	if v == nil || v.SecretName != secret || v.Optional != nil && *v.Optional {
		t.Errorf("key volume = %+v, want the required Secret %s", spec.Volumes[vi].VolumeSource, secret)
	}
	if v != nil && (len(v.Items) != 1 || v.Items[0].Key != SyncKeySecretKey || v.Items[0].Path != SyncKeySecretKey) {
		t.Errorf("key volume items = %+v, want the Secret's key %q as file %q", v.Items, SyncKeySecretKey, SyncKeySecretKey)
	}
	if mount == nil || mount.MountPath != SyncKeyDir || !mount.ReadOnly {
		t.Errorf("key mount = %+v, want %s read-only at %s", mount, SyncKeyVolume, SyncKeyDir)
	}
	if got, want := keyFile, SyncKeyDir+"/"+SyncKeySecretKey; got != want {
		t.Errorf("CTXPROP_SYNC_KEY_FILE = %q, want %q", got, want)
	}
}

func podWith(ann map[string]string) (*metav1.ObjectMeta, *corev1.PodSpec) {
	return &metav1.ObjectMeta{Name: "p", Annotations: ann},
		&corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}
}

func TestInjectPod_Outcomes(t *testing.T) {
	tests := []struct {
		name       string
		ann        map[string]string
		hostNet    bool
		unannot    bool
		want       Outcome
		wantReason string
	}{
		{name: "annotated", ann: map[string]string{AnnotationInject: "true"}, want: Injected},
		{name: "unannotated", want: NotRequested},
		{name: "unannotated offline", unannot: true, want: Injected},
		{name: "opt out", ann: map[string]string{AnnotationInject: "false"}, want: Skipped, wantReason: `ctxprop.io/inject is "false"`},
		{name: "opt out offline", ann: map[string]string{AnnotationInject: "false"}, unannot: true, want: Skipped, wantReason: `ctxprop.io/inject is "false"`},
		{name: "unclear value", ann: map[string]string{AnnotationInject: "yes"}, want: Skipped, wantReason: `use "true" or "false"`},
		{name: "host network", ann: map[string]string{AnnotationInject: "true"}, hostNet: true, want: Skipped, wantReason: "hostNetwork"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.InjectUnannotated = tt.unannot
			meta, spec := podWith(tt.ann)
			spec.HostNetwork = tt.hostNet
			res, err := cfg.InjectPod(meta, spec)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.Outcome, tt.want; got != want {
				t.Fatalf("outcome = %v, want %v", got, want)
			}
			if !strings.Contains(res.Reason, tt.wantReason) {
				t.Errorf("reason = %q, want it to contain %q", res.Reason, tt.wantReason)
			}
			switch tt.want {
			case Injected:
				checkInjected(t, meta, spec)
			case Skipped:
				if got, want := meta.Annotations[AnnotationSkipReason], res.Reason; got != want {
					t.Errorf("skip-reason annotation = %q, want %q", got, want)
				}
				if got, want := meta.Annotations[AnnotationStatus], StatusSkipped; got != want {
					t.Errorf("status annotation = %q, want %q", got, want)
				}
				fallthrough
			case NotRequested:
				if len(spec.InitContainers) != 0 || len(spec.Containers[0].Env) != 0 {
					t.Errorf("pod changed: %+v", spec)
				}
			}
		})
	}
}

func TestInjectPod_Annotations(t *testing.T) {
	tests := []struct {
		name  string
		ann   map[string]string
		check func(t *testing.T, sidecar corev1.Container, spec *corev1.PodSpec)
	}{
		{
			name: "app port",
			ann:  map[string]string{AnnotationAppPort: "9000"},
			check: func(t *testing.T, s corev1.Container, _ *corev1.PodSpec) {
				if got, want := envValue(s.Env, "CTXPROP_INBOUND_APP"), "127.0.0.1:9000"; got != want {
					t.Errorf("CTXPROP_INBOUND_APP = %q, want %q", got, want)
				}
			},
		},
		{
			name: "config overrides",
			ann: map[string]string{
				AnnotationConfigPrefix + "store-commit_window": "50ms",
				AnnotationConfigPrefix + "inbound-app":         "127.0.0.1:7000",
				AnnotationAppPort:                              "9000", // the explicit override wins
			},
			check: func(t *testing.T, s corev1.Container, _ *corev1.PodSpec) {
				if got, want := envValue(s.Env, "CTXPROP_STORE_COMMIT_WINDOW"), "50ms"; got != want {
					t.Errorf("CTXPROP_STORE_COMMIT_WINDOW = %q, want %q", got, want)
				}
				if got, want := envValue(s.Env, "CTXPROP_INBOUND_APP"), "127.0.0.1:7000"; got != want {
					t.Errorf("CTXPROP_INBOUND_APP = %q, want %q", got, want)
				}
			},
		},
		{
			name: "admin and outbound addresses move probes and proxy",
			ann: map[string]string{
				AnnotationInterception:                                 "http-proxy",
				AnnotationConfigPrefix + "admin-address":               "127.0.0.1:17400",
				AnnotationConfigPrefix + "outbound-address":            "0.0.0.0:17402",
				AnnotationConfigPrefix + "outbound-allow_non_loopback": "true",
			},
			check: func(t *testing.T, s corev1.Container, spec *corev1.PodSpec) {
				if got, want := s.StartupProbe.Exec.Command[3], "http://127.0.0.1:17400/readyz"; got != want {
					t.Errorf("probe url = %q, want %q", got, want)
				}
				if got, want := envValue(spec.Containers[0].Env, "HTTP_PROXY"), "http://127.0.0.1:17402"; got != want {
					t.Errorf("HTTP_PROXY = %q, want %q", got, want)
				}
			},
		},
		{
			name: "sync key secret",
			ann:  map[string]string{AnnotationSyncKeySecret: "peers-key"},
			check: func(t *testing.T, s corev1.Container, spec *corev1.PodSpec) {
				if got, want := envValue(s.Env, "CTXPROP_SYNC_KEY_FILE"), "/etc/ctxprop-sync/key"; got != want {
					t.Errorf("CTXPROP_SYNC_KEY_FILE = %q, want %q", got, want)
				}
				v := spec.Volumes[volumeIndex(spec.Volumes, SyncKeyVolume)]
				if v.Secret == nil || v.Secret.SecretName != "peers-key" || v.Secret.Optional != nil {
					t.Errorf("key volume = %+v, want the required Secret peers-key", v.VolumeSource)
				}
				if got, want := s.VolumeMounts[len(s.VolumeMounts)-1].MountPath, SyncKeyDir; got != want {
					t.Errorf("last mount at %q, want %q", got, want)
				}
			},
		},
		{
			name: "data claim",
			ann:  map[string]string{AnnotationDataClaim: "state"},
			check: func(t *testing.T, _ corev1.Container, spec *corev1.PodSpec) {
				v := spec.Volumes[volumeIndex(spec.Volumes, DataVolumeName)]
				if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "state" {
					t.Errorf("data volume = %+v, want the claim state", v.VolumeSource)
				}
			},
		},
		{
			name: "data volume of the pod",
			ann:  map[string]string{AnnotationDataVolume: "state"},
			check: func(t *testing.T, s corev1.Container, spec *corev1.PodSpec) {
				if volumeIndex(spec.Volumes, DataVolumeName) >= 0 {
					t.Errorf("a %s volume was added: %+v", DataVolumeName, spec.Volumes)
				}
				if got, want := s.VolumeMounts[0].Name, "state"; got != want {
					t.Errorf("data mount = %q, want %q", got, want)
				}
			},
		},
		{
			name: "resources, image, no-proxy, configmap",
			ann: map[string]string{
				AnnotationInterception:  "http-proxy",
				AnnotationCPURequest:    "10m",
				AnnotationMemoryLimit:   "1Gi",
				AnnotationImage:         "registry.example/ctxprop:2",
				AnnotationNoProxy:       " .corp ,, metadata ",
				AnnotationConfigMap:     "orders-ctxprop",
				AnnotationMemoryRequest: "32Mi",
			},
			check: func(t *testing.T, s corev1.Container, spec *corev1.PodSpec) {
				if got, want := s.Resources.Requests.Cpu().String(), "10m"; got != want {
					t.Errorf("cpu request = %s, want %s", got, want)
				}
				if got, want := s.Resources.Limits.Memory().String(), "1Gi"; got != want {
					t.Errorf("memory limit = %s, want %s", got, want)
				}
				if got, want := s.Image, "registry.example/ctxprop:2"; got != want {
					t.Errorf("image = %q, want %q", got, want)
				}
				if got := envValue(spec.Containers[0].Env, "no_proxy"); !strings.HasSuffix(got, ",$(KUBERNETES_SERVICE_HOST),.corp,metadata") {
					t.Errorf("no_proxy = %q, want the additions at the end", got)
				}
				cm := spec.Volumes[volumeIndex(spec.Volumes, ConfigVolumeName)].ConfigMap
				if cm.Name != "orders-ctxprop" || cm.Optional == nil || !*cm.Optional {
					t.Errorf("config volume = %+v, want optional orders-ctxprop", cm)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ann := map[string]string{AnnotationInject: "true"}
			for k, v := range tt.ann {
				ann[k] = v
			}
			meta, spec := podWith(ann)
			res, err := DefaultConfig().InjectPod(meta, spec)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != Injected {
				t.Fatalf("outcome = %v", res.Outcome)
			}
			checkInjected(t, meta, spec)
			tt.check(t, spec.InitContainers[containerIndex(spec.InitContainers, ContainerName)], spec)
		})
	}
}

func TestInjectPod_BadAnnotations(t *testing.T) {
	tests := []struct{ key, value, want string }{
		{AnnotationAppPort, "http", "not a port number"},
		{AnnotationAppPort, "70000", "not a port number"},
		{AnnotationAppPort, "7401", "the sidecar listens on that port"},
		{AnnotationCPULimit, "lots", "not a Kubernetes quantity"},
		{AnnotationConfigPrefix + "inbound", "x", "name a block and an attribute"},
		{AnnotationConfigPrefix + "Inbound-App", "x", "lowercase"},
		{AnnotationConfigPrefix + "admin-address", "localhost", "not host:port"},
		{AnnotationConfigPrefix + "sync-gossip_interval", "200ms", "CTXPROP_SYNC_GOSSIP_INTERVAL is not a ctxprop setting; did you mean ctxprop.io/config-sync-interval?"},
		{AnnotationConfigPrefix + "zzz-qqq", "1", "CTXPROP_ZZZ_QQQ is not a ctxprop setting (ctxprop.io/config-<block>-<attribute>"},
		{AnnotationConfigPrefix + "outbound-address", "0.0.0.0:7402", "set ctxprop.io/config-outbound-allow_non_loopback: \"true\""},
		{AnnotationConfigPrefix + "admin-address", "10.0.0.5:7400", "set ctxprop.io/config-admin-allow_non_loopback: \"true\""},
		{AnnotationDataClaim, "Bad_Name", "lower case"},
		{AnnotationImage, "", "not an image reference"},
		{AnnotationSyncKeySecret, "a/b", "lower case"},
		{AnnotationSyncKeySecret, "", `or "none" to run without one`},
		{AnnotationSyncKeySecret, "None", "lower case"},
		{AnnotationInterception, "nftables", `not an interception mode; want "iptables"`},
		{AnnotationInterception, "", `or "http-proxy"`},
		{AnnotationInboundPorts, "http", `"http" is not a port number 1-65535; want a comma-separated list`},
		{AnnotationInboundPorts, "8080,7401", "7401 is a port of the sidecar"},
		{AnnotationInboundPorts, "7403", "7403 is a port of the sidecar"},
		{AnnotationExcludeInboundPorts, "0", `"0" is not a port number`},
		{AnnotationExcludeOutboundPorts, "5432 6379", `"5432 6379" is not a port number`},
		{AnnotationExcludeOutboundPorts, "8000-8080", `"8000-8080" is not a port number`},
		{AnnotationExcludeOutboundCIDRs, "10.0.0.0/8,10.0.0.0/33", `"10.0.0.0/33" is not an IP address or CIDR such as 10.0.0.0/8`},
		{AnnotationExcludeOutboundCIDRs, "metadata.internal", "not an IP address or CIDR"},
		{AnnotationExcludeOutboundCIDRs, "fe80::1%eth0", "not an IP address or CIDR"},
		{AnnotationConfigPrefix + "intercept-proxy_uid", "0", "the injector sets it to the sidecar's uid 65532"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			meta, spec := podWith(map[string]string{AnnotationInject: "true", tt.key: tt.value})
			before := spec.DeepCopy()
			_, err := DefaultConfig().InjectPod(meta, spec)
			var ae *AnnotationError
			if !errors.As(err, &ae) || ae.Key != tt.key || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want an AnnotationError for %s containing %q", err, tt.key, tt.want)
			}
			if !reflect.DeepEqual(spec, before) {
				t.Errorf("pod changed despite the error")
			}
		})
	}
}

// TestInjectPod_SyncKey: a keyed fleet is the default, and running without a key takes an
// explicit "none" from the pod or the injector, which the pod then shows.
func TestInjectPod_SyncKey(t *testing.T) {
	tests := []struct {
		name   string
		config string // Config.SyncKeySecret; empty: the default
		ann    string // the pod's sync-key-secret annotation; empty: none set
		want   string // the Secret mounted, or SyncKeyNone
	}{
		{name: "default", want: DefaultSyncKeySecret},
		{name: "pod names a secret", ann: "orders-key", want: "orders-key"},
		{name: "injector names a secret", config: "fleet-key", want: "fleet-key"},
		{name: "pod opts out", ann: SyncKeyNone, want: SyncKeyNone},
		{name: "injector opts out", config: SyncKeyNone, want: SyncKeyNone},
		{name: "pod opts in under an unkeyed injector", config: SyncKeyNone, ann: "orders-key", want: "orders-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.config != "" {
				cfg.SyncKeySecret = tt.config
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			ann := map[string]string{AnnotationInject: "true"}
			if tt.ann != "" {
				ann[AnnotationSyncKeySecret] = tt.ann
			}
			meta, spec := podWith(ann)
			if _, err := cfg.InjectPod(meta, spec); err != nil {
				t.Fatal(err)
			}
			if got, want := meta.Annotations[AnnotationSyncKey], tt.want; got != want {
				t.Errorf("annotation %s = %q, want %q", AnnotationSyncKey, got, want)
			}
			checkInjected(t, meta, spec) // checks volume, mount and variable against the annotation
			once := spec.DeepCopy()
			res, err := cfg.InjectPod(meta, spec)
			if err != nil || res.Outcome != AlreadyInjected {
				t.Fatalf("second InjectPod = %v, %v; want already injected", res.Outcome, err)
			}
			if !reflect.DeepEqual(spec, once) {
				t.Errorf("second injection changed the pod")
			}
		})
	}
}

func TestInjectPod_Idempotent(t *testing.T) {
	for _, mode := range []Interception{InterceptIPTables, InterceptHTTPProxy} {
		t.Run(string(mode), func(t *testing.T) {
			meta, spec := podWith(map[string]string{AnnotationInject: "true", AnnotationNoProxy: ".corp", AnnotationInterception: string(mode)})
			cfg := DefaultConfig()
			if _, err := cfg.InjectPod(meta, spec); err != nil {
				t.Fatal(err)
			}
			once := spec.DeepCopy()
			res, err := cfg.InjectPod(meta, spec)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.Outcome, AlreadyInjected; got != want {
				t.Errorf("outcome = %v, want %v", got, want)
			}
			if got, want := res.Interception, mode; got != want {
				t.Errorf("interception = %q, want %q", got, want)
			}
			if !reflect.DeepEqual(spec, once) {
				t.Errorf("second injection changed the pod")
			}

			// A container added after the injection (by a later webhook) gets the proxy
			// variables when the pod comes back in http-proxy mode, none in iptables mode
			// (checkInjected checks both), and still no second sidecar.
			spec.Containers = append(spec.Containers, corev1.Container{Name: "late", Image: "late"})
			if _, err := cfg.InjectPod(meta, spec); err != nil {
				t.Fatal(err)
			}
			checkInjected(t, meta, spec)
			if got, want := envValue(spec.Containers[1].Env, "NO_PROXY"), envValue(spec.Containers[0].Env, "NO_PROXY"); got != want {
				t.Errorf("late container NO_PROXY = %q, want %q", got, want)
			}
		})
	}
}

func TestInjectPod_KeepsAuthorsEnv(t *testing.T) {
	meta, spec := podWith(map[string]string{AnnotationInject: "true", AnnotationInterception: "http-proxy"})
	spec.Containers[0].Env = []corev1.EnvVar{{Name: "HTTP_PROXY", Value: "http://corp-proxy:3128"}}
	if _, err := DefaultConfig().InjectPod(meta, spec); err != nil {
		t.Fatal(err)
	}
	if got, want := envValue(spec.Containers[0].Env, "HTTP_PROXY"), "http://corp-proxy:3128"; got != want {
		t.Errorf("HTTP_PROXY = %q, want the author's %q", got, want)
	}
	if got, want := envIndex(spec.Containers[0].Env, "http_proxy") >= 0, true; got != want {
		t.Errorf("http_proxy set = %v, want %v", got, want)
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"default", func(*Config) {}, ""},
		{"no image", func(c *Config) { c.Image = "" }, "image is empty"},
		{"relative binary", func(c *Config) { c.Binary = "sidecar" }, "absolute path"},
		{"bad configmap", func(c *Config) { c.ConfigMap = "A B" }, "configmap"},
		{"bad peer service", func(c *Config) { c.PeerService = "1peers" }, "peer service"},
		{"bad sync key secret", func(c *Config) { c.SyncKeySecret = "Key" }, "sync key secret"},
		{"empty sync key secret", func(c *Config) { c.SyncKeySecret = "" }, `or "none" to run without one (-sync-key-secret)`},
		{"no sync key", func(c *Config) { c.SyncKeySecret = SyncKeyNone }, ""},
		{"no peer service", func(c *Config) { c.PeerService = "" }, ""},
		{"http-proxy", func(c *Config) { c.Interception = InterceptHTTPProxy }, ""},
		{"unknown interception", func(c *Config) { c.Interception = "nft" }, `interception: "nft" is not an interception mode; want "iptables"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestInjectPod_Interception: the mode a pod gets from its annotation, the injector's default
// and its namespace's policy, the annotation that records it, and what ctxprop-init is told.
func TestInjectPod_Interception(t *testing.T) {
	tests := []struct {
		name         string
		def          Interception // Config.Interception
		ann          map[string]string
		noNetAdmin   bool
		want         Interception
		wantFallback bool
		wantEnv      []string // ctxprop-init's environment, NAME=value, in order
	}{
		{name: "default", want: InterceptIPTables, wantEnv: []string{"CTXPROP_INTERCEPT_PROXY_UID=65532"}},
		{name: "pod asks for http-proxy", ann: map[string]string{AnnotationInterception: "http-proxy"}, want: InterceptHTTPProxy},
		{name: "injector default http-proxy", def: InterceptHTTPProxy, want: InterceptHTTPProxy},
		{name: "pod asks for iptables under an http-proxy injector", def: InterceptHTTPProxy, ann: map[string]string{AnnotationInterception: "iptables"}, want: InterceptIPTables,
			wantEnv: []string{"CTXPROP_INTERCEPT_PROXY_UID=65532"}},
		{
			name: "interception annotations and config overrides",
			ann: map[string]string{
				AnnotationInboundPorts:                     " 8080 , 8443,",
				AnnotationExcludeInboundPorts:              "9090",
				AnnotationExcludeOutboundPorts:             "5432,6379",
				AnnotationExcludeOutboundCIDRs:             "169.254.169.254, 10.96.0.1/12,fd00::/8",
				AnnotationConfigPrefix + "inbound-address": "0.0.0.0:17401",
			},
			want: InterceptIPTables,
			wantEnv: []string{
				"CTXPROP_INBOUND_ADDRESS=0.0.0.0:17401", // ctxprop-init redirects to the port the sidecar uses
				"CTXPROP_INTERCEPT_PROXY_UID=65532",
				"CTXPROP_INTERCEPT_INBOUND_PORTS=8080,8443",
				"CTXPROP_INTERCEPT_EXCLUDE_INBOUND_PORTS=9090",
				"CTXPROP_INTERCEPT_EXCLUDE_OUTBOUND_PORTS=5432,6379",
				"CTXPROP_INTERCEPT_EXCLUDE_OUTBOUND_CIDRS=169.254.169.254/32,10.96.0.0/12,fd00::/8",
			},
		},
		{name: "empty list", ann: map[string]string{AnnotationExcludeOutboundPorts: ""}, want: InterceptIPTables,
			wantEnv: []string{"CTXPROP_INTERCEPT_PROXY_UID=65532", "CTXPROP_INTERCEPT_EXCLUDE_OUTBOUND_PORTS="}},
		{name: "no NET_ADMIN: falls back", noNetAdmin: true, want: InterceptHTTPProxy, wantFallback: true},
		{name: "no NET_ADMIN: pod asks for http-proxy", noNetAdmin: true, ann: map[string]string{AnnotationInterception: "http-proxy"}, want: InterceptHTTPProxy},
		{name: "no NET_ADMIN: injector default http-proxy", noNetAdmin: true, def: InterceptHTTPProxy, want: InterceptHTTPProxy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Interception = tt.def
			ann := map[string]string{AnnotationInject: "true"}
			for k, v := range tt.ann {
				ann[k] = v
			}
			meta, spec := podWith(ann)
			res, err := cfg.InjectPodIn(meta, spec, NamespacePolicy{NoNetAdmin: tt.noNetAdmin})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.Interception, tt.want; got != want {
				t.Errorf("interception = %q, want %q", got, want)
			}
			if got, want := meta.Annotations[AnnotationInterception], string(tt.want); got != want {
				t.Errorf("annotation %s = %q, want %q", AnnotationInterception, got, want)
			}
			checkInjected(t, meta, spec)
			reason, hasReason := meta.Annotations[AnnotationInterceptionReason]
			if hasReason != tt.wantFallback || res.Fallback != reason {
				t.Errorf("fallback %q, annotation %s %q (set %v); want set %v and the same", res.Fallback, AnnotationInterceptionReason, reason, hasReason, tt.wantFallback)
			}
			if tt.wantFallback && !strings.Contains(reason, "Pod Security") || tt.wantFallback && !strings.Contains(reason, AnnotationInterception) {
				t.Errorf("fallback reason %q, want it to name Pod Security and %s", reason, AnnotationInterception)
			}
			if tt.want != InterceptIPTables {
				return
			}
			ic := spec.InitContainers[containerIndex(spec.InitContainers, InitContainerName)]
			var env []string
			for _, e := range ic.Env {
				env = append(env, e.Name+"="+e.Value)
			}
			if got, want := strings.Join(env, "\n"), strings.Join(tt.wantEnv, "\n"); got != want {
				t.Errorf("%s environment:\n%s\nwant:\n%s", InitContainerName, got, want)
			}
		})
	}
}

// TestInjectPod_InterceptionRefused: where the namespace forbids NET_ADMIN, a pod that asked
// for iptables, or was injected with ctxprop-init before, is refused with the annotation to
// set; an interception list set twice (annotation and config override) is refused too.
func TestInjectPod_InterceptionRefused(t *testing.T) {
	noNetAdmin := NamespacePolicy{NoNetAdmin: true}
	t.Run("pod asks for iptables", func(t *testing.T) {
		meta, spec := podWith(map[string]string{AnnotationInject: "true", AnnotationInterception: "iptables"})
		_, err := DefaultConfig().InjectPodIn(meta, spec, noNetAdmin)
		var ae *AnnotationError
		if !errors.As(err, &ae) || ae.Key != AnnotationInterception {
			t.Fatalf("err = %v, want an AnnotationError for %s", err, AnnotationInterception)
		}
		for _, want := range []string{"Pod Security baseline or restricted", "NET_ADMIN", InitContainerName, `ctxprop.io/interception: "http-proxy"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to contain %q", err, want)
			}
		}
		if len(spec.InitContainers) != 0 {
			t.Errorf("refused pod was changed")
		}
	})
	t.Run("injected with ctxprop-init before", func(t *testing.T) {
		meta, spec := podWith(map[string]string{AnnotationInject: "true"})
		if _, err := DefaultConfig().InjectPod(meta, spec); err != nil {
			t.Fatal(err)
		}
		_, err := DefaultConfig().InjectPodIn(meta, spec, noNetAdmin)
		if err == nil || !strings.Contains(err.Error(), `ctxprop.io/interception: "http-proxy"`) || !strings.Contains(err.Error(), "inject the pod again") {
			t.Fatalf("err = %v, want a refusal that says to inject again with http-proxy", err)
		}
	})
	t.Run("injected with http-proxy before", func(t *testing.T) {
		meta, spec := podWith(map[string]string{AnnotationInject: "true", AnnotationInterception: "http-proxy"})
		if _, err := DefaultConfig().InjectPod(meta, spec); err != nil {
			t.Fatal(err)
		}
		res, err := DefaultConfig().InjectPodIn(meta, spec, noNetAdmin)
		if err != nil || res.Outcome != AlreadyInjected {
			t.Fatalf("InjectPodIn = %v, %v; want already injected", res.Outcome, err)
		}
	})
	t.Run("port included and excluded", func(t *testing.T) {
		meta, spec := podWith(map[string]string{
			AnnotationInject:              "true",
			AnnotationInboundPorts:        "8080, 9090",
			AnnotationExcludeInboundPorts: "9090",
		})
		_, err := DefaultConfig().InjectPod(meta, spec)
		var ae *AnnotationError
		if !errors.As(err, &ae) || ae.Key != AnnotationInboundPorts || !strings.Contains(err.Error(), "holds 9090, which "+AnnotationExcludeInboundPorts+" holds too") {
			t.Fatalf("err = %v, want a refusal naming both annotations", err)
		}
	})
	t.Run("list set twice", func(t *testing.T) {
		meta, spec := podWith(map[string]string{
			AnnotationInject:               "true",
			AnnotationExcludeOutboundPorts: "5432",
			AnnotationConfigPrefix + "intercept-exclude_outbound_ports": "6379",
		})
		_, err := DefaultConfig().InjectPod(meta, spec)
		var ae *AnnotationError
		if !errors.As(err, &ae) || ae.Key != AnnotationConfigPrefix+"intercept-exclude_outbound_ports" || !strings.Contains(err.Error(), "set either it or "+AnnotationExcludeOutboundPorts) {
			t.Fatalf("err = %v, want a refusal naming both annotations", err)
		}
	})
}

// TestInjectPod_InitContainerOrder: the pod's own init containers run before ctxprop-init,
// so their traffic is never redirected to a sidecar that has not started; ctxprop-init runs
// right before the sidecar.
func TestInjectPod_InitContainerOrder(t *testing.T) {
	meta, spec := podWith(map[string]string{AnnotationInject: "true"})
	spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "app"}, {Name: "fetch", Image: "app"}}
	if _, err := DefaultConfig().InjectPod(meta, spec); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range spec.InitContainers {
		names = append(names, c.Name)
	}
	if got, want := strings.Join(names, " "), "migrate fetch ctxprop-init ctxprop"; got != want {
		t.Errorf("init containers %q, want %q", got, want)
	}
	checkInjected(t, meta, spec)
}

// TestInjectPod_SidecarUIDWarning: an app container running as the sidecar's uid is
// exempted from redirection with it; the injection goes ahead and says so.
func TestInjectPod_SidecarUIDWarning(t *testing.T) {
	uid, other := int64(SidecarUID), int64(1000)
	tests := []struct {
		name       string
		pod, ctr   *int64
		mode       string
		wantWarned bool
	}{
		{name: "container", ctr: &uid, mode: "iptables", wantWarned: true},
		{name: "pod", pod: &uid, mode: "iptables", wantWarned: true},
		{name: "container overrides pod", pod: &uid, ctr: &other, mode: "iptables"},
		{name: "http-proxy mode", ctr: &uid, mode: "http-proxy"},
		{name: "other uid", ctr: &other, mode: "iptables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta, spec := podWith(map[string]string{AnnotationInject: "true", AnnotationInterception: tt.mode})
			if tt.pod != nil {
				spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: tt.pod}
			}
			if tt.ctr != nil {
				spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: tt.ctr}
			}
			res, err := DefaultConfig().InjectPod(meta, spec)
			if err != nil {
				t.Fatal(err)
			}
			warned := len(res.Warnings) == 1 && strings.Contains(res.Warnings[0], `container "app" runs as uid 65532`)
			if warned != tt.wantWarned || !tt.wantWarned && len(res.Warnings) > 0 {
				t.Errorf("warnings %q, want warned %v", res.Warnings, tt.wantWarned)
			}
		})
	}
}
