package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The relay needs of the store only its replication side, in small interfaces written in
// ctxstore's types: the same method sets as package sync's State, Merger and Changes, so
// that *localstore.Store implements them as it is, and every replication backend keeps one
// contract towards the store (ctxstore/replicatest, which the relay runs in
// TestRelay_ReplicationContract). Their methods are called concurrently and may block on
// disk I/O.

// State gives the state of the contexts, to compare with the KV bucket.
type State interface {
	// Names returns every context held.
	Names() []string
	// Encoded returns the canonical encoding of a context's state; ok false if absent.
	Encoded(name string) (data []byte, ok bool)
}

// Merger joins the deltas and states of other clusters into this replica.
type Merger interface {
	// Replica returns this replica's id: the origin of its local changes.
	Replica() crdt.ReplicaID
	// MergeAll joins deltas[i] into context names[i] durably, all or nothing, records the
	// changes as made by origin, and reports which deltas changed the state. An error
	// about the input itself (a bad name, a timestamp too far ahead) wraps
	// ctxstore.ErrInvalid: such a message is terminated, not delivered again.
	MergeAll(ctx context.Context, origin crdt.ReplicaID, names []string, deltas []*crdt.Context) (changed []bool, err error)
}

// Changes follows the store's committed changes: the relay learns the local deltas to
// publish, and the contexts to compare with the bucket, from it.
type Changes interface {
	// Watch subscribes to committed changes, local and merged, of context name ("" for
	// all) after event ID after (0: only new ones), until ctx ends. The relay watches
	// all contexts from now on. An event's Delta must be the very pointer given to
	// MergeAll when the change is that one delta: the relay recognises the deltas it
	// merged itself by it, so as not to publish them back. When Events closes because
	// the relay fell behind (Lagged), it subscribes again and compares every context
	// with the KV bucket.
	Watch(ctx context.Context, name string, after uint64) (ctxstore.Subscription, error)
}

// Store is what the relay needs: the state, the merges and the changes.
type Store interface {
	State
	Merger
	Changes
}

// Options configure a Relay. Zero fields take the defaults written next to them.
type Options struct {
	Store Store // required
	// Logger; nil discards.
	Logger hclog.Logger
	// URLs of the NATS servers; required.
	URLs []string
	// Cluster names this cluster: the subject its deltas go to and the durable consumer
	// its sidecars share. Letters, digits, - and _; required.
	Cluster string
	// SubjectPrefix starts every subject; "" means "ctxprop". Deltas go to
	// <SubjectPrefix>.delta.<Cluster>.
	SubjectPrefix string
	// Stream holds the deltas; "" means "CTXPROP_DELTAS".
	Stream string
	// Bucket is the KV bucket of full states; "" means "ctxprop_state". The bucket
	// <Bucket>_replicas holds when each replica was last alive.
	Bucket string
	// PresenceTTL is how long a replica counts as alive after its last heartbeat in the
	// replicas bucket (sync.retire_after); 0 means 1h. Every sidecar writes its own every
	// quarter of it, at most every minute. AliveReplicas reports them.
	PresenceTTL time.Duration
	// Retention is how long the stream keeps a delta (its MaxAge); 0 means 24h. A cluster
	// cut off for longer catches up from the bucket.
	Retention time.Duration
	// StateInterval is how often the contexts changed here are compared with the bucket
	// and written to it; 0 means 2s.
	StateInterval time.Duration
	// FlushInterval is how long local deltas are joined before they are published; 0
	// means 20ms.
	FlushInterval time.Duration
	// AckWait is how long a delivered message may stay unacknowledged before JetStream
	// delivers it again (to any sidecar of the cluster); 0 means 10s.
	AckWait time.Duration
	// MaxInFlight bounds the messages delivered to this cluster's sidecars and not yet
	// acknowledged (the consumer's MaxAckPending), and the publishes awaiting an
	// acknowledgement; 0 means 1024.
	MaxInFlight int
	// MaxBatch is how many stream messages one merge (one store commit) takes at most; 0
	// means 256.
	MaxBatch int
	// Auth and TLS. CredsFile is a NATS credentials file (JWT and nkey seed); NKeyFile
	// an nkey seed file; TokenFile a file holding a token; User with PasswordFile a user
	// and a file holding the password. At most one of them.
	CredsFile, NKeyFile, TokenFile, User, PasswordFile string
	// TLS: CAFile verifies the server (default: the system roots, TLS only if the URL
	// says tls://); CertFile and KeyFile are a client certificate; ServerName overrides
	// the name the server's certificate must hold.
	CAFile, CertFile, KeyFile, ServerName string
	// Now returns wall time; nil means time.Now.
	Now func() time.Time
}

