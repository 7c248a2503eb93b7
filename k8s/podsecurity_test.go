package k8s

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// labelledNamespace creates a namespace that enforces a Pod Security level, for one test.
func labelledNamespace(t *testing.T, c client.Client, level string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "ctxprop-pss-" + level + "-",
		Labels:       map[string]string{"pod-security.kubernetes.io/enforce": level},
	}}
	if err := c.Create(t.Context(), ns, client.FieldValidation("Strict")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(context.Background(), ns) })
	return ns.Name
}

// registerShippedWebhooks registers the webhooks of k8s/manifests/webhook.yaml as shipped,
// namespace selectors included, pointed at srv by url instead of the in-cluster Service and
// narrowed to the test's namespaces so that no other test's pods reach them. failurePolicy
// becomes Fail: a webhook that was not called must fail the test, not pass unnoticed.
func registerShippedWebhooks(t *testing.T, c client.Client, srv *Server, ca *testCA, namespaces ...string) {
	t.Helper()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	for _, obj := range readManifests(t, filepath.Join("manifests", "webhook.yaml")) {
		if obj.GetKind() == "MutatingWebhookConfiguration" {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &mwc); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(mwc.Webhooks) == 0 {
		t.Fatal("webhook.yaml has no MutatingWebhookConfiguration with webhooks")
	}
	mwc.ObjectMeta = metav1.ObjectMeta{Name: namespaces[0]}
	fail := admissionregistrationv1.Fail
	for i := range mwc.Webhooks {
		w := &mwc.Webhooks[i]
		url := "https://" + srv.Addr().String() + *w.ClientConfig.Service.Path
		w.ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca.certPEM}
		w.FailurePolicy = &fail
		w.NamespaceSelector.MatchExpressions = append(w.NamespaceSelector.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: namespaces,
		})
	}
	if err := c.Create(t.Context(), &mwc, client.FieldValidation("Strict")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(context.Background(), &mwc) })
}

// restrictedPod is an annotated pod whose app container meets Pod Security restricted, so
// that whatever the API server refuses is the injector's doing.
func restrictedPod(ns, name string, ann map[string]string) *corev1.Pod {
	pod := annotatedPodIn(ns, name, ann)
	yes, no, uid := true, false, int64(1000)
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		RunAsNonRoot:             &yes,
		RunAsUser:                &uid,
		AllowPrivilegeEscalation: &no,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	return pod
}

