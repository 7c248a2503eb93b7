package peersync

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Options configure a Syncer. Zero fields take the defaults written next to them.
type Options struct {
	// Store is the local store; required. Local changes are learnt from its Watch.
	Store WatchStore
	// Logger; nil discards.
	Logger hclog.Logger
	// TracerProvider gives the tracer for the spans of sync rounds that sent deltas and
	// of push-pull exchanges. Nil means no spans.
	TracerProvider trace.TracerProvider
	// Source lists where peers may be; nil means only peers that contact this node.
	Source Source
	// Name is this node's name (node.name); required. The member name in the fleet is
	// Name/replica-id, unique even if two pods share a name.
	Name string
	// Address is the host:port the peer listener binds (TCP and UDP); "" means
	// "0.0.0.0:7403". Port 0 picks a free port (tests).
	Address string
	// Advertise is the host:port other peers reach this node at; "" means the bound
	// address, or a private IP of this host when bound to 0.0.0.0.
	Advertise string
	// Interval is the gossip round; 0 means 200ms.
	Interval time.Duration
	// Fanout is the number of peers pushed to each round; 0 means 3.
	Fanout int
	// PushPullInterval is the anti-entropy period; 0 means 5s.
	PushPullInterval time.Duration
	// DiscoverInterval is how often Source is asked for peers; 0 means 5s.
	DiscoverInterval time.Duration
	// Keyring holds the secret keys (16, 24 or 32 bytes) that encrypt and authenticate
	// peer traffic, the first one used to send; nil means KeyFile.
	Keyring [][]byte
	// KeyFile holds the keys, one per line, base64 (as `consul keygen` prints) or raw;
	// "" with no Keyring means peer traffic is neither encrypted nor authenticated.
	KeyFile string
	// MaxMessageBytes bounds a peer message; 0 means 4 MiB.
	MaxMessageBytes int
	// PruneAfter is how long a departed peer is shown before it is forgotten; 0 means 1h.
	PruneAfter time.Duration
	// MaxPeers bounds the peers tracked and memberlist's members (sync.max_peers); 0
	// means DefaultMaxPeers. A peer past it is refused, counted in
	// ctxprop_sync_refused_peers_total and logged (once a second at most).
	MaxPeers int
	// Retirer folds replicas gone from the fleet into this one; nil means no replica is
	// ever retired. RetireAfter is how long a replica must have been neither alive in
	// membership nor heard from (sync.retire_after); 0 means 1h.
	Retirer     Retirer
	RetireAfter time.Duration
	// UnprovenTTL is how long a peer that has not completed an exchange with this node
	// is kept (Engine.Established); 0 means 30s.
	UnprovenTTL time.Duration
	// TCPTimeout bounds a TCP dial to a peer and the stream written after it (memberlist's
	// TCPTimeout): messages over one UDP packet, memberlist's state exchanges and its
	// fallback probes. Close ends the dials in progress. 0 means 2s.
	TCPTimeout time.Duration
	// DeadMemberHold is how long a dead or departed member keeps its place among
	// MaxPeers, and memberlist gossips about it (its GossipToTheDeadTime); 0 means 30s.
	DeadMemberHold time.Duration
	// PeerMetrics adds series per peer (a "peer" label) to the fleet-wide ones Collect
	// gives (sync.peer_metrics). Off, a fleet of N sidecars exports O(N) replication
	// series, not O(N²) (issue 11); /v1/peers shows each peer either way.
	PeerMetrics bool
	// Now returns wall time; nil means time.Now.
	Now func() time.Time
}