// Relay publishes local deltas to JetStream and merges the other clusters'. It
// implements prometheus.Collector.
type Relay struct {
	opt     Options
	log     hclog.Logger
	connOpt []nats.Option
	subject string // this cluster's delta subject
	filter  string // every cluster's delta subjects

	nc         atomic.Pointer[nats.Conn]
	connWarned atomic.Int64          // unix ns of the last connection failure logged
	links      atomic.Pointer[links] // nil until the stream, bucket and consumer exist

	presenceMu   sync.Mutex
	presence     map[crdt.ReplicaID]time.Time // last heartbeat of each replica, as the bucket stored it
	presenceRead bool                         // the replicas bucket was read once

	mu           sync.Mutex
	pending      map[string]*crdt.Context // local deltas to publish, joined per context
	pendingSince time.Time                // when the first of pending was committed
	inflight     int                      // contexts of the publish awaiting acknowledgement
	oldest       time.Time                // when the oldest delta not acknowledged was committed
	dirty        map[string]struct{}      // contexts to compare with the bucket
	echo         map[*crdt.Context]struct{}
	// reconnected is signalled on every reconnect to NATS: the bucket watchers do not
	// survive a server restart, so consume returns and everything is set up again.
	reconnected chan struct{}

	m metrics

	ctx       context.Context
	cancel    context.CancelFunc
	stopWatch context.CancelFunc // ends the store watch alone
	watchWG   sync.WaitGroup     // the watch loop; Close waits for it before the last flush
	wg        sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// links are the JetStream handles once set up.
type links struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	replicas jetstream.KeyValue
	cons     jetstream.Consumer
	maxMsg   int // largest message NATS takes (max_payload), less room for headers
}

// stateOrigin labels the changes merged from the KV bucket: not this replica, so the
// gossip engine does not push these full states (every sidecar reads the bucket itself)
// and the relay does not publish them.
const stateOrigin crdt.ReplicaID = 0

// New checks opt and reads the credential files. It starts nothing: call Open.
func New(opt Options) (*Relay, error) {
	if opt.Store == nil {
		return nil, errors.New("relay: no store")
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	if len(opt.URLs) == 0 {
		return nil, errors.New("relay: no NATS URL; set relay.urls")
	}
	if err := CheckToken(opt.Cluster); err != nil {
		return nil, fmt.Errorf("relay: relay.cluster %q: %w", opt.Cluster, err)
	}
	if opt.SubjectPrefix == "" {
		opt.SubjectPrefix = "ctxprop"
	}
	if opt.Stream == "" {
		opt.Stream = "CTXPROP_DELTAS"
	}
	if opt.Bucket == "" {
		opt.Bucket = "ctxprop_state"
	}
	if opt.Retention <= 0 {
		opt.Retention = 24 * time.Hour
	}
	if opt.StateInterval <= 0 {
		opt.StateInterval = 2 * time.Second
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = 20 * time.Millisecond
	}
	if opt.AckWait <= 0 {
		opt.AckWait = 10 * time.Second
	}
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = 1024
	}
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 256
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.PresenceTTL <= 0 {
		opt.PresenceTTL = time.Hour
	}
	r := &Relay{
		presence:    map[crdt.ReplicaID]time.Time{},
		opt:         opt,
		log:         opt.Logger,
		subject:     opt.SubjectPrefix + ".delta." + opt.Cluster,
		filter:      opt.SubjectPrefix + ".delta.>",
		pending:     map[string]*crdt.Context{},
		dirty:       map[string]struct{}{},
		echo:        map[*crdt.Context]struct{}{},
		reconnected: make(chan struct{}, 1),
	}
	var err error
	if r.connOpt, err = connectOptions(opt); err != nil {
		return nil, err
	}
	return r, nil
}

// CheckToken checks a name used as one subject token and a consumer name.
func CheckToken(s string) error {
	if s == "" {
		return errors.New("is empty")
	}
	if len(s) > 64 {
		return errors.New("is longer than 64 bytes")
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("holds %q; use letters, digits, - and _", c)
		}
	}
	return nil
}

