package k8s_test

import (
	"fmt"
	"io"
	"strings"

	"github.com/ctxprop/ctxprop/k8s"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ExampleConfig_InjectPod() {
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			k8s.AnnotationInject:               "true",
			k8s.AnnotationAppPort:              "9000",
			k8s.AnnotationExcludeOutboundCIDRs: "169.254.169.254/32",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop/orders"}}},
	}
	res, err := k8s.DefaultConfig().InjectPod(&pod.ObjectMeta, &pod.Spec)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Outcome, "interception:", res.Interception)
	setup, sidecar := pod.Spec.InitContainers[0], pod.Spec.InitContainers[1]
	fmt.Println(setup.Name, strings.Join(setup.Args, " "), "adds", setup.SecurityContext.Capabilities.Add)
	for _, e := range setup.Env {
		fmt.Printf("  %s=%s\n", e.Name, e.Value)
	}
	fmt.Println(sidecar.Name, "restartPolicy:", *sidecar.RestartPolicy)
	fmt.Println("probe:", strings.Join(sidecar.StartupProbe.Exec.Command, " "))
	for _, e := range sidecar.Env {
		if e.ValueFrom != nil {
			fmt.Printf("%s from %s\n", e.Name, e.ValueFrom.FieldRef.FieldPath)
		} else {
			fmt.Printf("%s=%s\n", e.Name, e.Value)
		}
	}
	fmt.Println("fleet key from Secret", pod.Annotations[k8s.AnnotationSyncKey])
	fmt.Println("app environment:", pod.Spec.Containers[0].Env)
	// Output:
	// injected interception: iptables
	// ctxprop-init intercept -config /etc/ctxprop/config.hcl -config-optional adds [NET_ADMIN NET_RAW]
	//   CTXPROP_INTERCEPT_PROXY_UID=65532
	//   CTXPROP_INTERCEPT_EXCLUDE_OUTBOUND_CIDRS=169.254.169.254/32
	// ctxprop restartPolicy: Always
	// probe: /sidecar probe -url http://127.0.0.1:7400/readyz
	// POD_NAMESPACE from metadata.namespace
	// CTXPROP_NODE_NAME from metadata.name
	// CTXPROP_STORE_PATH=/var/lib/ctxprop/ctxprop.db
	// CTXPROP_SYNC_DNS=ctxprop-peers.$(POD_NAMESPACE).svc.cluster.local
	// CTXPROP_INBOUND_APP=127.0.0.1:9000
	// CTXPROP_SYNC_KEY_FILE=/etc/ctxprop-sync/key
	// GOMEMLIMIT=209715KiB
	// fleet key from Secret ctxprop-sync-key
	// app environment: []
}

func ExampleConfig_InjectManifests() {
	manifests := `apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders}
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders}}
    spec:
      containers: [{name: app, image: shop/orders}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: backfill}
spec:
  template:
    metadata:
      annotations: {ctxprop.io/inject: "false"}
    spec:
      restartPolicy: Never
      containers: [{name: backfill, image: shop/backfill}]
`
	cfg := k8s.DefaultConfig()
	cfg.InjectUnannotated = true // what `sidecar inject` does
	results, err := cfg.InjectManifests(strings.NewReader(manifests), io.Discard)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results {
		fmt.Printf("document %d, %s %s: %s", r.Doc, r.Kind, r.Name, r.Outcome)
		if r.Reason != "" {
			fmt.Printf(" (%s)", r.Reason)
		}
		fmt.Println()
	}
	// Output:
	// document 1, Deployment orders: injected
	// document 2, Job backfill: skipped (ctxprop.io/inject is "false")
}
