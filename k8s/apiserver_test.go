package k8s

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// One API server (kube-apiserver + etcd, built by hack/kube/build.sh) serves every test of
// the package that needs one; it starts on first use, so the unit tests run without it.
var apiserver struct {
	once sync.Once
	env  *envtest.Environment
	c    client.Client
	err  error
}

func TestMain(m *testing.M) {
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	if apiserver.env != nil {
		if err := apiserver.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// assetsDir is where kube-apiserver and etcd are: $KUBEBUILDER_ASSETS or <repo>/.bin/kube.
func assetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	return filepath.Abs(filepath.Join("..", ".bin", "kube"))
}

// apiServerClient returns a client of the shared test API server. Missing binaries fail the
// test: a skipped test would hide that the webhook was never checked against Kubernetes.
func apiServerClient(t *testing.T) client.Client {
	t.Helper()
	apiserver.once.Do(func() {
		dir, err := assetsDir()
		if err != nil {
			apiserver.err = err
			return
		}
		for _, bin := range []string{"kube-apiserver", "etcd"} {
			if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
				apiserver.err = fmt.Errorf("%s not found in %s: run hack/kube/build.sh (or set KUBEBUILDER_ASSETS to a folder with kube-apiserver and etcd)", bin, dir)
				return
			}
		}
		env := &envtest.Environment{
			BinaryAssetsDirectory:    dir,
			ControlPlaneStartTimeout: 90 * time.Second,
			ControlPlaneStopTimeout:  30 * time.Second,
		}
		cfg, err := env.Start()
		if err != nil {
			apiserver.err = fmt.Errorf("starting kube-apiserver and etcd from %s: %w", dir, err)
			return
		}
		apiserver.env = env
		apiserver.c, apiserver.err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
	})
	if apiserver.err != nil {
		t.Fatal(apiserver.err)
	}
	return apiserver.c
}

// testNamespace creates a namespace for one test and deletes it afterwards.
func testNamespace(t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ctxprop-test-"}}
	if err := c.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(context.Background(), ns) })
	return ns.Name
}

// startWebhook serves the webhook on 127.0.0.1 with a key pair from a CA made for the test.
func startWebhook(t *testing.T) (*Server, *testCA) {
	t.Helper()
	ca := newTestCA(t)
	secret := &secretDir{dir: t.TempDir()}
	certPEM, keyPEM, _ := ca.issue(t)
	secret.write(t, certPEM, keyPEM)
	cfg := DefaultServerConfig()
	cfg.Address = "127.0.0.1:0"
	cfg.CertFile, cfg.KeyFile = secret.certFile(), secret.keyFile()
	cfg.Inject.Image = "example.com/ctxprop/sidecar:test"
	cfg.Logger = testLogger(t)
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeWebhook(t, srv) })
	return srv, ca
}

func closeWebhook(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		t.Error(err)
	}
}

// registerWebhook points the API server at srv for pods created in namespace ns, the way
// k8s/manifests/webhook.yaml does for a Service, but with a url clientConfig.
func registerWebhook(t *testing.T, c client.Client, srv *Server, ca *testCA, ns string, policy admissionregistrationv1.FailurePolicyType) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	url := "https://" + srv.Addr().String() + MutatePath
	none := admissionregistrationv1.SideEffectClassNone
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	timeout := int32(5)
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "inject.ctxprop.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca.certPEM},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &policy,
			ReinvocationPolicy:      &ifNeeded,
			TimeoutSeconds:          &timeout,
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
				"kubernetes.io/metadata.name": ns,
			}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
				},
			}},
		}},
	}
	if err := c.Create(t.Context(), mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(context.Background(), mwc) })
	return mwc
}

func annotatedPodIn(ns, name string, ann map[string]string) *corev1.Pod {
	pod := annotatedPod(ann)
	pod.Namespace, pod.Name, pod.GenerateName = ns, name, ""
	return pod
}

