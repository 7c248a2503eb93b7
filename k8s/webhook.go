package k8s

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MutatePath is where the webhook takes AdmissionReviews; the MutatingWebhookConfiguration's
// service path or url must end in it.
const MutatePath = "/mutate"

// MutateNoNetAdminPath takes the AdmissionReviews of pods whose namespace refuses NET_ADMIN:
// the shipped configuration sends there the namespaces labelled
// pod-security.kubernetes.io/enforce baseline or restricted, which the API server matches
// with a namespaceSelector, so the webhook needs no permission to read namespaces. Pods
// that did not choose a mode get http-proxy there; pods that asked for iptables are denied.
const MutateNoNetAdminPath = "/mutate/no-net-admin"

// maxReviewBytes bounds an AdmissionReview body: the API server's own request limit is 3 MiB,
// and a review carries the object (and, on update, the old one) once each.
const maxReviewBytes = 8 << 20

// ServerConfig configures the webhook server.
type ServerConfig struct {
	// Address to listen on; the API server must reach it (a Service in the cluster).
	Address string
	// CertFile and KeyFile are the PEM key pair served to the API server; required. They
	// are reloaded when they change on disk.
	CertFile, KeyFile string
	// Inject is what goes into each pod.
	Inject Config
	// Logger receives a line per decision; nil discards them.
	Logger hclog.Logger
}

// DefaultServerConfig returns the defaults of `sidecar webhook`.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Address:  ":8443",
		CertFile: "/etc/ctxprop-webhook/tls.crt",
		KeyFile:  "/etc/ctxprop-webhook/tls.key",
		Inject:   DefaultConfig(),
	}
}

// Validate reports the first unusable field.
func (c ServerConfig) Validate() error {
	if c.Address == "" {
		return errors.New("webhook: address is empty; set -address, e.g. :8443")
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return fmt.Errorf("webhook: address %q: %w", c.Address, err)
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return errors.New("webhook: the API server only calls webhooks over TLS; set -cert-file and -key-file")
	}
	if c.Inject.InjectUnannotated {
		return errors.New("webhook: inject_unannotated would put the sidecar into every pod of the selected namespaces; annotate pods instead")
	}
	return c.Inject.Validate()
}

// Server is the mutating admission webhook. NewServer starts nothing; Open listens and
// serves until Close.
type Server struct {
	cfg    ServerConfig
	logger hclog.Logger
	certs  *certReloader
	srv    *http.Server

	mu       sync.Mutex
	ln       net.Listener
	done     chan struct{}
	serveErr error
	closed   bool
}

// NewServer checks cfg and loads the key pair.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	logger = logger.Named("webhook")
	certs, err := newCertReloader(cfg.CertFile, cfg.KeyFile, logger)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, logger: logger, certs: certs}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.GetCertificate,
		},
		ErrorLog: logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return s, nil
}

// Handler serves the admission endpoint and the health checks, without TLS; Open wraps it.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+MutatePath, func(w http.ResponseWriter, r *http.Request) {
		s.serveMutate(w, r, NamespacePolicy{})
	})
	mux.HandleFunc("POST "+MutateNoNetAdminPath, func(w http.ResponseWriter, r *http.Request) {
		s.serveMutate(w, r, NamespacePolicy{NoNetAdmin: true})
	})
	ok := func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	return mux
}

// Open listens on the configured address and serves HTTPS in the background.
func (s *Server) Open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ln != nil {
		return errors.New("webhook: Open called twice or after Close")
	}
	ln, err := net.Listen("tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	s.ln = ln
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		err := s.srv.ServeTLS(ln, "", "")
		if !errors.Is(err, http.ErrServerClosed) {
			s.mu.Lock()
			s.serveErr = err
			s.mu.Unlock()
		}
	}()
	s.logger.Info("serving", "address", ln.Addr().String(), "path", MutatePath)
	mode := s.cfg.Inject.Interception
	if mode == "" {
		mode = InterceptIPTables
	}
	s.logger.Info("pods that choose no interception mode get the default", "interception", mode)
	if s.cfg.Inject.SyncKeySecret == SyncKeyNone {
		s.logger.Warn("injecting pods without a fleet key unless they name a Secret in "+AnnotationSyncKeySecret, "sync_key_secret", SyncKeyNone)
	} else {
		s.logger.Info("pods mount the fleet key from a Secret of their namespace", "sync_key_secret", s.cfg.Inject.SyncKeySecret)
	}
	return nil
}

