package k8s

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	jsonpatchapply "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "test", Output: tWriter{t}, Level: hclog.Debug})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// handlerServer is the webhook's plain-HTTP handler; TLS is TestServer_CertReload's business.
func handlerServer(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s := &Server{cfg: ServerConfig{Inject: DefaultConfig()}, logger: testLogger(t)}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func review(t *testing.T, url string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	return reviewAt(t, url+MutatePath, req)
}

// reviewAt posts req to the full URL of one of the webhook's paths.
func reviewAt(t *testing.T, url string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != req.UID {
		t.Fatalf("response %+v does not echo uid %q", out.Response, req.UID)
	}
	if got, want := out.Kind, "AdmissionReview"; got != want {
		t.Errorf("kind = %q, want %q", got, want)
	}
	return out.Response
}

func podRequest(t *testing.T, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       "7b6c1f0e",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  podResource,
		Operation: admissionv1.Create,
		Namespace: "shop",
		Object:    runtime.RawExtension{Raw: raw},
	}
}

func annotatedPod(ann map[string]string) *corev1.Pod {
	a := map[string]string{AnnotationInject: "true"}
	for k, v := range ann {
		a[k] = v
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "orders-", Annotations: a},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

func applyPatch(t *testing.T, req *admissionv1.AdmissionRequest, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	patch, err := jsonpatchapply.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch %s: %v", resp.Patch, err)
	}
	out, err := patch.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("applying %s: %v", resp.Patch, err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(out, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

func TestServer_Review(t *testing.T) {
	_, ts := handlerServer(t)

	t.Run("annotated pod gets a patch", func(t *testing.T) {
		req := podRequest(t, annotatedPod(nil))
		resp := review(t, ts.URL, req)
		if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("response %+v, want an allowed JSON patch", resp)
		}
		pod := applyPatch(t, req, resp)
		checkInjected(t, &pod.ObjectMeta, &pod.Spec)

		// The patched pod coming back (reinvocation) needs no further patch.
		again := review(t, ts.URL, podRequest(t, pod))
		if !again.Allowed || len(again.Patch) != 0 {
			t.Errorf("second review = allowed %v patch %s, want allowed and no patch", again.Allowed, again.Patch)
		}
	})
	t.Run("unannotated pod passes untouched", func(t *testing.T) {
		pod := annotatedPod(nil)
		pod.Annotations = nil
		resp := review(t, ts.URL, podRequest(t, pod))
		if !resp.Allowed || len(resp.Patch) != 0 || len(resp.Warnings) != 0 {
			t.Errorf("response %+v, want allowed with no patch", resp)
		}
	})
	t.Run("opt out is recorded with a warning", func(t *testing.T) {
		req := podRequest(t, annotatedPod(map[string]string{AnnotationInject: "false"}))
		resp := review(t, ts.URL, req)
		pod := applyPatch(t, req, resp)
		if got, want := pod.Annotations[AnnotationSkipReason], `ctxprop.io/inject is "false"`; got != want {
			t.Errorf("skip reason = %q, want %q", got, want)
		}
		if len(pod.Spec.InitContainers) != 0 {
			t.Errorf("opted-out pod got init containers")
		}
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "not injected") {
			t.Errorf("warnings = %q", resp.Warnings)
		}
	})
	t.Run("bad annotation is denied", func(t *testing.T) {
		resp := review(t, ts.URL, podRequest(t, annotatedPod(map[string]string{AnnotationAppPort: "http"})))
		if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusUnprocessableEntity ||
			!strings.Contains(resp.Result.Message, "ctxprop.io/app-port") {
			t.Errorf("response %+v, want a 422 denial naming the annotation", resp)
		}
	})
	t.Run("other resources pass", func(t *testing.T) {
		req := podRequest(t, annotatedPod(nil))
		req.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		if resp := review(t, ts.URL, req); !resp.Allowed || len(resp.Patch) != 0 {
			t.Errorf("response %+v, want allowed with no patch", resp)
		}
	})
	t.Run("undecodable pod is denied", func(t *testing.T) {
		req := podRequest(t, annotatedPod(nil))
		req.Object.Raw = []byte(`{"spec":{"containers":"many"}}`)
		if resp := review(t, ts.URL, req); resp.Allowed || resp.Result.Code != http.StatusBadRequest {
			t.Errorf("response %+v, want a 400 denial", resp)
		}
	})
}

// TestServer_Review_SyncKey: through the webhook, pods mount the fleet key by default; a pod
// or a webhook that says "none" gets an unkeyed pod, marked so, and the creator a warning.
func TestServer_Review_SyncKey(t *testing.T) {
	tests := []struct {
		name        string
		webhook     string // ServerConfig.Inject.SyncKeySecret; empty: the default
		ann         map[string]string
		wantKey     string
		wantWarning bool
	}{
		{name: "default", wantKey: DefaultSyncKeySecret},
		{name: "pod opts out", ann: map[string]string{AnnotationSyncKeySecret: SyncKeyNone}, wantKey: SyncKeyNone, wantWarning: true},
		{name: "webhook opts out", webhook: SyncKeyNone, wantKey: SyncKeyNone, wantWarning: true},
		{name: "pod names its secret under an unkeyed webhook", webhook: SyncKeyNone, ann: map[string]string{AnnotationSyncKeySecret: "orders-key"}, wantKey: "orders-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := handlerServer(t)
			if tt.webhook != "" {
				s.cfg.Inject.SyncKeySecret = tt.webhook
			}
			req := podRequest(t, annotatedPod(tt.ann))
			resp := review(t, ts.URL, req)
			if !resp.Allowed {
				t.Fatalf("response %+v, want allowed", resp)
			}
			pod := applyPatch(t, req, resp)
			checkInjected(t, &pod.ObjectMeta, &pod.Spec)
			if got, want := pod.Annotations[AnnotationSyncKey], tt.wantKey; got != want {
				t.Errorf("annotation %s = %q, want %q", AnnotationSyncKey, got, want)
			}
			warned := len(resp.Warnings) == 1 && strings.Contains(resp.Warnings[0], "without a fleet key")
			if warned != tt.wantWarning || !tt.wantWarning && len(resp.Warnings) != 0 {
				t.Errorf("warnings = %q, want a warning about the missing key: %v", resp.Warnings, tt.wantWarning)
			}
			again := review(t, ts.URL, podRequest(t, pod))
			if !again.Allowed || len(again.Patch) != 0 || len(again.Warnings) != 0 {
				t.Errorf("second review = %+v, want allowed, no patch, no warning", again)
			}
		})
	}
}