// waitUntil polls cond every 100ms until it holds or 30s pass: the API server picks up a
// webhook configuration change from its informer, a moment after the write.
func waitUntil(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s (last error: %v)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitInjecting waits until a dry-run creation in ns comes back with the sidecar.
func waitInjecting(t *testing.T, c client.Client, ns string) {
	t.Helper()
	waitUntil(t, "webhook active", func() (bool, error) {
		pod := annotatedPodIn(ns, "probe", nil)
		if err := c.Create(t.Context(), pod, client.DryRunAll); err != nil {
			return false, err
		}
		return containerIndex(pod.Spec.InitContainers, ContainerName) >= 0, nil
	})
}

func TestAPIServer_Webhook(t *testing.T) {
	c := apiServerClient(t)
	ns := testNamespace(t, c)
	srv, ca := startWebhook(t)
	registerWebhook(t, c, srv, ca, ns, admissionregistrationv1.Fail)
	waitInjecting(t, c, ns)

	get := func(t *testing.T, name string) *corev1.Pod {
		t.Helper()
		var pod corev1.Pod
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &pod); err != nil {
			t.Fatal(err)
		}
		return &pod
	}

	t.Run("annotated pod", func(t *testing.T) {
		pod := annotatedPodIn(ns, "annotated", map[string]string{AnnotationAppPort: "9000"})
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		stored := get(t, "annotated")
		checkInjected(t, &stored.ObjectMeta, &stored.Spec)
		sidecar := stored.Spec.InitContainers[containerIndex(stored.Spec.InitContainers, ContainerName)]
		if got, want := sidecar.Image, "example.com/ctxprop/sidecar:test"; got != want {
			t.Errorf("image = %q, want %q", got, want)
		}
		if got, want := envValue(sidecar.Env, "CTXPROP_INBOUND_APP"), "127.0.0.1:9000"; got != want {
			t.Errorf("CTXPROP_INBOUND_APP = %q, want %q", got, want)
		}
		if got, want := stored.Labels[LabelPeer], "true"; got != want {
			t.Errorf("label %s = %q, want %q", LabelPeer, got, want)
		}
		v := stored.Spec.Volumes[volumeIndex(stored.Spec.Volumes, DataVolumeName)]
		if v.EmptyDir == nil {
			t.Errorf("data volume %+v, want an emptyDir", v.VolumeSource)
		}
		// Keyed by default: checkInjected matched the volume, mount and variable to it.
		if got, want := stored.Annotations[AnnotationSyncKey], DefaultSyncKeySecret; got != want {
			t.Errorf("annotation %s = %q, want %q", AnnotationSyncKey, got, want)
		}
	})

	t.Run("pod opted out of the fleet key", func(t *testing.T) {
		pod := annotatedPodIn(ns, "unkeyed", map[string]string{AnnotationSyncKeySecret: SyncKeyNone})
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		stored := get(t, "unkeyed")
		checkInjected(t, &stored.ObjectMeta, &stored.Spec)
		if got, want := stored.Annotations[AnnotationSyncKey], SyncKeyNone; got != want {
			t.Errorf("annotation %s = %q, want %q", AnnotationSyncKey, got, want)
		}
		if i := volumeIndex(stored.Spec.Volumes, SyncKeyVolume); i >= 0 {
			t.Errorf("unkeyed pod has the key volume %+v", stored.Spec.Volumes[i])
		}
	})

	t.Run("unannotated pod", func(t *testing.T) {
		pod := annotatedPodIn(ns, "plain", nil)
		pod.Annotations = nil
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		stored := get(t, "plain")
		if len(stored.Annotations) != 0 || len(stored.Spec.InitContainers) != 0 || len(stored.Spec.Containers[0].Env) != 0 || len(stored.Spec.Volumes) != 0 {
			t.Errorf("unannotated pod was changed: annotations %v, spec %+v", stored.Annotations, stored.Spec)
		}
	})

	t.Run("opted-out pod", func(t *testing.T) {
		pod := annotatedPodIn(ns, "opted-out", map[string]string{AnnotationInject: "false"})
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		stored := get(t, "opted-out")
		if got, want := stored.Annotations[AnnotationStatus], StatusSkipped; got != want {
			t.Errorf("status = %q, want %q", got, want)
		}
		if got, want := stored.Annotations[AnnotationSkipReason], `ctxprop.io/inject is "false"`; got != want {
			t.Errorf("skip reason = %q, want %q", got, want)
		}
		if len(stored.Spec.InitContainers) != 0 {
			t.Errorf("opted-out pod got init containers")
		}
	})

	t.Run("bad annotation denied", func(t *testing.T) {
		pod := annotatedPodIn(ns, "bad", map[string]string{AnnotationMemoryLimit: "plenty"})
		err := c.Create(t.Context(), pod)
		if err == nil || !strings.Contains(err.Error(), AnnotationMemoryLimit) {
			t.Fatalf("err = %v, want a denial naming %s", err, AnnotationMemoryLimit)
		}
	})

	t.Run("deployment pod template", func(t *testing.T) {
		labels := map[string]string{"app": "orders"}
		tmpl := annotatedPodIn("", "", map[string]string{AnnotationDataClaim: "orders-state"})
		tmpl.Labels = labels
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders"},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec},
			},
		}
		if err := c.Create(t.Context(), dep); err != nil {
			t.Fatal(err)
		}
		var stored appsv1.Deployment
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(dep), &stored); err != nil {
			t.Fatal(err)
		}
		if len(stored.Spec.Template.Spec.InitContainers) != 0 {
			t.Errorf("the webhook must leave Deployments alone and inject into their pods")
		}
		// No controllers run here, so create the pod the ReplicaSet controller would.
		pod := &corev1.Pod{
			ObjectMeta: *stored.Spec.Template.ObjectMeta.DeepCopy(),
			Spec:       *stored.Spec.Template.Spec.DeepCopy(),
		}
		pod.Namespace, pod.GenerateName = ns, "orders-"
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		got := get(t, pod.Name)
		checkInjected(t, &got.ObjectMeta, &got.Spec)
		v := got.Spec.Volumes[volumeIndex(got.Spec.Volumes, DataVolumeName)]
		if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "orders-state" {
			t.Errorf("data volume %+v, want the claim orders-state", v.VolumeSource)
		}
		if got, want := got.Labels["app"], "orders"; got != want {
			t.Errorf("template label app = %q, want %q", got, want)
		}
	})

	t.Run("already injected pod", func(t *testing.T) {
		first := get(t, "annotated")
		again := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "annotated-again", Labels: first.Labels, Annotations: first.Annotations},
			Spec:       *first.Spec.DeepCopy(),
		}
		// Offline injection of the same pod is also a no-op: what `sidecar inject` wrote
		// passes through the webhook unchanged.
		if res, err := srv.cfg.Inject.InjectPod(&again.ObjectMeta, &again.Spec); err != nil || res.Outcome != AlreadyInjected {
			t.Fatalf("InjectPod = %v, %v; want already injected", res.Outcome, err)
		}
		if err := c.Create(t.Context(), again); err != nil {
			t.Fatal(err)
		}
		stored := get(t, "annotated-again")
		for _, check := range []struct {
			what      string
			got, want any
		}{
			{"init containers", stored.Spec.InitContainers, first.Spec.InitContainers},
			{"containers", stored.Spec.Containers, first.Spec.Containers},
			{"volumes", stored.Spec.Volumes, first.Spec.Volumes},
			{"annotations", stored.Annotations, first.Annotations},
		} {
			if !equality.Semantic.DeepEqual(check.got, check.want) {
				t.Errorf("%s changed on the second pass:\n got %+v\nwant %+v", check.what, check.got, check.want)
			}
		}
	})
}