// Syncer replicates the store with the other sidecars over memberlist. It reports its
// peers (Peers, for the admin API's GET /v1/peers) and implements prometheus.Collector.
type Syncer struct {
	opt    Options
	log    hclog.Logger
	tracer trace.Tracer // nil: no spans
	engine *Engine
	keys   [][]byte

	mu sync.Mutex
	ml *memberlist.Memberlist

	// members bounds memberlist's node list and gives the member to send to.
	members *members
	// verify holds new members to ping: one that answers has completed an exchange.
	verify *pingQueue
	logs   throttle

	inbound  chan []byte
	lastSeen atomic.Uint64 // ID of the last store event the watch loop handled
	ctx      context.Context
	cancel   context.CancelFunc
	loops    context.CancelFunc // stops the timers only, before the final flush
	wg       sync.WaitGroup

	retiring retirement

	closeOnce sync.Once
	closeErr  error
}

var _ prometheus.Collector = (*Syncer)(nil)

// New checks opt and loads the keyring. It starts nothing: call Open.
func New(opt Options) (*Syncer, error) {
	if opt.Store == nil {
		return nil, errors.New("peersync: no store")
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	if opt.Address == "" {
		opt.Address = "0.0.0.0:7403"
	}
	if opt.PushPullInterval <= 0 {
		opt.PushPullInterval = 5 * time.Second
	}
	if opt.DiscoverInterval <= 0 {
		opt.DiscoverInterval = 5 * time.Second
	}
	if opt.RetireAfter <= 0 {
		opt.RetireAfter = time.Hour
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MaxPeers <= 0 {
		opt.MaxPeers = DefaultMaxPeers
	}
	if opt.TCPTimeout <= 0 {
		opt.TCPTimeout = 2 * time.Second
	}
	if opt.DeadMemberHold <= 0 {
		opt.DeadMemberHold = 30 * time.Second
	}
	if _, _, err := splitHostPort(opt.Address); err != nil {
		return nil, fmt.Errorf("peersync: sync.address %q: %w", opt.Address, err)
	}
	if opt.Advertise != "" {
		if _, _, err := splitHostPort(opt.Advertise); err != nil {
			return nil, fmt.Errorf("peersync: advertise address %q: %w", opt.Advertise, err)
		}
	}
	keys := opt.Keyring
	if keys == nil && opt.KeyFile != "" {
		var err error
		if keys, err = LoadKeyFile(opt.KeyFile); err != nil {
			return nil, err
		}
	}
	for i, k := range keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("peersync: key %d: %w", i+1, err)
		}
	}
	s := &Syncer{opt: opt, log: opt.Logger, keys: keys, inbound: make(chan []byte, 1024), verify: newPingQueue()}
	if opt.TracerProvider != nil {
		s.tracer = opt.TracerProvider.Tracer("github.com/ctxprop/ctxprop/sync")
	}
	e, err := NewEngine(EngineOptions{
		Name:            fmt.Sprintf("%s/%s", opt.Name, opt.Store.Replica()),
		Store:           opt.Store,
		Transport:       (*mlTransport)(s),
		Logger:          opt.Logger,
		Fanout:          opt.Fanout,
		Interval:        opt.Interval,
		MaxMessageBytes: opt.MaxMessageBytes,
		PruneAfter:      opt.PruneAfter,
		MaxPeers:        opt.MaxPeers,
		UnprovenTTL:     opt.UnprovenTTL,
	})
	if err != nil {
		return nil, err
	}
	if opt.Name == "" {
		return nil, errors.New("peersync: no node name; set node.name in the config")
	}
	s.engine = e
	s.opt.Interval, s.opt.Fanout = e.opt.Interval, e.opt.Fanout
	s.members = newMembers(e.opt.Name, opt.MaxPeers, opt.DeadMemberHold)
	return s, nil
}