// Addr is the listening address, nil before Open.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Done is closed when the server stops serving (after Close, or on a listener failure).
func (s *Server) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Close stops accepting, waits for in-flight reviews until ctx ends, and reports a serve
// failure if there was one. It is safe to call twice.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-done
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(err, s.serveErr)
}

func (s *Server) serveMutate(w http.ResponseWriter, r *http.Request, ns NamespacePolicy) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		http.Error(w, "reading the AdmissionReview: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		if err == nil {
			err = errors.New("no request in it")
		}
		http.Error(w, "not an admission.k8s.io/v1 AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	resp := s.ReviewIn(review.Request, ns)
	resp.UID = review.Request.UID
	out, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Response: resp,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// Review decides one admission request: a JSON patch that injects the sidecar, an unchanged
// admission, or a denial naming the annotation that cannot be honoured.
func (s *Server) Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	return s.ReviewIn(req, NamespacePolicy{})
}

// ReviewIn is Review for a pod of a namespace with the given policy.
func (s *Server) ReviewIn(req *admissionv1.AdmissionRequest, ns NamespacePolicy) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		return allow // the configuration's rules should not send these; let them through
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, "ctxprop: the pod does not decode: "+err.Error())
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	logger := s.logger.With("namespace", req.Namespace, "pod", name)

	before, err := json.Marshal(&pod)
	if err != nil {
		return deny(http.StatusInternalServerError, "ctxprop: "+err.Error())
	}
	res, err := s.cfg.Inject.InjectPodIn(&pod.ObjectMeta, &pod.Spec, ns)
	if err != nil {
		logger.Warn("denied", "error", err)
		return deny(http.StatusUnprocessableEntity, "ctxprop: cannot inject the sidecar: "+err.Error()+"; fix the annotation or set "+AnnotationInject+`: "false"`)
	}
	after, err := json.Marshal(&pod)
	if err != nil {
		return deny(http.StatusInternalServerError, "ctxprop: "+err.Error())
	}
	ops, err := jsonpatch.CreatePatch(before, after)
	if err != nil {
		return deny(http.StatusInternalServerError, "ctxprop: diffing the pod: "+err.Error())
	}
	switch res.Outcome {
	case Skipped:
		logger.Info("skipped", "reason", res.Reason)
		allow.Warnings = []string{"ctxprop sidecar not injected: " + res.Reason}
	case Injected, AlreadyInjected:
		logger.Info(res.Outcome.String(), "patch_ops", len(ops), "interception", res.Interception)
		if res.Outcome == Injected && pod.Annotations[AnnotationSyncKey] == SyncKeyNone {
			// kubectl prints it: whoever creates an unkeyed pod hears about it (SPEC §4a).
			allow.Warnings = append(allow.Warnings, "ctxprop sidecar injected without a fleet key ("+AnnotationSyncKey+": "+SyncKeyNone+"): its peer traffic is neither encrypted nor authenticated, and context from other pods cannot be authenticated")
		}
		if res.Fallback != "" {
			logger.Info("interception falls back", "mode", res.Interception, "reason", res.Fallback)
			allow.Warnings = append(allow.Warnings, "ctxprop interception "+string(res.Interception)+": "+res.Fallback)
		}
		for _, w := range res.Warnings {
			allow.Warnings = append(allow.Warnings, "ctxprop: "+w)
		}
	}
	if len(ops) == 0 {
		return allow
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny(http.StatusInternalServerError, "ctxprop: "+err.Error())
	}
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	return allow
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg},
	}
}
