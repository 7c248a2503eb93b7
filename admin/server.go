package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// The admin API needs of its store only what its routes do, in ctxstore's types, so that
// any store can serve it; *localstore.Store implements all of it. Every method must be
// safe for concurrent use, and report its errors with ctxstore's (StoreError maps them to
// answers).

// Writer makes the API's writes. Each blocks until the write is as durable as asked (the
// API always asks ctxstore.Durable: an acknowledged write is on disk) or ctx ends.
type Writer interface {
	// Apply applies list to context name atomically: every op or none.
	Apply(ctx context.Context, name string, list []ops.Op, d ctxstore.Durability) (ctxstore.Result, error)
	// SetTTL sets a context's TTL; zero removes its expiry; with fixed, writes don't slide it.
	SetTTL(ctx context.Context, name string, ttl time.Duration, fixed bool) error
	// Delete deletes a context; ctxstore.ErrNotFound if it is not alive.
	Delete(ctx context.Context, name string) error
}

// Contexts reads whole contexts and maps: GET /v1/contexts, /v1/contexts/{ctx} and
// /v1/contexts/{ctx}/maps/{map}. It must not block on disk.
type Contexts interface {
	List() []ctxstore.Summary
	Get(name string) (ctxstore.Snapshot, error)
	Map(name, m string) (map[string]json.RawMessage, error)
}

// Values reads one value each: the single-value routes, and the values a watch event
// reports of what a change touched. It must not block on disk.
type Values interface {
	Counter(name, key string) (int64, error)
	MapGet(name, m, key string) (json.RawMessage, error)
	Set(name, set string) ([]string, error)
}

// Changes follows committed changes for GET /v1/watch: Watch subscribes to the changes of
// context name ("" for all) after event ID after (0: only new ones), local and replicated
// alike; the subscription ends with ctx.
type Changes interface {
	Watch(ctx context.Context, name string, after uint64) (ctxstore.Subscription, error)
}

// Checker reports, for GET /readyz, whether the store serves: nil, or what is wrong.
type Checker interface {
	Ready() error
}

// Store is what Options.Store must do: every route's interface. It is one value because
// one store serves them all in the sidecar; the Server keeps each part apart, and each
// route uses only its own.
type Store interface {
	Writer
	Contexts
	Values
	Changes
	Checker
}

// Peers reports the replication peers for GET /v1/peers; the replication backends (the
// gossip engine of package sync) implement it. Peers is called on every request,
// concurrently: it must be safe for concurrent use, must not block on the network, and
// must return a slice the caller may keep.
type Peers interface {
	Peers() []ctxstore.PeerStatus
}

// Options configure a Server.
type Options struct {
	// Address to listen on, host:port. Empty means "127.0.0.1:7400"; port 0 picks a free one.
	Address string
	// AllowNonLoopback permits an Address that is not a loopback IP. The API has no
	// authentication, so false (the zero value) refuses one.
	AllowNonLoopback bool
	// MaxBodyBytes bounds a request body; a larger one is refused with 413 before it is
	// read whole. 0 means 1 MiB.
	MaxBodyBytes int64
	// BodyReadTimeout is the time allowed between two reads of a request body; a body that
	// stalls longer is refused with 408 and its connection closed. It bounds nothing else:
	// watch and event streams last as long as their clients. 0 means 30s.
	BodyReadTimeout time.Duration
	// AllowedHosts are the names, besides loopback addresses and localhost, that a
	// request's Host header may give (compared without case; no port): the names under
	// which operators reach this listener. Any other Host is refused with 403, so that no
	// web page reaches the API through DNS rebinding (SPEC §4a). nil allows none.
	AllowedHosts []string
	// Store serves the routes (the sidecar wires its *localstore.Store). Required.
	Store Store
	// Peers reports replication peers; nil means none (GET /v1/peers answers an empty list).
	Peers Peers
	// Logger; nil discards.
	Logger hclog.Logger
	// ShutdownTimeout bounds Close when its context has no earlier deadline; 0 means 10s.
	ShutdownTimeout time.Duration
	// Registry receives the server's metrics and is served on GET /metrics; nil means a new
	// registry owned by the Server (see Server.Registry). The process-wide default registry
	// is never used.
	Registry *prometheus.Registry
	// KeepAlive is the interval of the comment lines that keep a watch stream open through
	// idle timeouts; 0 means 15s.
	KeepAlive time.Duration
}