// LoadKeyFile reads a keyring file: one key per line, 16, 24 or 32 bytes, base64 (as
// `head -c 32 /dev/urandom | base64` prints) or raw; a line that decodes as base64 to a
// valid key length is read as base64, so prefer base64. Blank lines and lines starting
// with # are skipped. The first key is the one used to send; the others are accepted,
// for key rotation.
func LoadKeyFile(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("peersync: read sync.key_file: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(line)
		if err != nil || memberlist.ValidateKey(key) != nil {
			key = []byte(line)
		}
		if err := memberlist.ValidateKey(key); err != nil {
			return nil, fmt.Errorf("peersync: %s:%d: not a 16, 24 or 32 byte key, raw or base64; generate one with `head -c 32 /dev/urandom | base64`", path, i+1)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("peersync: %s holds no key; put a base64 key on a line or unset sync.key_file", path)
	}
	return keys, nil
}

// Open starts the peer listener, joins the peers the Source lists, and starts the gossip,
// anti-entropy, discovery and receive loops.
func (s *Syncer) Open() error {
	host, port, _ := splitHostPort(s.opt.Address)
	mc := memberlist.DefaultLANConfig()
	mc.Name = s.engine.opt.Name
	mc.BindAddr, mc.BindPort = host, port
	if s.opt.Advertise != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitHostPort(s.opt.Advertise)
	}
	mc.Delegate = (*delegate)(s)
	mc.Events = (*events)(s)
	mc.Alive = (*delegate)(s)
	mc.Ping = (*events)(s)
	mc.GossipToTheDeadTime = s.opt.DeadMemberHold
	mc.EnableCompression = false // messages are deflated when it pays (wire.go)
	mc.TCPTimeout = s.opt.TCPTimeout
	mc.Logger = log.New((*logWriter)(s), "", 0)
	nt, err := newNetTransport(host, port, mc.Logger)
	if err != nil {
		return fmt.Errorf("peersync: listen on sync.address %s: %w", s.opt.Address, err)
	}
	mc.Transport = nt
	if port == 0 {
		// As memberlist does when it makes the transport itself.
		mc.BindPort = nt.GetAutoBindPort()
		mc.AdvertisePort = mc.BindPort
	}
	if len(s.keys) > 0 {
		kr, err := memberlist.NewKeyring(s.keys, s.keys[0])
		if err != nil {
			return errors.Join(fmt.Errorf("peersync: keyring: %w", err), nt.Shutdown())
		}
		mc.Keyring = kr
	} else {
		s.log.Warn("peer traffic is not encrypted or authenticated: any host that reaches sync.address can join the fleet and write contexts, up to sync.max_peers peers; set sync.key_file (the Kubernetes injector sets one by default)",
			"max_peers", s.opt.MaxPeers)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return errors.Join(fmt.Errorf("peersync: start memberlist on sync.address %s: %w", s.opt.Address, err), nt.Shutdown())
	}
	s.mu.Lock()
	s.ml = ml
	s.mu.Unlock()
	s.engine.Open(s.opt.Now)

	s.ctx, s.cancel = context.WithCancel(context.Background())
	var loops context.Context
	loops, s.loops = context.WithCancel(s.ctx)
	// Changes committed before Open reach peers by anti-entropy, not by this watch: Close
	// must not wait for them.
	s.lastSeen.Store(s.opt.Store.LastEventID())
	sub, err := s.opt.Store.Watch(s.ctx, "", 0)
	if err != nil {
		s.cancel()
		err = errors.Join(fmt.Errorf("peersync: watch the store: %w", err), ml.Shutdown())
		s.engine.Close()
		return err
	}
	s.retiring = retirement{started: s.opt.Now(), lastSign: map[crdt.ReplicaID]time.Time{}}
	if s.opt.Retirer != nil {
		s.wg.Add(1)
		go s.retireLoop(loops)
	}
	s.wg.Add(4 + verifiers)
	go s.watchLoop(sub)
	go s.receiveLoop()
	go s.roundLoop(loops)
	go s.discoverLoop(loops)
	for range verifiers {
		go s.verifyLoop(loops)
	}
	s.log.Info("sync open", "member", mc.Name, "address", s.Addr(), "encrypted", len(s.keys) > 0)
	return nil
}

// Addr returns the host:port peers reach this node at.
func (s *Syncer) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ml == nil {
		return ""
	}
	return s.ml.LocalNode().Address()
}