// TestAPIServer_PodSecurity: what the API server does with injected pods in namespaces that
// enforce Pod Security baseline and restricted, with the shipped webhook configuration and
// strict field validation. Pod Security alone refuses ctxprop-init (NET_ADMIN, NET_RAW, and
// under restricted root); through the webhook, a pod that chose no mode gets http-proxy and
// runs, one that asked for iptables is refused with the annotation to set, and a namespace
// without a level gets iptables.
func TestAPIServer_PodSecurity(t *testing.T) {
	c := apiServerClient(t)
	open := testNamespace(t, c)
	levels := []string{"baseline", "restricted"}
	served := map[string]string{}   // level → namespace the webhook serves
	unserved := map[string]string{} // level → namespace without the webhook: Pod Security alone
	for _, level := range levels {
		served[level] = labelledNamespace(t, c, level)
		unserved[level] = labelledNamespace(t, c, level)
	}
	srv, ca := startWebhook(t)
	registerShippedWebhooks(t, c, srv, ca, open, served["baseline"], served["restricted"])
	for _, ns := range []string{open, served["baseline"], served["restricted"]} {
		waitUntil(t, "webhook active in "+ns, func() (bool, error) {
			pod := restrictedPod(ns, "probe", nil)
			if err := c.Create(t.Context(), pod, client.DryRunAll); err != nil {
				return false, err
			}
			return containerIndex(pod.Spec.InitContainers, ContainerName) >= 0, nil
		})
	}
	create := func(t *testing.T, pod *corev1.Pod) error {
		t.Helper()
		return c.Create(t.Context(), pod, client.FieldValidation("Strict"))
	}
	get := func(t *testing.T, pod *corev1.Pod) *corev1.Pod {
		t.Helper()
		var stored corev1.Pod
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(pod), &stored); err != nil {
			t.Fatal(err)
		}
		return &stored
	}
	// offline is the pod as `sidecar inject` writes it: iptables, ctxprop-init included.
	offline := func(t *testing.T, ns, name string) *corev1.Pod {
		t.Helper()
		pod := restrictedPod(ns, name, nil)
		if res, err := offlineConfig().InjectPod(&pod.ObjectMeta, &pod.Spec); err != nil || res.Interception != InterceptIPTables {
			t.Fatalf("InjectPod = %+v, %v; want iptables", res, err)
		}
		return pod
	}

	t.Run("no level: iptables", func(t *testing.T) {
		pod := restrictedPod(open, "open", nil)
		if err := create(t, pod); err != nil {
			t.Fatal(err)
		}
		stored := get(t, pod)
		checkInjected(t, &stored.ObjectMeta, &stored.Spec)
		if got, want := stored.Annotations[AnnotationInterception], string(InterceptIPTables); got != want {
			t.Errorf("interception = %q, want %q", got, want)
		}
		if r, ok := stored.Annotations[AnnotationInterceptionReason]; ok {
			t.Errorf("interception reason %q on a pod that got iptables", r)
		}
	})
	for _, level := range levels {
		t.Run(level, func(t *testing.T) {
			ns := served[level]
			t.Run("Pod Security alone refuses ctxprop-init", func(t *testing.T) {
				err := create(t, offline(t, unserved[level], "offline"))
				if err == nil {
					t.Fatalf("an iptables pod was admitted under Pod Security %s", level)
				}
				t.Logf("what the API server answers: %v", err)
				for _, want := range []string{`violates PodSecurity "` + level + `:latest"`, `container "ctxprop-init" must not include "NET_ADMIN", "NET_RAW"`} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("err = %v, want it to contain %q", err, want)
					}
				}
				if level == "restricted" && !strings.Contains(err.Error(), `runAsNonRoot != true (container "ctxprop-init"`) {
					t.Errorf("err = %v, want restricted to refuse the root init container too", err)
				}
			})
			t.Run("no mode chosen: http-proxy", func(t *testing.T) {
				pod := restrictedPod(ns, "fallback", nil)
				if err := create(t, pod); err != nil {
					t.Fatalf("the fallback pod must meet Pod Security %s: %v", level, err)
				}
				stored := get(t, pod)
				checkInjected(t, &stored.ObjectMeta, &stored.Spec)
				if got, want := stored.Annotations[AnnotationInterception], string(InterceptHTTPProxy); got != want {
					t.Errorf("interception = %q, want %q", got, want)
				}
				if got := stored.Annotations[AnnotationInterceptionReason]; !strings.Contains(got, "Pod Security baseline or restricted") {
					t.Errorf("interception reason = %q, want it to say why", got)
				}
			})
			t.Run("http-proxy asked for", func(t *testing.T) {
				pod := restrictedPod(ns, "asked-http-proxy", map[string]string{AnnotationInterception: "http-proxy"})
				if err := create(t, pod); err != nil {
					t.Fatal(err)
				}
				stored := get(t, pod)
				checkInjected(t, &stored.ObjectMeta, &stored.Spec)
				if r, ok := stored.Annotations[AnnotationInterceptionReason]; ok {
					t.Errorf("interception reason %q on a pod that asked for http-proxy", r)
				}
			})
			t.Run("iptables asked for: denied with the way out", func(t *testing.T) {
				err := create(t, restrictedPod(ns, "asked-iptables", map[string]string{AnnotationInterception: "iptables"}))
				if err == nil {
					t.Fatal("a pod that asked for iptables was admitted")
				}
				for _, want := range []string{`admission webhook "inject-no-net-admin.ctxprop.io" denied the request`, `annotation ctxprop.io/interception="iptables"`, `set ctxprop.io/interception: "http-proxy"`} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("err = %v, want it to contain %q", err, want)
					}
				}
			})
			t.Run("injected offline: denied with the way out", func(t *testing.T) {
				err := create(t, offline(t, ns, "offline"))
				if err == nil || !strings.Contains(err.Error(), "inject the pod again") || !strings.Contains(err.Error(), `ctxprop.io/interception: "http-proxy"`) {
					t.Fatalf("err = %v, want the webhook's denial saying to inject again with http-proxy", err)
				}
			})
		})
	}
	t.Run("offline pod admitted without a level", func(t *testing.T) {
		if err := create(t, offline(t, open, "offline")); err != nil {
			t.Fatalf("the iptables pod is refused where no Pod Security level is enforced: %v", err)
		}
	})
}