// connectOptions turns the auth and TLS settings into nats options, reading the files now
// so that a wrong path stops the start with its name.
func connectOptions(opt Options) ([]nats.Option, error) {
	o := []nats.Option{nats.Name("ctxprop-relay " + opt.Cluster)}
	auth := 0
	for _, f := range []string{opt.CredsFile, opt.NKeyFile, opt.TokenFile, opt.User} {
		if f != "" {
			auth++
		}
	}
	if auth > 1 {
		return nil, errors.New("relay: set only one of relay.creds_file, relay.nkey_file, relay.token_file and relay.user")
	}
	readSecret := func(attr, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("relay: read relay.%s: %w", attr, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("relay: relay.%s %s is empty", attr, path)
		}
		return s, nil
	}
	switch {
	case opt.CredsFile != "":
		if _, err := os.Stat(opt.CredsFile); err != nil {
			return nil, fmt.Errorf("relay: relay.creds_file: %w", err)
		}
		o = append(o, nats.UserCredentials(opt.CredsFile))
	case opt.NKeyFile != "":
		no, err := nats.NkeyOptionFromSeed(opt.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("relay: relay.nkey_file: %w", err)
		}
		o = append(o, no)
	case opt.TokenFile != "":
		tok, err := readSecret("token_file", opt.TokenFile)
		if err != nil {
			return nil, err
		}
		o = append(o, nats.Token(tok))
	case opt.User != "":
		if opt.PasswordFile == "" {
			return nil, errors.New("relay: relay.user is set without relay.password_file")
		}
		pw, err := readSecret("password_file", opt.PasswordFile)
		if err != nil {
			return nil, err
		}
		o = append(o, nats.UserInfo(opt.User, pw))
	case opt.PasswordFile != "":
		return nil, errors.New("relay: relay.password_file is set without relay.user")
	}
	if opt.CAFile != "" || opt.CertFile != "" || opt.ServerName != "" {
		tc := &tls.Config{ServerName: opt.ServerName, MinVersion: tls.VersionTLS12}
		if opt.CAFile != "" {
			pem, err := os.ReadFile(opt.CAFile)
			if err != nil {
				return nil, fmt.Errorf("relay: read relay.tls_ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("relay: relay.tls_ca_file %s holds no PEM certificate", opt.CAFile)
			}
		}
		if opt.CertFile != "" || opt.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(opt.CertFile, opt.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("relay: relay.tls_cert_file and relay.tls_key_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		o = append(o, nats.Secure(tc))
	}
	return o, nil
}

// Open connects to NATS in the background: the sidecar starts, and its local writes are
// kept to publish, while NATS is unreachable. It starts following the store at once.
func (r *Relay) Open() error {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	var watchCtx context.Context
	watchCtx, r.stopWatch = context.WithCancel(r.ctx)
	sub, err := r.opt.Store.Watch(watchCtx, "", 0)
	if err != nil {
		r.cancel()
		return fmt.Errorf("relay: watch the store: %w", err)
	}
	// What the store held before is compared with the bucket: changes this sidecar made
	// and was stopped (or killed) before publishing reach the other clusters that way.
	r.markAllDirty()
	opts := append([]nats.Option{
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250 * time.Millisecond),
		// A server cut off without a reset (a partition) is noticed within 15s, not the
		// client's default 4 minutes: the deltas then wait for the reconnect.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				r.log.Warn("disconnected from NATS; reconnecting, local deltas are kept to publish", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			r.log.Info("reconnected to NATS", "server", c.ConnectedUrlRedacted())
			select {
			case r.reconnected <- struct{}{}:
			default:
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			// Tried every reconnect wait while NATS is away: log only what says more than
			// "unreachable", such as a refused secret or certificate.
			r.m.errors.Add(1)
			now := r.opt.Now().UnixNano()
			if last := r.connWarned.Load(); now-last < int64(30*time.Second) || !r.connWarned.CompareAndSwap(last, now) {
				return // once every 30s at most
			}
			if err != nil && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrDeadlineExceeded) {
				r.log.Warn("relay: cannot connect to NATS; retrying. Check relay.urls and the credential and TLS settings", "error", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.m.errors.Add(1)
			r.log.Warn("NATS error", "error", err)
		}),
	}, r.connOpt...)
	nc, err := nats.Connect(strings.Join(r.opt.URLs, ","), opts...)
	if err != nil {
		r.cancel()
		sub.Close()
		return fmt.Errorf("relay: connect to relay.urls %v: %w", r.opt.URLs, err)
	}
	r.nc.Store(nc)
	r.watchWG.Add(1)
	go r.watchLoop(watchCtx, sub)
	r.wg.Add(4)
	go r.setupLoop()
	go r.flushLoop()
	go r.stateLoop()
	go r.presenceLoop()
	r.log.Info("relay open", "urls", r.opt.URLs, "cluster", r.opt.Cluster, "subject", r.subject, "stream", r.opt.Stream, "bucket", r.opt.Bucket)
	return nil
}

// Ready reports whether the stream, the bucket and the consumer are set up.
func (r *Relay) Ready() error {
	if r.links.Load() == nil {
		return errors.New("relay: not connected to NATS JetStream yet")
	}
	return nil
}

// Close stops following the store, publishes the deltas still held and compares the
// contexts changed since the last pass with the bucket, until ctx ends; then it stops
// consuming and closes the connection. Safe to call twice.
func (r *Relay) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		if r.cancel == nil {
			return
		}
		var errs []error
		// The subscription still holds the changes committed before; the loop reads them
		// to the end.
		r.stopWatch()
		r.watchWG.Wait()
		if l := r.links.Load(); l != nil {
			for r.pendingCount() > 0 && ctx.Err() == nil {
				if err := r.flush(ctx, l); err != nil {
					errs = append(errs, err)
					break
				}
			}
			if err := r.pushStates(ctx, l); err != nil {
				errs = append(errs, err)
			}
		}
		if n := r.pendingCount(); n > 0 {
			errs = append(errs, fmt.Errorf("relay: %d contexts' deltas were not published before the close deadline; the other clusters get them from the KV bucket once another sidecar of this cluster writes it", n))
		}
		r.cancel()
		r.wg.Wait()
		if nc := r.nc.Load(); nc != nil {
			nc.Close()
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// pendingCount is how many contexts have deltas waiting to be published.
func (r *Relay) pendingCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

func (r *Relay) markAllDirty() {
	names := r.opt.Store.Names()
	r.mu.Lock()
	for _, n := range names {
		r.dirty[n] = struct{}{}
	}
	r.mu.Unlock()
}

// watchLoop records the store's changes: local ones to publish, every one to compare
// with the bucket.
func (r *Relay) watchLoop(ctx context.Context, sub ctxstore.Subscription) {
	defer r.watchWG.Done()
	self := r.opt.Store.Replica()
	for {
		for c := range sub.Events() {
			r.mu.Lock()
			r.dirty[c.Context] = struct{}{}
			_, echo := r.echo[c.Delta]
			delete(r.echo, c.Delta)
			if c.Origin == self && !echo {
				if d := r.pending[c.Context]; d != nil {
					d.Join(c.Delta)
				} else {
					r.pending[c.Context] = c.Delta.Clone()
					if len(r.pending) == 1 {
						r.pendingSince = r.opt.Now()
					}
					if r.oldest.IsZero() {
						r.oldest = r.pendingSince
					}
				}
			}
			r.mu.Unlock()
		}
		if ctx.Err() != nil || !sub.Lagged() {
			return // stopped, or the store closed
		}
		// Fell behind: what was missed is in the store; the bucket pass repairs it.
		r.log.Warn("relay fell behind the store's changes; resubscribing, the KV bucket pass repairs the gap")
		r.m.errors.Add(1)
		sub.Close()
		var err error
		if sub, err = r.opt.Store.Watch(ctx, "", 0); err != nil {
			return
		}
		r.mu.Lock()
		clear(r.echo)
		r.mu.Unlock()
		r.markAllDirty()
	}
}

// setupLoop creates (or finds) the stream, the bucket and the consumer, retrying until
// NATS answers, then consumes the stream and watches the bucket.
func (r *Relay) setupLoop() {
	defer r.wg.Done()
	wait := 250 * time.Millisecond
	for {
		l, err := r.setup()
		if err == nil {
			r.links.Store(l)
			r.log.Info("relay connected to JetStream", "stream", r.opt.Stream, "bucket", r.opt.Bucket, "consumer", r.opt.Cluster, "max_message_bytes", l.maxMsg)
			r.consume(l)
			if r.ctx.Err() != nil {
				return
			}
			// Reconnected, or the consumer or the stream went away (NATS lost its
			// store): set them up again. The links stay: publishing goes on meanwhile.
			continue
		}
		if r.ctx.Err() != nil {
			return
		}
		r.m.errors.Add(1)
		r.log.Warn("relay: cannot set up the JetStream stream, bucket or consumer; retrying", "error", err, "in", wait)
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (r *Relay) setup() (*links, error) {
	nc := r.nc.Load()
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(r.opt.MaxInFlight))
	if err != nil {
		return nil, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      r.opt.Stream,
		Subjects:  []string{r.filter},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
		MaxAge:    r.opt.Retention,
	}); err != nil {
		return nil, fmt.Errorf("stream %s: %w", r.opt.Stream, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      r.opt.Bucket,
		Description: "ctxprop: the full state of each context, joined by every cluster",
		History:     1,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w", r.opt.Bucket, err)
	}
	replicas, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      r.opt.Bucket + "_replicas",
		Description: "ctxprop: when each replica was last alive, so that no cluster retires another's live replicas",
		History:     1,
		Storage:     jetstream.FileStorage,
		TTL:         r.opt.PresenceTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s_replicas: %w", r.opt.Bucket, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, r.opt.Stream, jetstream.ConsumerConfig{
		Durable:       r.opt.Cluster,
		Description:   "ctxprop: the deltas cluster " + r.opt.Cluster + " merges",
		FilterSubject: r.filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.opt.AckWait,
		MaxAckPending: r.opt.MaxInFlight,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", r.opt.Cluster, err)
	}
	// Headers, subject and reply take a few hundred bytes of max_payload.
	maxMsg := int(nc.MaxPayload()) - 1024
	if maxMsg < 4096 {
		return nil, fmt.Errorf("the server's max_payload is %d bytes; the relay needs at least 5 KiB", nc.MaxPayload())
	}
	return &links{js: js, kv: kv, replicas: replicas, cons: cons, maxMsg: maxMsg}, nil
}

// consume merges the stream's messages until the relay closes or the consumer is lost.
func (r *Relay) consume(l *links) {
	msgs := make(chan jetstream.Msg, r.opt.MaxBatch)
	lost := make(chan struct{}, 1)
	stop := make(chan struct{}) // closed when consume returns: the handler must not block then
	cc, err := l.cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-stop:
			_ = m.Nak()
		}
	}, jetstream.PullMaxMessages(r.opt.MaxBatch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			select {
			case lost <- struct{}{}:
			default:
			}
		}
		r.log.Debug("relay consumer", "error", err)
	}))
	if err != nil {
		r.m.errors.Add(1)
		r.log.Warn("relay: cannot consume the stream; setting it up again", "error", err)
		return
	}
	defer cc.Stop()
	defer func() {
		close(stop)
		// Delivered, not merged: deliver them again at once rather than after AckWait.
		for {
			select {
			case m := <-msgs:
				_ = m.Nak()
			default:
				return
			}
		}
	}()
	watcher, err := l.kv.WatchAll(r.ctx, jetstream.IgnoreDeletes())
	if err != nil {
		r.m.errors.Add(1)
		r.log.Warn("relay: cannot watch the KV bucket; setting it up again", "error", err)
		return
	}
	defer watcher.Stop()
	states := watcher.Updates()
	pw, err := l.replicas.WatchAll(r.ctx, jetstream.IgnoreDeletes())
	if err != nil {
		r.m.errors.Add(1)
		r.log.Warn("relay: cannot watch the replicas bucket; setting it up again", "error", err)
		return
	}
	defer pw.Stop()
	beats := pw.Updates()
	for {
		select {
		case e, ok := <-beats:
			if !ok {
				return
			}
			r.heard(e)
		case <-r.ctx.Done():
			return
		case <-lost:
			r.log.Warn("relay: the consumer or the stream is gone from NATS; setting them up again")
			return
		case <-r.reconnected:
			r.log.Debug("relay: reconnected; watching the buckets again")
			return
		case m := <-msgs:
			batch := []jetstream.Msg{m}
		drain:
			for len(batch) < r.opt.MaxBatch {
				select {
				case m := <-msgs:
					batch = append(batch, m)
				default:
					break drain
				}
			}
			r.apply(batch)
		case e, ok := <-states:
			if !ok {
				return
			}
			if e == nil {
				r.log.Debug("relay read the KV bucket")
				continue
			}
			batch := []jetstream.KeyValueEntry{e}
		drainStates:
			for len(batch) < r.opt.MaxBatch {
				select {
				case e, ok := <-states:
					if !ok {
						break drainStates
					}
					if e != nil {
						batch = append(batch, e)
					}
				default:
					break drainStates
				}
			}
			r.applyStates(batch)
		}
	}
}