func TestAPIServer_FailurePolicy(t *testing.T) {
	c := apiServerClient(t)
	ns := testNamespace(t, c)
	srv, ca := startWebhook(t)
	mwc := registerWebhook(t, c, srv, ca, ns, admissionregistrationv1.Ignore)
	waitInjecting(t, c, ns)
	closeWebhook(t, srv) // the webhook is down from here on

	t.Run("Ignore admits without the sidecar", func(t *testing.T) {
		pod := annotatedPodIn(ns, "while-down", nil)
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatalf("with failurePolicy Ignore the pod must be created: %v", err)
		}
		if len(pod.Spec.InitContainers) != 0 {
			t.Errorf("pod got a sidecar from a webhook that is down")
		}
	})

	t.Run("Fail refuses the pod", func(t *testing.T) {
		fail := admissionregistrationv1.Fail
		mwc.Webhooks[0].FailurePolicy = &fail
		if err := c.Update(t.Context(), mwc); err != nil {
			t.Fatal(err)
		}
		var lastErr error
		waitUntil(t, "failurePolicy Fail in force", func() (bool, error) {
			lastErr = c.Create(t.Context(), annotatedPodIn(ns, "refused", nil), client.DryRunAll)
			return lastErr != nil, nil
		})
		if !strings.Contains(lastErr.Error(), "inject.ctxprop.io") {
			t.Errorf("err = %v, want it to name the webhook", lastErr)
		}
		if err := c.Create(t.Context(), annotatedPodIn(ns, "refused", nil)); err == nil {
			t.Errorf("pod created although the webhook is down and failurePolicy is Fail")
		}
	})
}