// Server serves the admin API. Create it with New, then Open; Close stops it.
type Server struct {
	opt     Options
	log     hclog.Logger
	mux     *http.ServeMux
	handler http.Handler
	allowed map[string]bool // Options.AllowedHosts, normalised
	reg     *prometheus.Registry
	metrics *httpMetrics

	// The parts of Options.Store, each used by its own routes; all nil without a store.
	writer   Writer
	contexts Contexts
	values   Values
	changes  Changes
	checker  Checker

	mu     sync.Mutex
	checks []readyCheck
	srv    *http.Server
	ln     net.Listener
	opened bool

	// draining is set when Close starts: new requests get 503 while in-flight ones finish.
	draining atomic.Bool
	inFlight atomic.Int64
	conns    atomic.Int64 // connections accepted, for ctxprop_admin_connections_total
	// stop ends watch streams, which would otherwise hold Shutdown until its deadline.
	stop     context.Context
	cancel   context.CancelFunc
	serveErr chan error

	closeOnce sync.Once
	closeErr  error
}

type readyCheck struct {
	name  string
	check func() error
}

// New returns a Server for opt. It starts nothing: call Open, or serve Handler yourself.
func New(opt Options) *Server {
	if opt.Address == "" {
		opt.Address = "127.0.0.1:7400"
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 1 << 20
	}
	if opt.BodyReadTimeout <= 0 {
		opt.BodyReadTimeout = 30 * time.Second
	}
	if opt.ShutdownTimeout <= 0 {
		opt.ShutdownTimeout = 10 * time.Second
	}
	if opt.KeepAlive <= 0 {
		opt.KeepAlive = 15 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	reg := opt.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		opt:      opt,
		log:      opt.Logger,
		mux:      http.NewServeMux(),
		allowed:  allowedHosts(opt.AllowedHosts),
		reg:      reg,
		serveErr: make(chan error, 1),
	}
	if opt.Store != nil {
		s.writer, s.contexts, s.values, s.changes, s.checker = opt.Store, opt.Store, opt.Store, opt.Store, opt.Store
	}
	s.stop, s.cancel = context.WithCancel(context.Background())
	s.metrics = newHTTPMetrics()
	s.registerMetrics()
	s.routes()
	s.handler = s.instrument(http.HandlerFunc(s.dispatch))
	return s
}

// Registry returns the registry served on GET /metrics, so that other parts of the
// sidecar can register their collectors.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handle adds a route to the admin listener (for OFREP, flags, the web page), with the
// ServeMux pattern syntax. Those routes get the server's metrics, draining, JSON 404/405
// answers, body read timeout and browser guard: the Host and Origin checks on every
// route, and on a route under /v1/ a write (any method but GET, HEAD and OPTIONS) must
// carry a non-form Content-Type or HeaderRequestedBy. Read bodies with ReadBody and answer
// errors with WriteError. Call it before Open; it panics on a conflicting pattern, as
// ServeMux does.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddReadyCheck makes GET /readyz answer 503 while check returns an error, reported
// under name (e.g. "inbound listener"). Checks run on every /readyz request, concurrently:
// they must be fast and safe for concurrent use.
func (s *Server) AddReadyCheck(name string, check func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, readyCheck{name, check})
}

// Handler returns the API as an http.Handler, for tests and for serving it elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// Open listens on Options.Address and serves in the background.
func (s *Server) Open() error {
	if s.opt.Store == nil {
		return errors.New("admin: no store; set Options.Store")
	}
	if err := checkLoopback(s.opt.Address, s.opt.AllowNonLoopback); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opened {
		return errors.New("admin: Open called twice")
	}
	ln, err := net.Listen("tcp", s.opt.Address)
	if err != nil {
		return fmt.Errorf("admin: listen on %s: %w; free the port or set admin.address", s.opt.Address, err)
	}
	s.ln = ln
	s.opened = true
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.conns.Add(1)
			}
		},
		ErrorLog: s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.serveErr <- err
	}()
	s.log.Info("admin API listening", "address", ln.Addr().String())
	return nil
}

// Addr returns the address the server listens on, or nil before Open.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops the server: new requests get 503 at once, watch streams end, and in-flight
// requests finish until ctx's deadline or Options.ShutdownTimeout, whichever is first.
// It is safe to call twice; the second call returns the first one's result.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.draining.Store(true)
		s.cancel()
		s.mu.Lock()
		srv := s.srv
		s.mu.Unlock()
		if srv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, s.opt.ShutdownTimeout)
		defer cancel()
		var errs []error
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin: shutdown: %w; in-flight requests were cut off", err), srv.Close())
		}
		errs = append(errs, <-s.serveErr)
		s.closeErr = errors.Join(errs...)
		s.log.Info("admin API stopped")
	})
	return s.closeErr
}

// checkLoopback refuses an address that other hosts could reach, unless allowed.
func checkLoopback(address string, allow bool) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("admin: address %q: %v; want host:port such as 127.0.0.1:7400", address, err)
	}
	if allow {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("admin address %s is not loopback; the admin API has no authentication — bind 127.0.0.1 or set admin.allow_non_loopback = true", address)
}