// apply merges the deltas of other clusters' messages in one commit and acknowledges the
// messages once it is durable. A message that cannot be decoded or merged is terminated
// and counted; one the store could not merge for another reason is delivered again.
func (r *Relay) apply(msgs []jetstream.Msg) {
	var names []string
	var deltas []*crdt.Context
	var ok []jetstream.Msg
	for _, m := range msgs {
		if md, err := m.Metadata(); err == nil {
			if md.NumDelivered > 1 {
				r.m.redelivered.Add(1)
			}
			r.m.consumerPending.Store(md.NumPending)
			r.m.lastApplied.Store(md.Timestamp.UnixNano())
		}
		if m.Subject() == r.subject {
			// This cluster's own deltas: its gossip has them.
			r.ack(m)
			continue
		}
		groups, err := decodeBatch(m.Data())
		if err != nil {
			r.m.refused.Add(1)
			r.log.Warn("relay: refused a message; terminated, nothing merged", "subject", m.Subject(), "error", err)
			_ = m.Term()
			continue
		}
		r.m.receivedBytes.Add(uint64(len(m.Data())))
		for _, g := range groups {
			names = append(names, g.name)
			deltas = append(deltas, g.delta)
		}
		ok = append(ok, m)
	}
	if len(ok) == 0 {
		return
	}
	if err := r.merge(names, deltas); err != nil {
		if len(ok) > 1 {
			// One message may be the bad one: merge them one by one.
			for _, m := range ok {
				r.apply([]jetstream.Msg{m})
			}
			return
		}
		r.m.errors.Add(1)
		if errors.Is(err, ctxstore.ErrInvalid) {
			r.m.refused.Add(1)
			r.log.Warn("relay: the store refused a message's deltas; terminated", "subject", ok[0].Subject(), "error", err)
			_ = ok[0].Term()
			return
		}
		r.log.Warn("relay: merging a message failed; it is delivered again", "subject", ok[0].Subject(), "error", err)
		_ = ok[0].NakWithDelay(time.Second)
		return
	}
	r.m.applied.Add(uint64(len(deltas)))
	for _, m := range ok {
		r.ack(m)
	}
}

