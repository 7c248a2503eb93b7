package k8s

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	if got, want := mwc.Webhooks[0].ClientConfig.Service.Path, MutatePath; got == nil || *got != want {
		t.Errorf("service path = %v, want %s", got, want)
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

	// The example app, through a live webhook, gets a sidecar whose ports the example
	// Service and the peer Service can reach by name.
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
	sidecar := pod.Spec.InitContainers[containerIndex(pod.Spec.InitContainers, ContainerName)]
	ports := map[string]bool{}
	for _, p := range sidecar.Ports {
		ports[p.Name] = true
	}
	for _, name := range []string{"echo", "ctxprop-peers"} {
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
			t.Fatal(err)
		}
		if tp := svc.Spec.Ports[0].TargetPort.StrVal; !ports[tp] {
			t.Errorf("Service %s targets port %q, which the sidecar does not name (it has %v)", name, tp, ports)
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
}