// Ready reports whether the sync layer runs.
func (s *Syncer) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ml == nil {
		return errors.New("peersync: not open")
	}
	return nil
}

// Close pushes the last local deltas to peers (waiting for an acknowledgement until ctx
// ends), leaves the fleet and stops. Safe to call twice.
func (s *Syncer) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		if s.cancel == nil {
			return
		}
		s.loops()
		var errs []error
		// Local changes committed before Close must be in the engine before the flush.
		target := s.opt.Store.LastEventID()
		t := time.NewTicker(10 * time.Millisecond)
		for s.lastSeen.Load() < target && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
		t.Stop()
		if err := s.engine.Flush(ctx, s.opt.Now, 10*time.Millisecond); err != nil {
			errs = append(errs, err)
		}
		s.mu.Lock()
		ml := s.ml
		s.mu.Unlock()
		if err := ml.Leave(time.Second); err != nil {
			errs = append(errs, fmt.Errorf("peersync: leave: %w", err))
		}
		errs = append(errs, ml.Shutdown()) // ends the dials in progress (netTransport)
		s.cancel()
		s.wg.Wait()
		s.engine.Close() // after the loops: nothing is queued any more
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// watchLoop feeds committed store events to the engine: local ones to push, others to
// refresh digests. A subscription dropped for lagging is renewed and followed by a
// push-pull, which repairs whatever was missed.
func (s *Syncer) watchLoop(sub ctxstore.Subscription) {
	defer s.wg.Done()
	replica := s.opt.Store.Replica()
	for {
		for ev := range sub.Events() {
			if ev.Origin == replica {
				s.engine.Local(ev.Context, ev.Delta, s.opt.Now())
			} else {
				s.engine.Changed(ev.Context)
			}
			s.lastSeen.Store(ev.ID)
		}
		if s.ctx.Err() != nil || !sub.Lagged() {
			return
		}
		s.log.Warn("sync fell behind the store's changes; resubscribing, anti-entropy repairs the gap")
		var err error
		if sub, err = s.opt.Store.Watch(s.ctx, "", 0); err != nil {
			return
		}
		s.lastSeen.Store(s.opt.Store.LastEventID())
		s.engine.PushPull()
	}
}

// receiveLoop hands received messages to the engine, one at a time: merges are durable
// commits, and one writer keeps them in arrival order.
func (s *Syncer) receiveLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case data := <-s.inbound:
			now := s.opt.Now()
			if err := s.engine.Handle(s.ctx, data, now); err != nil && !errors.Is(err, errPeerLimit) {
				s.logs.log(s.log, hclog.Warn, "refused", now, "peer message refused", "error", err)
			}
		}
	}
}

func (s *Syncer) roundLoop(ctx context.Context) {
	defer s.wg.Done()
	round := time.NewTicker(s.opt.Interval)
	defer round.Stop()
	pp := time.NewTicker(s.opt.PushPullInterval)
	defer pp.Stop()
	housekeeping := time.NewTicker(time.Minute)
	defer housekeeping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-round.C:
			s.engine.Expire(s.opt.Now())
			start := time.Now()
			if sent := s.engine.Round(s.opt.Now()); sent > 0 && s.tracer != nil {
				// A span only for rounds that sent something: an idle fleet traces nothing.
				_, span := s.tracer.Start(ctx, "sync.round", trace.WithTimestamp(start),
					trace.WithAttributes(attribute.Int("ctxprop.sync.messages", sent)))
				span.End()
			}
		case <-pp.C:
			var span trace.Span
			if s.tracer != nil {
				_, span = s.tracer.Start(ctx, "sync.push_pull")
			}
			s.engine.PushPull()
			if span != nil {
				span.End()
			}
		case <-housekeeping.C:
			now := s.opt.Now()
			s.engine.RefreshDigests(now)
			s.engine.Prune(now)
		}
	}
}

