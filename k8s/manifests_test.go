package k8s

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ctxprop/ctxprop/config"
	peersync "github.com/ctxprop/ctxprop/sync"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// readManifests returns the objects of the YAML files, in file and document order.
func readManifests(t *testing.T, files ...string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var obj unstructured.Unstructured
			if err := yaml.UnmarshalStrict(doc, &obj.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(obj.Object) > 0 {
				objs = append(objs, &obj)
			}
		}
	}
	return objs
}

// syncKeyCommand is the documented step that creates a namespace's fleet key.
var syncKeyCommand = regexp.MustCompile(`kubectl -n (\S+) create secret generic (\S+) --from-literal=([^=]+)="\$\((.+)\)"`)

// syncKeyStep returns the Secret name, the key and the shell command generating the value of
// the first fleet-key step in text.
func syncKeyStep(t *testing.T, file string) (name, key, gen string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := syncKeyCommand.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("%s does not say how to create the fleet key (no line matching %s)", file, syncKeyCommand)
	}
	return m[2], m[3], m[4]
}

// TestManifests_SyncKeyStep: the namespace manifests and the README give the one command that
// creates the Secret the injector mounts by default, it makes a key the sidecar accepts, and
// no key is shipped in the manifests.
func TestManifests_SyncKeyStep(t *testing.T) {
	config := filepath.Join("manifests", "namespace", "ctxprop-config.yaml")
	name, key, gen := syncKeyStep(t, config)
	if name != DefaultSyncKeySecret || key != SyncKeySecretKey {
		t.Errorf("%s creates Secret %s key %s; the injector mounts %s key %s", config, name, key, DefaultSyncKeySecret, SyncKeySecretKey)
	}
	readme := filepath.Join("..", "README.md")
	if rn, rk, rg := syncKeyStep(t, readme); rn != name || rk != key || rg != gen {
		t.Errorf("README creates Secret %s key %s from $(%s), the manifests %s key %s from $(%s)", rn, rk, rg, name, key, gen)
	}

	out, err := exec.Command("sh", "-c", gen).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", gen, err)
	}
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := peersync.LoadKeyFile(file)
	if err != nil {
		t.Fatalf("the documented command makes a key the sidecar refuses: %v", err)
	}
	if got, want := len(keys[0]), 32; got != want {
		t.Errorf("documented key is %d bytes, want %d (AES-256)", got, want)
	}

	dir := filepath.Join("manifests", "namespace")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	for _, obj := range readManifests(t, files...) {
		if obj.GetKind() == "Secret" {
			t.Errorf("%s ships Secret %s: a key in git is everybody's key; document its creation instead", dir, obj.GetName())
		}
	}
}