// maxEcho bounds the merged deltas remembered so as not to publish them back.
const maxEcho = 1 << 16

// merge joins deltas from the stream, recorded as this replica's own changes so that
// gossip pushes them through the cluster; the watch loop knows them by pointer and does
// not publish them again.
func (r *Relay) merge(names []string, deltas []*crdt.Context) error {
	r.mu.Lock()
	if len(r.echo) > maxEcho {
		// Deltas joined with local writes in one commit reach the watch as a new delta,
		// so their entries are never removed; forgetting them only publishes a few
		// merged deltas back, which changes nothing where they arrive.
		clear(r.echo)
	}
	for _, d := range deltas {
		r.echo[d] = struct{}{}
	}
	r.mu.Unlock()
	changed, err := r.opt.Store.MergeAll(r.ctx, r.opt.Store.Replica(), names, deltas)
	r.mu.Lock()
	for i, d := range deltas {
		if err != nil || !changed[i] {
			delete(r.echo, d) // no change, no event to recognise
		}
	}
	r.mu.Unlock()
	return err
}

func (r *Relay) ack(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		r.m.errors.Add(1)
		r.log.Debug("relay: ack failed; the message is delivered again and merged again, which changes nothing", "error", err)
	}
}

// applyStates merges states written to the bucket.
func (r *Relay) applyStates(entries []jetstream.KeyValueEntry) {
	var names []string
	var states []*crdt.Context
	for _, e := range entries {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		name, err := decodeKey(e.Key())
		if err != nil {
			r.m.refused.Add(1)
			r.log.Warn("relay: a KV key is not a context this relay wrote; ignored", "key", e.Key())
			continue
		}
		c := &crdt.Context{}
		if err := c.UnmarshalBinary(e.Value()); err != nil {
			r.m.refused.Add(1)
			r.log.Warn("relay: a KV state does not decode; ignored", "context", name, "error", err)
			continue
		}
		names = append(names, name)
		states = append(states, c)
	}
	if len(names) == 0 {
		return
	}
	changed, err := r.opt.Store.MergeAll(r.ctx, stateOrigin, names, states)
	if err != nil {
		if len(names) > 1 {
			for i := range names {
				if _, err := r.opt.Store.MergeAll(r.ctx, stateOrigin, names[i:i+1], states[i:i+1]); err != nil {
					r.m.errors.Add(1)
					r.log.Warn("relay: merging a KV state failed", "context", names[i], "error", err)
				}
			}
			return
		}
		r.m.errors.Add(1)
		r.log.Warn("relay: merging a KV state failed", "context", names[0], "error", err)
		return
	}
	for _, c := range changed {
		if c {
			r.m.statesApplied.Add(1)
		}
	}
}