// discoverLoop joins the peers the Source lists that are not alive members, at once and
// every DiscoverInterval: that is also how a partition heals once memberlist has given up
// on the other side.
func (s *Syncer) discoverLoop(ctx context.Context) {
	defer s.wg.Done()
	if s.opt.Source == nil {
		return
	}
	t := time.NewTicker(s.opt.DiscoverInterval)
	defer t.Stop()
	for {
		s.discover(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Syncer) discover(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, s.opt.DiscoverInterval)
	addrs, err := s.opt.Source.Peers(qctx)
	cancel()
	if err != nil {
		s.log.Warn("peer discovery failed; retrying", "error", err, "in", s.opt.DiscoverInterval, "peers_still_listed", len(addrs))
		// The peers listed with an error are still worth joining: the other sources' when
		// one of several fails, and a source's last good list when it is stale (the xDS
		// server unreachable, a DNS hiccup; discovery.ErrStale).
		if len(addrs) == 0 {
			return
		}
	}
	// Not under s.mu: memberlist calls the delegates with its node lock held.
	s.mu.Lock()
	ml := s.ml
	s.mu.Unlock()
	self := ml.LocalNode().Address()
	alive := map[string]bool{self: true, s.opt.Address: true}
	for _, n := range ml.Members() {
		alive[n.Address()] = true
	}
	var join []string
	for _, a := range addrs {
		if !alive[a] {
			join = append(join, a)
		}
	}
	if len(join) == 0 {
		return
	}
	n, err := ml.Join(join)
	if err != nil && n == 0 {
		s.log.Debug("joining peers failed; retrying", "peers", join, "error", err, "in", s.opt.DiscoverInterval)
		return
	}
	s.log.Debug("joined peers", "contacted", n, "listed", len(join))
}

// Peers returns every known peer, sorted by name, for the admin API's GET /v1/peers.
func (s *Syncer) Peers() []ctxstore.PeerStatus { return s.engine.PeerStatuses(s.opt.Now()) }

// Stats returns the engine's counters.
func (s *Syncer) Stats() Stats { return s.engine.Stats() }

// ---------------------------------------------------------------------------------------
// memberlist glue

// mlTransport sends engine messages as memberlist user messages: small ones as a single
// encrypted UDP packet, larger ones over a TCP stream.
type mlTransport Syncer

// maxPacket keeps a message, with memberlist's header, label and encryption overhead, in
// one UDP packet (memberlist's UDPBufferSize is 1400).
const maxPacket = 1200

func (t *mlTransport) Send(peer string, msg []byte) error {
	s := (*Syncer)(t)
	n, _ := s.members.node(peer)
	s.mu.Lock()
	ml := s.ml
	s.mu.Unlock()
	if n == nil || ml == nil {
		return fmt.Errorf("peer %s is not a member", peer)
	}
	if len(msg) <= maxPacket {
		return ml.SendBestEffort(n, msg)
	}
	return ml.SendReliable(n, msg)
}

// delegate receives user messages. memberlist calls NotifyMsg from its network
// goroutines and reuses nothing after it returns, but it must not block: the message is
// queued for receiveLoop, or refused if the queue is full.
type delegate Syncer

func (d *delegate) NodeMeta(int) []byte { return nil }

func (d *delegate) NotifyMsg(b []byte) {
	s := (*Syncer)(d)
	if len(b) > s.engine.opt.MaxMessageBytes {
		s.engine.Refuse("oversized")
		return
	}
	select {
	case s.inbound <- bytes.Clone(b):
	default:
		s.engine.Refuse("overload")
	}
}

// NotifyAlive implements memberlist.AliveDelegate: a name memberlist does not know yet is
// added only while there is room among MaxPeers (members). memberlist calls it with its
// node lock held, for every alive message and every node of a push-pull.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	s := (*Syncer)(d)
	now := s.opt.Now()
	if s.members.admit(n.Name, now) {
		return nil
	}
	s.logs.log(s.log, hclog.Warn, "max_peers", now,
		"member refused: memberlist already lists sync.max_peers members; if the fleet is that large, raise sync.max_peers, otherwise hosts that are not sidecars reach the sync port: set sync.key_file",
		"member", n.Name, "max_peers", s.opt.MaxPeers)
	return errMemberLimit
}