// TestAPIServer_Manifests creates every object of k8s/manifests in the API server, with strict
// field validation, so a typo or an unknown field fails here rather than at install.
func TestAPIServer_Manifests(t *testing.T) {
	c := apiServerClient(t)
	ns := testNamespace(t, c)
	ctx := t.Context()

	create := func(t *testing.T, obj *unstructured.Unstructured) {
		t.Helper()
		if err := c.Create(ctx, obj, client.FieldValidation("Strict")); err != nil {
			t.Fatalf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
		t.Cleanup(func() { c.Delete(context.Background(), obj) })
	}

	// The injector's own objects name their namespace; create the Namespace first.
	webhookObjs := readManifests(t, filepath.Join("manifests", "webhook.yaml"))
	kinds := map[string]bool{}
	for _, obj := range webhookObjs {
		kinds[obj.GetKind()] = true
		create(t, obj)
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "Deployment", "Service", "MutatingWebhookConfiguration"} {
		if !kinds[k] {
			t.Errorf("webhook.yaml has no %s", k)
		}
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: "ctxprop-injector"}, &mwc); err != nil {
		t.Fatal(err)
	}
	if got, want := *mwc.Webhooks[0].FailurePolicy, admissionregistrationv1.Ignore; got != want {
		t.Errorf("failurePolicy = %s, want %s as documented", got, want)
	}
	if got, want := len(mwc.Webhooks), 2; got != want {
		t.Fatalf("%d webhooks, want %d: one for namespaces that admit NET_ADMIN, one for those that do not", got, want)
	}
	for i, want := range []string{MutatePath, MutateNoNetAdminPath} {
		if got := mwc.Webhooks[i].ClientConfig.Service.Path; got == nil || *got != want {
			t.Errorf("webhook %d service path = %v, want %s", i, got, want)
		}
	}
	// Nothing serves it here; keep it from slowing down the pod creations below.
	if err := c.Delete(ctx, &mwc); err != nil {
		t.Fatal(err)
	}

	// The per-namespace objects and the example app go into any namespace.
	appObjs := readManifests(t,
		filepath.Join("manifests", "namespace", "ctxprop-config.yaml"),
		filepath.Join("manifests", "namespace", "ctxprop-peers.yaml"),
		filepath.Join("manifests", "example-app.yaml"))
	for _, obj := range appObjs {
		if obj.GetNamespace() != "" {
			t.Errorf("%s %s names namespace %s; leave it to kubectl -n", obj.GetKind(), obj.GetName(), obj.GetNamespace())
		}
		obj.SetNamespace(ns)
		create(t, obj)
	}

	// The fleet key, as the documented step makes it.
	name, key, _ := syncKeyStep(t, filepath.Join("manifests", "namespace", "ctxprop-config.yaml"))
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		StringData: map[string]string{key: base64.StdEncoding.EncodeToString(raw) + "\n"},
	}
	if err := c.Create(ctx, secret, client.FieldValidation("Strict")); err != nil {
		t.Fatal(err)
	}

	// The example app, through a live webhook, gets a sidecar whose ports the example
	// Service and the peer Service can reach by name, and the fleet key of the namespace.
	srv, ca := startWebhook(t)
	registerWebhook(t, c, srv, ca, ns, admissionregistrationv1.Fail)
	waitInjecting(t, c, ns)
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "echo"}, &dep); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: *dep.Spec.Template.ObjectMeta.DeepCopy(), Spec: *dep.Spec.Template.Spec.DeepCopy()}
	pod.Namespace, pod.GenerateName = ns, "echo-"
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	checkInjected(t, &pod.ObjectMeta, &pod.Spec)
	if got, want := pod.Annotations[AnnotationInterception], string(InterceptIPTables); got != want {
		t.Errorf("example pod interception = %q, want %q", got, want)
	}
	sidecar := pod.Spec.InitContainers[containerIndex(pod.Spec.InitContainers, ContainerName)]
	portsOf := func(ctr corev1.Container) map[string]bool {
		ports := map[string]bool{}
		for _, p := range ctr.Ports {
			ports[p.Name] = true
		}
		return ports
	}
	// The app's Service is unchanged by the sidecar (iptables mode): it targets the app's
	// port; the peer Service targets the sidecar's.
	for _, s := range []struct {
		name  string
		ctr   corev1.Container
		ports map[string]bool
	}{
		{"echo", pod.Spec.Containers[0], portsOf(pod.Spec.Containers[0])},
		{"ctxprop-peers", sidecar, portsOf(sidecar)},
	} {
		name, ports := s.name, s.ports
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
			t.Fatal(err)
		}
		if tp := svc.Spec.Ports[0].TargetPort.StrVal; !ports[tp] {
			t.Errorf("Service %s targets port %q, which container %s does not name (it has %v)", name, tp, s.ctr.Name, ports)
		}
		for k, v := range svc.Spec.Selector {
			if pod.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the injected pod lacks", name, k, v)
			}
		}
	}
	if got, want := envValue(sidecar.Env, "CTXPROP_INBOUND_APP"), "127.0.0.1:8080"; got != want {
		t.Errorf("CTXPROP_INBOUND_APP = %q, want %q", got, want)
	}
	vi := volumeIndex(pod.Spec.Volumes, SyncKeyVolume)
	if vi < 0 {
		t.Fatalf("the example pod mounts no fleet key; volumes %+v", pod.Spec.Volumes)
	}
	v := pod.Spec.Volumes[vi].Secret
	if v == nil || v.SecretName != secret.Name {
		t.Fatalf("the example pod's key volume %+v, want the Secret %s the namespace step creates", pod.Spec.Volumes[vi].VolumeSource, secret.Name)
	}
	var stored corev1.Secret
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), &stored); err != nil {
		t.Fatal(err)
	}
	for _, it := range v.Items {
		if _, ok := stored.Data[it.Key]; !ok {
			t.Errorf("the pod mounts key %q of Secret %s, which has %v", it.Key, stored.Name, stored.Data)
		}
	}
}

// TestREADME_Annotations: every annotation the injector reads or writes is documented in the
// README's Kubernetes section.
func TestREADME_Annotations(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, a := range []string{
		AnnotationInject, AnnotationStatus, AnnotationSkipReason, AnnotationAppPort, AnnotationImage,
		AnnotationConfigMap, AnnotationDataClaim, AnnotationDataVolume, AnnotationSyncKeySecret,
		AnnotationSyncKey, AnnotationNoProxy, AnnotationInterception, AnnotationInterceptionReason,
		AnnotationInboundPorts, AnnotationExcludeInboundPorts, AnnotationExcludeOutboundPorts,
		AnnotationExcludeOutboundCIDRs, "ctxprop.io/cpu-request", "ctxprop.io/config-<block>-<attr>",
	} {
		if !strings.Contains(readme, "`"+a) {
			t.Errorf("README.md does not document the annotation %s", a)
		}
	}
	for _, s := range []string{MutateNoNetAdminPath, InitContainerName, "-interception=http-proxy", "pod-security.kubernetes.io/enforce"} {
		if !strings.Contains(readme, s) {
			t.Errorf("README.md does not mention %s", s)
		}
	}
}

// TestManifests_MultiClusterConfig the config.hcl of the multi-cluster example loads and
// validates, with the relay on.
func TestManifests_MultiClusterConfig(t *testing.T) {
	objs := readManifests(t, filepath.Join("manifests", "multicluster", "ctxprop-config.yaml"))
	if len(objs) != 1 {
		t.Fatalf("%d objects, want one ConfigMap", len(objs))
	}
	src, _, _ := unstructured.NestedString(objs[0].Object, "data", "config.hcl")
	cfg, err := config.Parse([]byte(src), "multicluster/ctxprop-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Relay.URLs) == 0 || cfg.Relay.Cluster == "" {
		t.Errorf("relay urls %v cluster %q: the example does not turn the relay on", cfg.Relay.URLs, cfg.Relay.Cluster)
	}
}