// TestServer_Review_NoNetAdmin: the path the API server calls for namespaces that enforce
// Pod Security baseline or restricted gives pods that chose no mode http-proxy, with the
// reason on the pod and as a warning, and denies pods that asked for iptables, naming the
// annotation to set; the ordinary path gives the same pod ctxprop-init.
func TestServer_Review_NoNetAdmin(t *testing.T) {
	_, ts := handlerServer(t)
	noNetAdmin := ts.URL + MutateNoNetAdminPath

	t.Run("no mode chosen falls back", func(t *testing.T) {
		req := podRequest(t, annotatedPod(nil))
		resp := reviewAt(t, noNetAdmin, req)
		if !resp.Allowed {
			t.Fatalf("response %+v, want allowed", resp)
		}
		pod := applyPatch(t, req, resp)
		checkInjected(t, &pod.ObjectMeta, &pod.Spec)
		if got, want := pod.Annotations[AnnotationInterception], string(InterceptHTTPProxy); got != want {
			t.Errorf("annotation %s = %q, want %q", AnnotationInterception, got, want)
		}
		if got := pod.Annotations[AnnotationInterceptionReason]; !strings.Contains(got, "Pod Security") {
			t.Errorf("annotation %s = %q, want the reason", AnnotationInterceptionReason, got)
		}
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "ctxprop interception http-proxy: the namespace enforces Pod Security") {
			t.Errorf("warnings = %q, want one about the fallback", resp.Warnings)
		}
		// Coming back (reinvocation) through the same path changes nothing.
		again := reviewAt(t, noNetAdmin, podRequest(t, pod))
		if !again.Allowed || len(again.Patch) != 0 {
			t.Errorf("second review = %+v, want allowed and no patch", again)
		}
	})
	t.Run("iptables asked for is denied", func(t *testing.T) {
		resp := reviewAt(t, noNetAdmin, podRequest(t, annotatedPod(map[string]string{AnnotationInterception: "iptables"})))
		if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusUnprocessableEntity ||
			!strings.Contains(resp.Result.Message, `set ctxprop.io/interception: "http-proxy"`) {
			t.Errorf("response %+v, want a 422 denial naming the annotation to set", resp)
		}
	})
	t.Run("same pod on the ordinary path", func(t *testing.T) {
		req := podRequest(t, annotatedPod(nil))
		resp := review(t, ts.URL, req)
		pod := applyPatch(t, req, resp)
		checkInjected(t, &pod.ObjectMeta, &pod.Spec)
		if got, want := pod.Annotations[AnnotationInterception], string(InterceptIPTables); got != want {
			t.Errorf("annotation %s = %q, want %q", AnnotationInterception, got, want)
		}
		if len(resp.Warnings) != 0 {
			t.Errorf("warnings = %q, want none", resp.Warnings)
		}
		// Injected with ctxprop-init, then sent to the namespace that forbids it: denied
		// with the way out, instead of Pod Security's refusal.
		denied := reviewAt(t, noNetAdmin, podRequest(t, pod))
		if denied.Allowed || !strings.Contains(denied.Result.Message, "inject the pod again") {
			t.Errorf("response %+v, want a denial saying to inject again", denied)
		}
	})
}

func TestServer_BadRequests(t *testing.T) {
	_, ts := handlerServer(t)
	tests := []struct {
		name, method, body string
		want               int
	}{
		{"not json", http.MethodPost, "{", http.StatusBadRequest},
		{"no request", http.MethodPost, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"too large", http.MethodPost, `{"x":"` + strings.Repeat("a", maxReviewBytes) + `"}`, http.StatusRequestEntityTooLarge},
		{"wrong method", http.MethodGet, "", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, ts.URL+MutatePath, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got, want := resp.StatusCode, tt.want; got != want {
				t.Errorf("status = %d, want %d", got, want)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.Write([]byte("ok"))
			return
		}
		http.Error(w, "store not open", http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	if err := Probe(t.Context(), ts.URL+"/readyz"); err != nil {
		t.Errorf("ready: %v", err)
	}
	if err := Probe(t.Context(), ts.URL+"/healthz"); err == nil || !strings.Contains(err.Error(), "store not open") {
		t.Errorf("unready: err = %v, want the body in it", err)
	}
	ts.Close()
	if err := Probe(t.Context(), ts.URL+"/readyz"); err == nil {
		t.Errorf("closed server: no error")
	}
}