func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *delegate) LocalState(bool) []byte          { return nil }
func (d *delegate) MergeRemoteState([]byte, bool)   {}

// events tells the engine about membership.
type events Syncer

func (e *events) NotifyJoin(n *memberlist.Node) {
	s := (*Syncer)(e)
	now := s.opt.Now()
	s.members.join(n, now)
	if s.engine.SetPeer(n.Name, n.Address(), memberReplica(n.Name), StateAlive, now) && !s.engine.Established(n.Name) {
		s.verify.push(n.Name)
	}
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	s := (*Syncer)(e)
	s.members.leave(n, s.opt.Now())
	state := StateDead
	if n.State == memberlist.StateLeft {
		state = StateLeft
	}
	s.engine.SetPeer(n.Name, n.Address(), memberReplica(n.Name), state, s.opt.Now())
}

// memberReplica reads the replica id out of a member name, name/replica-id in hex; 0 if
// the member is not a sidecar of this version.
func memberReplica(member string) crdt.ReplicaID {
	i := strings.LastIndexByte(member, '/')
	if i < 0 {
		return 0
	}
	r, err := strconv.ParseUint(member[i+1:], 16, 64)
	if err != nil {
		return 0
	}
	return crdt.ReplicaID(r)
}

func (e *events) NotifyUpdate(n *memberlist.Node) { e.NotifyJoin(n) }

// AckPayload implements memberlist.PingDelegate.
func (e *events) AckPayload() []byte { return nil }

// NotifyPingComplete implements memberlist.PingDelegate: a member answered one of
// memberlist's probes at its address, an exchange completed.
func (e *events) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	s := (*Syncer)(e)
	if _, alive := s.members.node(n.Name); alive {
		s.engine.Establish(n.Name, n.Address(), memberReplica(n.Name), s.opt.Now())
	}
}

// verifiers is how many new members are pinged at once; one that does not answer holds
// a verifier for memberlist's ProbeTimeout.
const verifiers = 8

// verifyLoop pings the members queued in s.verify: a member that answers has completed
// an exchange (Engine.Establish) at once, rather than when memberlist's probes come round
// to it, which in a large fleet takes longer than UnprovenTTL. One that never answers is
// forgotten by Engine.Expire.
func (s *Syncer) verifyLoop(ctx context.Context) {
	defer s.wg.Done()
	s.mu.Lock()
	ml := s.ml
	s.mu.Unlock()
	for {
		name, ok := s.verify.pop(ctx.Done())
		if !ok {
			return
		}
		n, alive := s.members.node(name)
		if !alive || s.engine.Established(name) {
			s.verify.done(name)
			continue
		}
		if _, err := ml.Ping(name, &net.UDPAddr{IP: n.Addr, Port: int(n.Port)}); err != nil {
			s.verify.missed(name)
			continue
		}
		s.verify.done(name)
		s.engine.Establish(name, n.Address(), memberReplica(name), s.opt.Now())
	}
}

// logWriter routes memberlist's log lines to hclog and counts the packets and streams
// its keyring refused: memberlist drops them without telling its delegate.
type logWriter Syncer

// Most of its lines are about one packet or one stream, so they are rate limited by kind
// (throttle): its errors, its warnings, and apart from them the refused packets and the
// alive messages NotifyAlive turned away, which a flood would otherwise hide the rest
// behind.
func (w *logWriter) Write(p []byte) (int, error) {
	s := (*Syncer)(w)
	line := strings.TrimSpace(string(p))
	kind := "memberlist"
	switch {
	case strings.Contains(strings.ToLower(line), "decrypt") || strings.Contains(line, "unacceptable label"):
		s.engine.Refuse("unauthenticated")
		kind = "unauthenticated"
	case strings.Contains(line, "alive message"):
		kind = "alive"
	}
	l := s.log.Named("memberlist")
	switch {
	case strings.Contains(line, "[ERR]"):
		s.logs.log(l, hclog.Warn, kind+".err", s.opt.Now(), strings.TrimPrefix(line, "[ERR] memberlist: "))
	case strings.Contains(line, "[WARN]"):
		s.logs.log(l, hclog.Info, kind+".warn", s.opt.Now(), strings.TrimPrefix(line, "[WARN] memberlist: "))
	default:
		l.Debug(line)
	}
	return len(p), nil
}