// flushLoop publishes the local deltas every FlushInterval.
func (r *Relay) flushLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.opt.FlushInterval)
	defer t.Stop()
	wait := time.Duration(0)
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		l := r.links.Load()
		if l == nil || r.pendingCount() == 0 {
			continue
		}
		if err := r.flush(r.ctx, l); err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.m.errors.Add(1)
			wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
			r.log.Warn("relay: publishing failed; the deltas are kept and published again", "error", err, "in", wait)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		wait = 0
	}
}

// flush publishes what pending holds, in messages under the server's max_payload, and
// waits for the stream's acknowledgements. What was not acknowledged is joined back into
// pending.
func (r *Relay) flush(ctx context.Context, l *links) error {
	r.mu.Lock()
	taken := r.pending
	r.pending = map[string]*crdt.Context{}
	r.pendingSince = time.Time{}
	r.inflight += len(taken)
	r.mu.Unlock()
	if len(taken) == 0 {
		return nil
	}
	defer func() {
		r.mu.Lock()
		r.inflight -= len(taken)
		r.mu.Unlock()
	}()
	var batches [][]group
	var cur []group
	size := 0
	for name, d := range taken {
		data, err := d.MarshalBinary()
		if err != nil {
			return fmt.Errorf("relay: encode context %q: %w", name, err)
		}
		g := group{name: name, delta: d, data: data}
		if groupSize(g)+16 > l.maxMsg {
			// Dropped from the stream, kept in the store: it replicates inside the
			// cluster; loud, since the other clusters do not get it this way.
			r.m.oversized.Add(1)
			r.log.Error("relay: a context's delta is larger than the NATS server's max_payload; not published. Raise max_payload in the NATS server config", "context", name, "bytes", len(data), "max_payload", l.maxMsg+1024)
			continue
		}
		if size+groupSize(g) > l.maxMsg && len(cur) > 0 {
			batches = append(batches, cur)
			cur, size = nil, 0
		}
		cur = append(cur, g)
		size += groupSize(g)
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, len(batches))
	var errs []error
	for i, b := range batches {
		data := encodeBatch(b)
		f, err := l.js.PublishAsync(r.subject, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		futures[i] = f
		r.m.publishedBytes.Add(uint64(len(data)))
	}
	failed := map[string]*crdt.Context{}
	for i, f := range futures {
		ok := false
		if f != nil {
			select {
			case <-f.Ok():
				ok = true
			case err := <-f.Err():
				errs = append(errs, err)
			case <-pctx.Done():
				errs = append(errs, fmt.Errorf("no acknowledgement from the stream: %w", pctx.Err()))
			}
		}
		if ok {
			r.m.published.Add(1)
			r.m.publishedDeltas.Add(uint64(len(batches[i])))
			continue
		}
		for _, g := range batches[i] {
			failed[g.name] = g.delta
		}
	}
	r.mu.Lock()
	if len(failed) > 0 {
		for name, d := range failed {
			if p := r.pending[name]; p != nil {
				d.Join(p)
			}
			r.pending[name] = d
		}
		r.pendingSince = r.oldest
	} else if r.inflight == len(taken) {
		r.oldest = r.pendingSince // zero when nothing waits
	}
	r.mu.Unlock()
	return errors.Join(errs...)
}

// stateLoop compares the contexts changed here with the bucket every StateInterval.
func (r *Relay) stateLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.opt.StateInterval)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if l := r.links.Load(); l != nil {
			if err := r.pushStates(r.ctx, l); err != nil && r.ctx.Err() == nil {
				r.m.errors.Add(1)
				r.log.Warn("relay: writing states to the KV bucket failed; retried next pass", "error", err)
			}
		}
	}
}