var _ io.Writer = (*logWriter)(nil)

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// ---------------------------------------------------------------------------------------
// Metrics

var (
	// Fleet-wide: one series each, however many peers.
	descReceived = prometheus.NewDesc("ctxprop_sync_received_bytes_total", "Replication bytes received from peers.", nil, nil)
	descSent     = prometheus.NewDesc("ctxprop_sync_sent_bytes_total", "Replication bytes sent to peers.", nil, nil)
	descFailed   = prometheus.NewDesc("ctxprop_sync_errors_total", "Failed exchanges with peers.", nil, nil)
	descLagPeers = prometheus.NewDesc("ctxprop_sync_lag_seconds", "Age of the oldest local change a peer has not acknowledged, across the alive and suspect peers at the time of the scrape: quantiles over peers, _count the peers, _sum their lags.", nil, nil)
	descLagMax   = prometheus.NewDesc("ctxprop_sync_lag_max_seconds", "Largest age of the oldest local change a peer has not acknowledged, over the alive and suspect peers.", nil, nil)
	// Per peer, only with sync.peer_metrics; bounded by sync.max_peers, like the peers.
	descBytesIn  = prometheus.NewDesc("ctxprop_sync_peer_received_bytes_total", "Replication bytes received from a peer.", []string{"peer"}, nil)
	descBytesOut = prometheus.NewDesc("ctxprop_sync_peer_sent_bytes_total", "Replication bytes sent to a peer.", []string{"peer"}, nil)
	descErrors   = prometheus.NewDesc("ctxprop_sync_peer_errors_total", "Failed exchanges with a peer.", []string{"peer"}, nil)
	descLag      = prometheus.NewDesc("ctxprop_sync_peer_lag_seconds", "Age of the oldest local change a peer has not acknowledged.", []string{"peer"}, nil)

	descPeers        = prometheus.NewDesc("ctxprop_sync_peers", "Known peers by membership state.", []string{"state"}, nil)
	descRefused      = prometheus.NewDesc("ctxprop_sync_refused_messages_total", "Peer messages refused, nothing merged, by reason.", []string{"reason"}, nil)
	descBuffered     = prometheus.NewDesc("ctxprop_sync_buffered_groups", "Delta groups waiting in the gossip buffer.", nil, nil)
	descRefusedPeers = prometheus.NewDesc("ctxprop_sync_refused_peers_total", "New peers refused because sync.max_peers were known already, by where: membership (memberlist's node list, fed by alive messages and joins) or engine (the peers replication tracks; mostly senders that membership does not name).", []string{"source"}, nil)
	descForgotten    = prometheus.NewDesc("ctxprop_sync_forgotten_peers_total", "Peers forgotten because they completed no exchange with this node in time.", nil, nil)
	descRetired      = prometheus.NewDesc("ctxprop_sync_retired_replicas_total", "Replicas gone from the fleet for sync.retire_after that this sidecar folded into its own (SPEC §7).", nil, nil)
	// The per-peer send queues (issue 11), as fleet-wide sums: no series per peer.
	descQueued    = prometheus.NewDesc("ctxprop_sync_send_queue_messages", "Messages waiting in the per-peer send queues.", nil, nil)
	descQueuedB   = prometheus.NewDesc("ctxprop_sync_send_queue_bytes", "Bytes waiting in the per-peer send queues or being sent.", nil, nil)
	descSending   = prometheus.NewDesc("ctxprop_sync_send_queue_senders", "Peers with a send in progress or waiting.", nil, nil)
	descDropped   = prometheus.NewDesc("ctxprop_sync_send_dropped_messages_total", "Messages dropped because a slow or unreachable peer's send queue was full, by kind; deltas are sent again, the rest repaired by acknowledgement timeouts and anti-entropy.", []string{"kind"}, nil)
	descCoalesced = prometheus.NewDesc("ctxprop_sync_send_coalesced_deltas_total", "Deltas joined into one already waiting in the send queue of the same peer.", nil, nil)
)

// lagQuantiles are the quantiles of ctxprop_sync_lag_seconds.
var lagQuantiles = []float64{0.5, 0.9, 0.99}

// Describe implements prometheus.Collector.
func (s *Syncer) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReceived, descSent, descFailed, descLagPeers, descLagMax,
		descBytesIn, descBytesOut, descErrors, descLag, descPeers, descRefused, descBuffered, descRefusedPeers, descForgotten, descRetired,
		descQueued, descQueuedB, descSending, descDropped, descCoalesced} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Syncer) Collect(ch chan<- prometheus.Metric) {
	states := map[string]float64{StateAlive: 0, StateSuspect: 0, StateDead: 0, StateLeft: 0}
	var lags []float64 // of the peers replication still reaches, or tries to
	for _, p := range s.Peers() {
		if s.opt.PeerMetrics {
			ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(p.BytesIn), p.Name)
			ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(p.BytesOut), p.Name)
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(p.Errors), p.Name)
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, p.Lag.Seconds(), p.Name)
		}
		if p.State == StateAlive || p.State == StateSuspect {
			lags = append(lags, p.Lag.Seconds())
		}
		states[p.State]++
	}
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, n, st)
	}
	slices.Sort(lags)
	quantiles := make(map[float64]float64, len(lagQuantiles))
	var sum, most float64
	for _, l := range lags {
		sum += l
		most = max(most, l)
	}
	for _, q := range lagQuantiles {
		if len(lags) > 0 {
			// Nearest rank: the smallest lag at least q of the peers are within.
			quantiles[q] = lags[max(0, int(math.Ceil(q*float64(len(lags))))-1)]
		} else {
			quantiles[q] = math.NaN()
		}
	}
	ch <- prometheus.MustNewConstSummary(descLagPeers, uint64(len(lags)), sum, quantiles)
	ch <- prometheus.MustNewConstMetric(descLagMax, prometheus.GaugeValue, most)
	st := s.engine.Stats()
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(st.BytesIn))
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(st.BytesOut))
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(st.Errors))
	for _, reason := range []string{"malformed", "oversized", "invalid", "unauthenticated", "overload", "max_peers"} {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.Refused[reason]), reason)
	}
	ch <- prometheus.MustNewConstMetric(descBuffered, prometheus.GaugeValue, float64(st.Buffered))
	ch <- prometheus.MustNewConstMetric(descRefusedPeers, prometheus.CounterValue, float64(s.members.refusedCount()), "membership")
	ch <- prometheus.MustNewConstMetric(descRefusedPeers, prometheus.CounterValue, float64(st.RefusedPeers), "engine")
	ch <- prometheus.MustNewConstMetric(descForgotten, prometheus.CounterValue, float64(st.Forgotten))
	ch <- prometheus.MustNewConstMetric(descRetired, prometheus.CounterValue, float64(s.retiring.retired.Load()))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(st.Queued))
	ch <- prometheus.MustNewConstMetric(descQueuedB, prometheus.GaugeValue, float64(st.QueuedBytes))
	ch <- prometheus.MustNewConstMetric(descSending, prometheus.GaugeValue, float64(st.Sending))
	for _, k := range []kind{kindDelta, kindAck, kindRoot, kindList, kindDigests, kindStates} {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped[k.String()]), k.String())
	}
	ch <- prometheus.MustNewConstMetric(descCoalesced, prometheus.CounterValue, float64(st.Coalesced))
}