// pushStates writes to the bucket the join of its entry and the local state of each dirty
// context, when the local state adds anything, with the entry's revision as a
// compare-and-set. A context that fails stays dirty.
func (r *Relay) pushStates(ctx context.Context, l *links) error {
	r.mu.Lock()
	names := make([]string, 0, len(r.dirty))
	for n := range r.dirty {
		names = append(names, n)
	}
	clear(r.dirty)
	r.mu.Unlock()
	var errs []error
	for i, name := range names {
		if err := r.pushState(ctx, l, name); err != nil {
			r.mu.Lock()
			for _, n := range names[i:] {
				r.dirty[n] = struct{}{}
			}
			r.mu.Unlock()
			return errors.Join(append(errs, fmt.Errorf("context %q: %w", name, err))...)
		}
	}
	return nil
}

func (r *Relay) pushState(ctx context.Context, l *links, name string) error {
	key := encodeKey(name)
	for attempt := 0; ; attempt++ {
		local, ok := r.opt.Store.Encoded(name)
		if !ok {
			return nil
		}
		mine := &crdt.Context{}
		if err := mine.UnmarshalBinary(local); err != nil {
			return err
		}
		// Each round gets its own deadline; ctx, the caller's, decides whether to go on.
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		e, err := l.kv.Get(rctx, key)
		var rev uint64
		data := local
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			cancel()
			return err
		default:
			rev = e.Revision()
			theirs := &crdt.Context{}
			if err := theirs.UnmarshalBinary(e.Value()); err != nil {
				r.log.Warn("relay: a KV state does not decode; overwriting it with this sidecar's", "context", name, "error", err)
			} else if !theirs.Join(mine) {
				cancel()
				return nil // the bucket holds everything this sidecar has
			} else if data, err = theirs.MarshalBinary(); err != nil {
				cancel()
				return err
			}
		}
		if len(data)+len(key)+256 > l.maxMsg {
			cancel()
			r.m.oversized.Add(1)
			r.log.Error("relay: a context's state is larger than the NATS server's max_payload; not written to the KV bucket. Raise max_payload in the NATS server config", "context", name, "bytes", len(data), "max_payload", l.maxMsg+1024)
			return nil
		}
		if rev == 0 {
			_, err = l.kv.Create(rctx, key, data)
		} else {
			_, err = l.kv.Update(rctx, key, data, rev)
		}
		cancel()
		if err == nil {
			r.m.statesWritten.Add(1)
			r.m.stateBytes.Add(uint64(len(data)))
			return nil
		}
		if !lostRace(err) || ctx.Err() != nil {
			return err
		}
		r.m.stateConflicts.Add(1) // another sidecar wrote first: read, join and try again
		if attempt >= maxStateAttempts {
			return fmt.Errorf("lost the compare-and-set race on the KV bucket %d times in a row (other sidecars keep writing this context): %w", attempt+1, err)
		}
		// The sidecars that lost one race would otherwise meet again at once: wait a
		// little, at random, longer with every loss.
		select {
		case <-time.After(time.Duration(1+rand.IntN(5*(attempt+1))) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxStateAttempts bounds the read-join-write rounds of one context's KV state. Each
// loss means another sidecar's write got in, which the next round joins; with a few
// sidecars writing one context at once, the backoff settles them in a few rounds.
const maxStateAttempts = 20

// lostRace reports whether a KV write failed because another writer got in first: the
// key was created meanwhile, or its revision moved on.
func lostRace(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// encodeKey makes a KV key of a context name: KV keys allow fewer bytes than names.
func encodeKey(name string) string { return "c." + base64.RawURLEncoding.EncodeToString([]byte(name)) }

func decodeKey(key string) (string, error) {
	s, ok := strings.CutPrefix(key, "c.")
	if !ok {
		return "", errors.New("no c. prefix")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err
}

// presenceLoop writes this replica's heartbeat to the replicas bucket.
func (r *Relay) presenceLoop() {
	defer r.wg.Done()
	every := min(max(r.opt.PresenceTTL/4, 100*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	key := fmt.Sprintf("r.%016x", uint64(r.opt.Store.Replica()))
	for {
		if l := r.links.Load(); l != nil {
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			if _, err := l.replicas.Put(ctx, key, []byte(r.opt.Cluster)); err != nil && r.ctx.Err() == nil {
				r.m.errors.Add(1)
				r.log.Debug("relay: heartbeat to the replicas bucket failed", "error", err)
			}
			cancel()
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// heard records a heartbeat; nil marks the end of the bucket's first reading.
func (r *Relay) heard(e jetstream.KeyValueEntry) {
	r.presenceMu.Lock()
	defer r.presenceMu.Unlock()
	if e == nil {
		r.presenceRead = true
		return
	}
	var id uint64
	if _, err := fmt.Sscanf(e.Key(), "r.%016x", &id); err != nil {
		return
	}
	if t := e.Created(); t.After(r.presence[crdt.ReplicaID(id)]) {
		r.presence[crdt.ReplicaID(id)] = t
	}
}

// AliveReplicas returns the replicas, of every cluster, whose last heartbeat is less than
// PresenceTTL old; ok is false until the replicas bucket has been read once. A replica
// alive in another cluster is never alive in this cluster's gossip membership: the gossip
// layer must not take it for gone (cmd/sidecar keeps these out of retirement).
func (r *Relay) AliveReplicas() (alive map[crdt.ReplicaID]bool, ok bool) {
	now := r.opt.Now()
	r.presenceMu.Lock()
	defer r.presenceMu.Unlock()
	if !r.presenceRead {
		return nil, false
	}
	alive = make(map[crdt.ReplicaID]bool, len(r.presence))
	for id, t := range r.presence {
		if now.Sub(t) < r.opt.PresenceTTL {
			alive[id] = true
		} else {
			delete(r.presence, id)
		}
	}
	return alive, true
}
