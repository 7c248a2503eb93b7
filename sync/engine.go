package peersync

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/hashicorp/go-hclog"
)

// Transport carries engine messages to peers named by their node name. Send must be safe
// for concurrent use; it may block up to the transport's own timeout (once the engine is
// open, only the sender of that one peer waits). An error means the message was not
// delivered; no error does not promise delivery (the engine relies on acknowledgements,
// not on the transport).
type Transport interface {
	Send(peer string, msg []byte) error
}

// Peer states, as memberlist reports them.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// EngineOptions configure an Engine. Zero fields take the defaults written next to them.
type EngineOptions struct {
	// Name is this node's name, unique in the fleet. Required.
	Name string
	// Store holds the replicated state. Required.
	Store Store
	// Transport sends messages. Required.
	Transport Transport
	// Logger; nil discards.
	Logger hclog.Logger
	// Fanout is the number of peers each round pushes to; 0 means 3.
	Fanout int
	// Interval is the round length; it sets how long a push waits for its ack before it is
	// sent again (4 rounds). 0 means 200ms.
	Interval time.Duration
	// MaxMessageBytes bounds a message, compressed or not, both ways; 0 means 4 MiB.
	MaxMessageBytes int
	// PruneAfter is how long a dead or departed peer is remembered; 0 means 1h.
	PruneAfter time.Duration
	// MaxPeers bounds the peers tracked (sync.max_peers); 0 means DefaultMaxPeers. A new
	// peer past it takes the place of the peer dead or departed the longest or, if
	// membership names it, of a stranger (a peer known only from its messages); when
	// there is none it is refused, counted in Stats.RefusedPeers and logged.
	MaxPeers int
	// UnprovenTTL is how long Expire keeps a peer that has not completed an exchange
	// with this node (see Established); 0 means 30s.
	UnprovenTTL time.Duration
	// DigestRefresh is how long a cached context digest is trusted: changes the engine is
	// not told about (the store's sweeper compacting) are noticed within it. 0 means 1m.
	DigestRefresh time.Duration
	// TriggerGap spaces the push-pulls started by peers coming alive; 0 means 1s.
	TriggerGap time.Duration
	// Rand picks peers; nil means a random seed. The simulator passes a seeded one.
	Rand *rand.Rand
	// QueueMessages and QueueBytes bound the messages waiting to be sent to one peer once
	// the engine is open (a queue with none waiting takes one message of any size);
	// QueueTotalBytes bounds the bytes waiting or being sent to every peer. What does not
	// fit is joined (deltas) or dropped, and counted (Stats.Dropped). 0 means 64, 1 MiB
	// and 32 MiB, and at least MaxMessageBytes and 8×MaxMessageBytes for the bytes.
	QueueMessages, QueueBytes, QueueTotalBytes int
}

// DefaultMaxPeers is sync.max_peers's default: a fleet of a thousand sidecars, and a bound
// on what hosts that are not sidecars can make a sidecar remember (issue 10).
const DefaultMaxPeers = 1024

// Engine is the dissemination logic: what to send to whom, and what to do with what
// arrives. It reads no clock: every method takes the current instant. Until Open it has
// no goroutines and sends in the calling goroutine (the simulator); once open, every peer
// has its own send queue and sender, so that no call waits on a send (issue 11). It is
// safe for concurrent use; store I/O and sends happen outside its lock.
type Engine struct {
	opt     EngineOptions
	log     hclog.Logger
	replica crdt.ReplicaID

	mu        sync.Mutex
	rng       *rand.Rand
	seq       uint64 // last buffer sequence number
	pending   map[string]*crdt.Context
	pendingAt map[string]time.Time
	buf       []*entry
	marks     []mark // local entries, for lag
	peers     map[string]*peer
	names     map[crdt.ReplicaID]string // peer name by replica id
	digests   map[string]uint64
	digestsAt time.Time
	triggered time.Time
	rejoined  []string
	rejoins   int
	refused   map[string]uint64
	// refusedPeers counts peers refused at MaxPeers, forgotten those dropped by Expire.
	refusedPeers, forgotten uint64
	logs                    throttle
	// gone sums the traffic and errors of the peers forgotten, so that the fleet-wide
	// totals of Stats never go down (drop).
	gone traffic
	// out holds the per-peer send queues from Open; nil before: sends are made by the
	// caller. now is Open's clock, for the log lines of the senders.
	out atomic.Pointer[outbox]
	now func() time.Time
}

// entry is one delta group in the buffer: the join of one context's deltas of one round
// (local) or one received group that changed the state.
type entry struct {
	seq    uint64
	name   string
	delta  *crdt.Context
	data   []byte
	from   string // "" for local
	rounds int
}

// mark records when a local entry's first change was made.
type mark struct {
	seq uint64
	at  time.Time
}

type peer struct {
	name, addr  string
	replica     crdt.ReplicaID
	state       string
	since       time.Time // of state
	acked       uint64    // every buffer entry up to it is known to the peer
	sent        uint64    // pushed up to it, ack pending
	sentAt      time.Time
	lastContact time.Time
	bytesIn     uint64
	bytesOut    uint64
	errors      uint64
	lastError   string
	// member: membership (SetPeer) named the peer; otherwise it is a stranger, known
	// only from its messages, that this node cannot address.
	member bool
	// established: the peer answered, at its member address, a message this node sent
	// it (see Established). seen is when it was first tracked.
	established bool
	seen        time.Time
	// awaiting holds a bit per kind of message that would answer one sent to the peer.
	awaiting uint8
}

// answer is the kind of message that answers one of kind k, 0 if none does: an ack a
// delta push, and each step of a push-pull the one before.
func answer(k kind) kind {
	switch k {
	case kindDelta:
		return kindAck
	case kindRoot:
		return kindList
	case kindList:
		return kindDigests
	case kindDigests:
		return kindStates
	}
	return 0
}

// NewEngine returns an engine for opt; it starts nothing.
func NewEngine(opt EngineOptions) (*Engine, error) {
	switch {
	case opt.Name == "":
		return nil, errors.New("peersync: no node name; set node.name in the config")
	case opt.Store == nil:
		return nil, errors.New("peersync: no store")
	case opt.Transport == nil:
		return nil, errors.New("peersync: no transport")
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	if opt.Fanout <= 0 {
		opt.Fanout = 3
	}
	if opt.Interval <= 0 {
		opt.Interval = 200 * time.Millisecond
	}
	if opt.MaxMessageBytes <= 0 {
		opt.MaxMessageBytes = 4 << 20
	}
	if opt.PruneAfter <= 0 {
		opt.PruneAfter = time.Hour
	}
	if opt.TriggerGap <= 0 {
		opt.TriggerGap = time.Second
	}
	if opt.DigestRefresh <= 0 {
		opt.DigestRefresh = time.Minute
	}
	if opt.MaxPeers <= 0 {
		opt.MaxPeers = DefaultMaxPeers
	}
	if opt.UnprovenTTL <= 0 {
		opt.UnprovenTTL = 30 * time.Second
	}
	if opt.QueueMessages <= 0 {
		opt.QueueMessages = 64
	}
	if opt.QueueBytes <= 0 {
		opt.QueueBytes = max(1<<20, opt.MaxMessageBytes)
	}
	if opt.QueueTotalBytes <= 0 {
		opt.QueueTotalBytes = max(32<<20, 8*opt.MaxMessageBytes)
	}
	rng := opt.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Engine{
		opt:       opt,
		log:       opt.Logger,
		replica:   opt.Store.Replica(),
		rng:       rng,
		pending:   make(map[string]*crdt.Context),
		pendingAt: make(map[string]time.Time),
		peers:     make(map[string]*peer),
		names:     make(map[crdt.ReplicaID]string),
		digests:   make(map[string]uint64),
		refused:   make(map[string]uint64),
	}, nil
}

// ---------------------------------------------------------------------------------------
// Membership

// SetPeer records what membership says about a peer. Peers that come alive (first seen,
// back after a partition or a restart) get push-pulls soon: in the next rounds, one per
// TriggerGap, up to three, each with a random one of them. That is the full-state catch-up
// of a new or returning replica and the repair of a healed partition; spacing them keeps a
// fleet that sees hundreds of peers join from starting hundreds of exchanges, and the
// repeats cover a lost message.
//
// replica is the peer's replica id, which names it in messages; 0 if unknown.
//
// A peer not tracked yet is tracked only if it is alive or suspect (there is nothing to
// remember of one that is gone) and MaxPeers allows; SetPeer reports whether it is.
func (e *Engine) SetPeer(name, addr string, replica crdt.ReplicaID, state string, now time.Time) bool {
	if name == e.opt.Name || (replica != 0 && replica == e.replica) {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.peers[name]
	wasAlive := p != nil && p.state == StateAlive
	if p == nil {
		if state != StateAlive && state != StateSuspect {
			return false
		}
		if old := e.names[replica]; replica != 0 && old != "" && old != name {
			e.drop(old) // known by its id before membership named it: its place is this one's
		}
		if !e.admit(name, true, now) {
			return false
		}
		p = &peer{name: name, seen: now}
		e.peers[name] = p
	}
	p.member = true
	if replica != 0 && p.replica != replica {
		if p.replica != 0 {
			// A new replica under the same name lost its file: nothing it acked holds,
			// and it has not answered anything yet.
			delete(e.names, p.replica)
			p.acked, p.sent = 0, 0
			p.established, p.awaiting, p.seen = false, 0, now
		}
		if old := e.names[replica]; old != "" && old != name {
			e.drop(old) // known by its id before membership named it
		}
		p.replica = replica
		e.names[replica] = name
	}
	if addr != "" {
		p.addr = addr
	}
	if p.state != state {
		p.state, p.since = state, now
	}
	if state == StateAlive && !wasAlive {
		if len(e.rejoined) < 64 && !slices.Contains(e.rejoined, name) {
			e.rejoined = append(e.rejoined, name)
		}
		e.rejoins = 3
	}
	return true
}

// admit makes room for one more peer, a member or a stranger, if MaxPeers requires it; it
// reports false, counts and logs if there is none. e.mu held.
//
// Only peers whose loss costs nothing are given up: the one dead or departed the longest
// (it is only shown in /v1/peers), and for a member, the stranger seen first (membership
// is bounded too, strangers are not sent to). An alive member or an established peer is
// never pushed out by a newcomer: a flood of forged identities cannot evict the fleet.
func (e *Engine) admit(name string, member bool, now time.Time) bool {
	if len(e.peers) < e.opt.MaxPeers {
		return true
	}
	var gone, stranger *peer
	for _, p := range e.peers {
		switch {
		case p.state == StateDead || p.state == StateLeft:
			if gone == nil || p.since.Before(gone.since) {
				gone = p
			}
		case !p.member && !p.established:
			if stranger == nil || p.seen.Before(stranger.seen) {
				stranger = p
			}
		}
	}
	switch {
	case gone != nil:
		e.drop(gone.name)
		return true
	case member && stranger != nil:
		e.drop(stranger.name)
		return true
	}
	e.refusedPeers++
	e.logs.log(e.log, hclog.Warn, "max_peers", now,
		"peer refused: this sidecar already tracks sync.max_peers peers; if the fleet is that large, raise sync.max_peers, otherwise hosts that are not sidecars reach the sync port: set sync.key_file",
		"peer", name, "max_peers", e.opt.MaxPeers)
	return false
}

// drop forgets a peer; e.mu held.
func (e *Engine) drop(name string) {
	p := e.peers[name]
	if p == nil {
		return
	}
	e.gone.add(p)
	delete(e.peers, name)
	if e.names[p.replica] == name {
		delete(e.names, p.replica)
	}
}

// Established reports whether a peer has completed an exchange with this node: it
// answered, at its member address, a message this node sent it — an ack of a delta push,
// the next step of a push-pull (the list answering a root, the digests answering a list,
// the states answering digests), or a membership probe (Establish). Only such a peer is
// known to be reachable where membership says and to speak the protocol: anyone who can
// send a packet can claim a name or a replica id, only a peer can answer.
func (e *Engine) Established(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.peers[name]
	return p != nil && p.established
}

// Establish records that a member answered a membership probe at addr. A member Expire
// forgot for not answering in time is tracked again, if MaxPeers allows.
func (e *Engine) Establish(name, addr string, replica crdt.ReplicaID, now time.Time) {
	e.mu.Lock()
	p := e.peers[name]
	e.mu.Unlock()
	if p == nil && !e.SetPeer(name, addr, replica, StateAlive, now) {
		return
	}
	e.mu.Lock()
	if p := e.peers[name]; p != nil {
		p.established = true
	}
	e.mu.Unlock()
}

// Expire forgets the peers that have not completed an exchange with this node within
// UnprovenTTL of being first tracked (see Established). A forged alive message or a
// message from a made-up replica id then costs a place among MaxPeers for that long, not
// for good. A member forgotten so is tracked again when it answers (Establish, or
// membership reporting it alive again).
func (e *Engine) Expire(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, p := range e.peers {
		if !p.established && now.Sub(p.seen) > e.opt.UnprovenTTL {
			e.drop(name)
			e.forgotten++
			e.log.Debug("peer forgotten: no exchange completed", "peer", name, "member", p.member, "after", e.opt.UnprovenTTL)
		}
	}
}

// triggered returns the peer to push-pull with because peers came alive, "" if none is
// due; e.mu held.
func (e *Engine) triggeredPushPull(now time.Time) string {
	if e.rejoins == 0 || now.Sub(e.triggered) < e.opt.TriggerGap {
		return ""
	}
	var alive []string
	for _, name := range e.rejoined {
		if p := e.peers[name]; p != nil && p.state == StateAlive {
			alive = append(alive, name)
		}
	}
	e.rejoined = alive
	if len(alive) == 0 {
		e.rejoins = 0
		return ""
	}
	e.rejoins--
	e.triggered = now
	if e.rejoins == 0 {
		defer func() { e.rejoined = e.rejoined[:0] }()
	}
	return alive[e.rng.IntN(len(alive))]
}

// Prune forgets peers dead or departed for longer than PruneAfter.
func (e *Engine) Prune(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, p := range e.peers {
		if (p.state == StateDead || p.state == StateLeft) && now.Sub(p.since) > e.opt.PruneAfter {
			e.drop(name)
			e.log.Debug("peer pruned", "peer", name, "state", p.state, "since", p.since)
		}
	}
}

// ---------------------------------------------------------------------------------------
// Local changes and rounds

// Local records a committed local delta of context name. It is joined with the other
// deltas of the context until the next round.
func (e *Engine) Local(name string, delta *crdt.Context, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.digests, name)
	if d := e.pending[name]; d != nil {
		d.Join(delta)
		return
	}
	e.pending[name] = delta.Clone()
	e.pendingAt[name] = now
}

// Changed drops the cached digest of a context changed by someone else than the engine.
func (e *Engine) Changed(name string) {
	e.mu.Lock()
	delete(e.digests, name)
	e.mu.Unlock()
}

type outgoing struct {
	to  string
	msg *message
}

// Round runs one gossip round: it turns this round's local deltas into buffer entries,
// pushes to Fanout random live peers what each has not acknowledged and did not send, and
// ages the buffer.
func (e *Engine) Round(now time.Time) (sent int) {
	e.mu.Lock()
	e.fold()
	alive := e.alive()
	var out []outgoing
	for _, p := range e.pick(alive, e.opt.Fanout) {
		if m := e.pushTo(p, now); m != nil {
			out = append(out, outgoing{p.name, m})
		}
	}
	e.age(alive)
	pp := e.triggeredPushPull(now)
	e.mu.Unlock()
	e.sendAll(out)
	if pp != "" {
		e.pushPullWith(pp)
	}
	return len(out)
}

// pushTo builds the delta message for p, nil if p has everything.
func (e *Engine) pushTo(p *peer, now time.Time) *message {
	from := p.acked
	if p.sent > p.acked && now.Sub(p.sentAt) < 4*e.opt.Interval {
		from = p.sent // the interval up to sent is in flight
	}
	groups := e.collect(from, p.name)
	if len(groups) == 0 {
		return nil
	}
	p.sent, p.sentAt = e.seq, now
	return &message{kind: kindDelta, base: from, seq: e.seq, groups: groups}
}

// fold turns the pending local deltas into buffer entries.
func (e *Engine) fold() {
	if len(e.pending) == 0 {
		return
	}
	names := make([]string, 0, len(e.pending))
	for name := range e.pending {
		names = append(names, name)
	}
	slices.Sort(names) // deterministic for the simulator
	for _, name := range names {
		d := e.pending[name]
		data, err := d.MarshalBinary()
		if err != nil {
			e.log.Error("cannot encode a local delta; it will reach peers by anti-entropy", "context", name, "error", err)
			continue
		}
		e.seq++
		e.buf = append(e.buf, &entry{seq: e.seq, name: name, delta: d, data: data})
		e.marks = append(e.marks, mark{e.seq, e.pendingAt[name]})
	}
	if over := len(e.marks) - 4096; over > 0 {
		e.marks = slices.Delete(e.marks, 0, over)
	}
	clear(e.pending)
	clear(e.pendingAt)
}

// collect joins, per context, the entries after seq from that did not come from peer to.
func (e *Engine) collect(from uint64, to string) []group {
	var groups []group
	index := map[string]int{}
	multi := map[string]bool{}
	for _, en := range e.buf {
		if en.seq <= from || en.from == to {
			continue
		}
		i, ok := index[en.name]
		if !ok {
			index[en.name] = len(groups)
			groups = append(groups, group{name: en.name, ctx: en.delta, data: en.data})
			continue
		}
		if !multi[en.name] {
			groups[i].ctx = groups[i].ctx.Clone()
			multi[en.name] = true
		}
		groups[i].ctx.Join(en.delta)
	}
	for i, g := range groups {
		if multi[g.name] {
			data, err := g.ctx.MarshalBinary()
			if err != nil {
				continue
			}
			groups[i].data = data
		}
	}
	return groups
}

// retransmitRounds is how many rounds an entry stays in the buffer: each node pushes an
// entry to about ln(n)+5 peers, so that the chance a node of n never hears of it is
// about e^-5/n (anti-entropy catches that one).
func (e *Engine) retransmitRounds(n int) int {
	sends := math.Log(float64(n+1)) + 5
	return max(2, int(math.Ceil(sends/float64(e.opt.Fanout))))
}

func (e *Engine) age(alive []*peer) {
	limit := e.retransmitRounds(len(alive))
	if len(alive) <= e.opt.Fanout {
		// Every round reaches every peer: hold entries until all acknowledged, or long
		// enough for several resends (a peer paused or cut off catches up by push-pull).
		limit = 20
	}
	minAcked := uint64(math.MaxUint64)
	for _, p := range alive {
		minAcked = min(minAcked, p.acked)
	}
	kept := e.buf[:0]
	for _, en := range e.buf {
		en.rounds++
		if en.rounds >= limit || (len(alive) > 0 && en.seq <= minAcked) {
			continue
		}
		kept = append(kept, en)
	}
	clear(e.buf[len(kept):])
	e.buf = kept
}

func (e *Engine) alive() []*peer {
	var out []*peer
	for _, p := range e.peers {
		// A stranger cannot be sent to: membership has no address for it.
		if p.state == StateAlive && p.member {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *peer) int { return strings.Compare(a.name, b.name) })
	return out
}

// pick returns k of peers at random.
func (e *Engine) pick(peers []*peer, k int) []*peer {
	if len(peers) <= k {
		return peers
	}
	out := slices.Clone(peers)
	for i := 0; i < k; i++ {
		j := i + e.rng.IntN(len(out)-i)
		out[i], out[j] = out[j], out[i]
	}
	return out[:k]
}

// ---------------------------------------------------------------------------------------
// Anti-entropy

// PushPull starts a digest comparison with one random live peer.
func (e *Engine) PushPull() {
	e.mu.Lock()
	alive := e.alive()
	var name string
	if ps := e.pick(alive, 1); len(ps) == 1 {
		name = ps[0].name
	}
	e.mu.Unlock()
	if name != "" {
		e.pushPullWith(name)
	}
}

func (e *Engine) pushPullWith(name string) {
	e.mu.Lock()
	mine := e.digestsLocked()
	m := &message{kind: kindRoot, seq: e.seq, root: rootOf(mine), contexts: len(mine)}
	e.mu.Unlock()
	e.sendAll([]outgoing{{name, m}})
}

// A push-pull compares, in turn: one root digest over every context; if the roots differ,
// the digests of buckets of contexts (by a hash of the name); then the digest of every
// context in the buckets that differ; then exchanges the states that differ. The bucket
// step keeps a comparison of many contexts, most of them equal (workflow contexts left
// to expire), from sending every context's digest: it costs the buckets, 8 bytes each,
// and the contexts of the buckets that differ.

// maxBuckets bounds the buckets of a push-pull (32 KiB of bucket digests).
const maxBuckets = 4096

// bucketCount is how many buckets a node holding n contexts compares them in: about 16
// contexts per bucket, a power of two from 1 to maxBuckets.
func bucketCount(n int) int {
	c := 1
	for c < maxBuckets && c*16 < n {
		c <<= 1
	}
	return c
}

// bucketOf is the bucket of a context name among count (a power of two).
func bucketOf(name string, count int) int {
	return int(fnv1a(fnvOffset, name) & uint64(count-1))
}

// itemHash digests one context's name and state digest (FNV-1a of the name, then of the
// digest's 8 little-endian bytes); roots and buckets XOR them, so they do not depend on
// order or on the number of buckets.
func itemHash(d digest) uint64 {
	h := fnv1a(fnvOffset, d.name)
	for i := range 8 {
		h = (h ^ uint64(byte(d.sum>>(8*i)))) * fnvPrime
	}
	return h
}

// FNV-1a, 64 bits, written out: a push-pull hashes every context name once or twice,
// and hash/fnv would allocate its state and a copy of each name.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv1a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

// digestsLocked returns the digest of every context held; e.mu held.
func (e *Engine) digestsLocked() []digest {
	names := e.opt.Store.Names()
	out := make([]digest, 0, len(names))
	for _, name := range names {
		sum, ok := e.digests[name]
		if !ok {
			data, held := e.opt.Store.Encoded(name)
			if !held {
				continue
			}
			h := fnv.New64a()
			h.Write(data)
			sum = h.Sum64()
			e.digests[name] = sum
		}
		out = append(out, digest{name, sum})
	}
	return out
}

// rootOf digests every context of a node.
func rootOf(mine []digest) uint64 {
	var r uint64
	for _, d := range mine {
		r ^= itemHash(d)
	}
	return r
}

// buckets digests the contexts of each of count buckets.
func (e *Engine) buckets(mine []digest, count int) []uint64 {
	out := make([]uint64, count)
	for _, d := range mine {
		out[bucketOf(d.name, count)] ^= itemHash(d)
	}
	return out
}

// RefreshDigests drops the digest cache if it is older than DigestRefresh.
func (e *Engine) RefreshDigests(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Sub(e.digestsAt) > e.opt.DigestRefresh {
		clear(e.digests)
		e.digestsAt = now
	}
}

// ---------------------------------------------------------------------------------------
// Receiving

// Handle processes one message from a peer. A message that fails to decode, is too large
// or that the store refuses is counted as refused, nothing of it merged, and the error
// returned.
func (e *Engine) Handle(ctx context.Context, data []byte, now time.Time) error {
	m, err := decode(data, e.opt.MaxMessageBytes)
	if err != nil {
		reason := "malformed"
		if errors.Is(err, errOversized) {
			reason = "oversized"
		}
		e.Refuse(reason)
		return err
	}
	if m.replica == e.replica {
		return nil // our own message looped back by a source listing this node
	}
	e.mu.Lock()
	m.from = e.names[m.replica]
	p := e.peers[m.from]
	if p == nil {
		// Membership has not told us of it yet: a stranger until it does. Without a
		// keyring anyone can make up a replica id, so it takes a place among MaxPeers,
		// and Expire forgets it unless membership names it.
		m.from = m.replica.String()
		if !e.admit(m.from, false, now) {
			e.refused["max_peers"]++
			e.mu.Unlock()
			return fmt.Errorf("%w: from replica %s", errPeerLimit, m.replica)
		}
		p = &peer{name: m.from, replica: m.replica, state: StateAlive, since: now, seen: now}
		e.peers[m.from] = p
		e.names[m.replica] = m.from
	}
	if p.member && p.awaiting&(1<<m.kind) != 0 {
		p.established = true
	}
	p.lastContact = now
	p.bytesIn += uint64(len(data))
	e.mu.Unlock()

	switch m.kind {
	case kindDelta:
		return e.handleDelta(ctx, m)
	case kindAck:
		e.mu.Lock()
		if m.base <= p.acked && m.seq > p.acked {
			p.acked = m.seq
			p.sent = max(p.sent, p.acked)
		}
		e.mu.Unlock()
	case kindRoot:
		e.mu.Lock()
		reply := &message{kind: kindList, seq: m.seq}
		seq := e.seq
		mine := e.digestsLocked()
		if rootOf(mine) == m.root {
			reply.equal = true
			p.acked = max(p.acked, seq)
		} else {
			// Buckets for the larger side, so that neither sends a huge bucket.
			reply.sums = e.buckets(mine, bucketCount(max(len(mine), m.contexts)))
		}
		e.mu.Unlock()
		e.sendAll([]outgoing{{m.from, reply}})
	case kindList:
		return e.handleList(m, p)
	case kindDigests:
		e.handleDigests(m)
	case kindStates:
		return e.handleStates(ctx, m)
	}
	return nil
}

func (e *Engine) handleDelta(ctx context.Context, m *message) error {
	changed, err := e.merge(ctx, m)
	if err != nil {
		return err
	}
	e.mu.Lock()
	for i, g := range m.groups {
		if changed[i] {
			e.add(g, m.from)
		}
	}
	e.mu.Unlock()
	e.sendAll([]outgoing{{m.from, &message{kind: kindAck, base: m.base, seq: m.seq}}})
	return nil
}

// merge joins the groups of m into the store, all or nothing.
func (e *Engine) merge(ctx context.Context, m *message) ([]bool, error) {
	if len(m.groups) == 0 {
		return nil, nil
	}
	names := make([]string, len(m.groups))
	deltas := make([]*crdt.Context, len(m.groups))
	for i, g := range m.groups {
		names[i], deltas[i] = g.name, g.ctx
	}
	changed, err := e.opt.Store.MergeAll(ctx, m.replica, names, deltas)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, name := range names {
		delete(e.digests, name)
	}
	if err != nil {
		if errors.Is(err, ctxstore.ErrInvalid) {
			e.refused["invalid"]++
		}
		e.fail(m.from, err)
		return nil, fmt.Errorf("merge %s message from %s: %w", m.kind, m.from, err)
	}
	return changed, nil
}

// add puts a received group that changed the state into the buffer, to be forwarded.
func (e *Engine) add(g group, from string) {
	e.seq++
	e.buf = append(e.buf, &entry{seq: e.seq, name: g.name, delta: g.ctx, data: g.data, from: from})
}

// handleList answers the bucket digests of a peer that found our roots differ with the
// digests of our contexts in the buckets that differ (digestPieces).
func (e *Engine) handleList(m *message, p *peer) error {
	e.mu.Lock()
	if m.equal {
		p.acked = max(p.acked, m.seq)
		e.mu.Unlock()
		return nil
	}
	count := len(m.sums)
	var differ []int
	for i, sum := range e.buckets(e.digestsLocked(), count) {
		if sum != m.sums[i] {
			differ = append(differ, i)
		}
	}
	e.mu.Unlock()
	if len(differ) == 0 {
		return nil // changed since the root was sent: the next push-pull looks again
	}
	e.sendAll([]outgoing{{m.from, &message{kind: kindDigests, seq: m.seq, count: count, bucketIDs: differ, lazy: true}}})
	return nil
}

// digestPieces sends, through send, the digests of our contexts in the buckets of m (a
// lazy digests message), in messages well under the size limit, read when they are sent:
// there may be a hundred thousand of them, and a slow peer's queue holds only the bucket
// numbers. It stops when send reports false.
func (e *Engine) digestPieces(m *message, send func(*message) bool) {
	count := m.count
	byBucket := make(map[int][]digest, len(m.bucketIDs))
	for _, b := range m.bucketIDs {
		byBucket[b] = nil
	}
	e.mu.Lock()
	for _, d := range e.digestsLocked() {
		b := bucketOf(d.name, count)
		if list, ok := byBucket[b]; ok {
			byBucket[b] = append(list, d)
		}
	}
	e.mu.Unlock()
	// A bucket too big for one message (the peer chose few buckets for many contexts)
	// is split too: the peer then sends a few states we hold already, never too few.
	cur := &message{kind: kindDigests, replica: m.replica, seq: m.seq, count: count}
	size := 0
	for _, b := range m.bucketIDs {
		cur.bucketIDs = append(cur.bucketIDs, b)
		size += 3
		for _, d := range byBucket[b] {
			if n := len(d.name) + 10; size+n > e.opt.MaxMessageBytes/2 {
				if !send(cur) {
					return
				}
				cur, size = &message{kind: kindDigests, replica: m.replica, seq: m.seq, count: count, bucketIDs: []int{b}}, 3
			}
			cur.digests = append(cur.digests, d)
			size += len(d.name) + 10
		}
	}
	send(cur)
}

// handleDigests compares a peer's contexts in some buckets with ours: it sends the states
// the peer lacks or holds differently, and asks for those we lack or hold differently.
func (e *Engine) handleDigests(m *message) {
	in := make(map[int]bool, len(m.bucketIDs))
	for _, b := range m.bucketIDs {
		in[b] = true
	}
	theirs := make(map[string]uint64, len(m.digests))
	for _, d := range m.digests {
		if in[bucketOf(d.name, m.count)] {
			theirs[d.name] = d.sum
		}
	}
	e.mu.Lock()
	held := make(map[string]uint64)
	var send, want []string
	for _, d := range e.digestsLocked() {
		if !in[bucketOf(d.name, m.count)] {
			continue
		}
		held[d.name] = d.sum
		if sum, ok := theirs[d.name]; !ok || sum != d.sum {
			send = append(send, d.name)
		}
	}
	for _, d := range m.digests {
		if _, listed := theirs[d.name]; !listed {
			continue // outside the buckets the message compares
		}
		if sum, ok := held[d.name]; !ok || sum != d.sum {
			want = append(want, d.name)
		}
	}
	e.mu.Unlock()
	e.sendAll(e.states(m.from, m.seq, want, send))
}

// states is the message asking for the states of want and carrying the full state of
// names; it is lazy: statePieces reads the states and splits it when it is sent.
func (e *Engine) states(to string, seq uint64, want, names []string) []outgoing {
	return []outgoing{{to, &message{kind: kindStates, seq: seq, want: want, fill: names, lazy: true}}}
}

// statePieces sends, through send, the states message m stands for: the names it wants,
// then the full state of every context of m.fill still held, read now and split to stay
// well under the size limit; at least one message, for an answer with nothing in it still
// completes the exchange. It stops when send reports false.
func (e *Engine) statePieces(m *message, send func(*message) bool) {
	cur := &message{kind: kindStates, replica: m.replica, seq: m.seq}
	size, sent := 0, false
	add := func(n int) bool {
		if size > 0 && size+n > e.opt.MaxMessageBytes/2 {
			sent = true
			if !send(cur) {
				return false
			}
			cur, size = &message{kind: kindStates, replica: m.replica, seq: m.seq}, 0
		}
		size += n
		return true
	}
	for _, name := range m.want {
		if !add(len(name) + 2) {
			return
		}
		cur.want = append(cur.want, name)
	}
	for _, name := range m.fill {
		data, ok := e.opt.Store.Encoded(name)
		if !ok {
			continue
		}
		if !add(len(data) + len(name) + 8) {
			return
		}
		cur.groups = append(cur.groups, group{name: name, data: data})
	}
	if len(cur.groups) > 0 || len(cur.want) > 0 || !sent {
		send(cur)
	}
}

func (e *Engine) handleStates(ctx context.Context, m *message) error {
	changed, err := e.merge(ctx, m)
	if err != nil {
		return err
	}
	// Full states are not forwarded: under writes most differences are deltas still in
	// flight, and pushing whole contexts epidemically would cost far more than the
	// push-pulls every node runs itself (and at once when a peer comes back).
	_ = changed
	e.mu.Lock()
	e.mu.Unlock()
	if len(m.want) > 0 {
		e.sendAll(e.states(m.from, m.seq, nil, m.want))
	}
	return nil
}

// Refuse counts a message refused before it reached the engine's decoder.
func (e *Engine) Refuse(reason string) {
	e.mu.Lock()
	e.refused[reason]++
	e.mu.Unlock()
}

// fail records an exchange error with a peer; e.mu held.
func (e *Engine) fail(name string, err error) {
	if p := e.peers[name]; p != nil {
		p.errors++
		p.lastError = err.Error()
	}
}

// sendAll sends out: once the engine is open, through each peer's send queue, returning
// at once; before, in the calling goroutine.
func (e *Engine) sendAll(out []outgoing) {
	ob := e.out.Load()
	for _, o := range out {
		o.msg.replica = e.replica
		it := &item{msg: o.msg}
		if o.msg.lazy {
			it.size = o.msg.lazySize()
		} else {
			it.data = o.msg.encode()
			it.size = len(it.data)
		}
		if ob != nil {
			ob.put(o.to, it)
		} else {
			e.transmit(o.to, it)
		}
	}
}

// transmit sends one item to peer to and records the outcome. A lazy push-pull step is
// read and sent one message at a time and given up at the first failure: the next
// push-pull starts over.
func (e *Engine) transmit(to string, it *item) {
	if !it.msg.lazy {
		e.record(to, it.msg, len(it.data), e.opt.Transport.Send(to, it.data))
		return
	}
	send := func(m *message) bool {
		data := m.encode()
		err := e.opt.Transport.Send(to, data)
		e.record(to, m, len(data), err)
		return err == nil
	}
	switch it.msg.kind {
	case kindDigests:
		e.digestPieces(it.msg, send)
	case kindStates:
		e.statePieces(it.msg, send)
	}
}

// record notes the outcome of a send of n bytes.
func (e *Engine) record(to string, msg *message, n int, err error) {
	e.mu.Lock()
	if p := e.peers[to]; p != nil {
		if err != nil {
			e.fail(to, err)
			if msg.kind == kindDelta {
				p.sent = p.acked // resend next time
			}
		} else {
			p.bytesOut += uint64(n)
			if a := answer(msg.kind); a != 0 && p.member {
				p.awaiting |= 1 << a
			}
		}
	}
	e.mu.Unlock()
	if err != nil {
		e.log.Debug("send failed", "peer", to, "kind", msg.kind, "error", err)
	}
}

// unsent notes a message the peer's send queue had no room for (see outbox): a delta is
// pushed again from the last acknowledged point; the rest is repeated by acknowledgement
// timeouts and push-pulls.
func (e *Engine) unsent(to string, it *item) {
	e.mu.Lock()
	if p := e.peers[to]; p != nil {
		e.fail(to, errQueueFull)
		if it.msg.kind == kindDelta {
			p.sent = p.acked
		}
	}
	e.mu.Unlock()
	e.logs.log(e.log, hclog.Warn, "send_queue", e.now(),
		"message to a peer dropped: its send queue is full because the peer is slow or unreachable; it is sent again or repaired by anti-entropy, other peers are not held up",
		"peer", to, "kind", it.msg.kind)
}

// Open starts sending through per-peer queues (SPEC §7, issue 11): from then on Round,
// PushPull, Handle and Flush queue their messages and return, and every peer with
// something to send has its own sender goroutine, so a send that hangs (a dial to a peer
// that is cut off waits out the transport's timeout) delays that peer only. now is the
// clock of the senders' log lines. Close stops the senders.
func (e *Engine) Open(now func() time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.out.Load() != nil {
		return
	}
	e.now = now
	e.out.Store(newOutbox(e.transmit, e.unsent, e.opt.QueueMessages, e.opt.QueueBytes, e.opt.QueueTotalBytes,
		e.opt.MaxPeers, e.opt.MaxMessageBytes))
}

// Close stops the senders Open started: messages waiting are dropped, sends in progress
// are waited for (the transport bounds them), and later messages are dropped. Safe to
// call twice.
func (e *Engine) Close() {
	if ob := e.out.Load(); ob != nil {
		ob.close()
	}
}

// ---------------------------------------------------------------------------------------
// Shutdown

// Flush pushes every local delta not yet acknowledged to up to 2×Fanout live peers and
// waits until one of them acknowledged all of it or ctx ends. Close calls it on SIGTERM.
func (e *Engine) Flush(ctx context.Context, now func() time.Time, poll time.Duration) error {
	e.mu.Lock()
	e.fold()
	target := e.seq
	alive := e.alive()
	var out []outgoing
	for _, p := range e.pick(alive, 2*e.opt.Fanout) {
		p.sent = p.acked // push everything unacknowledged now
		if m := e.pushTo(p, now()); m != nil {
			out = append(out, outgoing{p.name, m})
		}
	}
	e.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	e.sendAll(out)
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		e.mu.Lock()
		done := false
		for _, o := range out {
			if p := e.peers[o.to]; p != nil && p.acked >= target {
				done = true
			}
		}
		e.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("peersync: last deltas not acknowledged by any peer before shutdown: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// ---------------------------------------------------------------------------------------
// Status

// Stats are the engine's counters.
type Stats struct {
	// Refused counts refused messages by reason: malformed, oversized, invalid,
	// unauthenticated, overload, max_peers (from a stranger past MaxPeers).
	Refused map[string]uint64
	// RefusedPeers counts the times a new peer was refused at MaxPeers; Forgotten, the
	// peers Expire forgot for never completing an exchange.
	RefusedPeers, Forgotten uint64
	// Buffered is the number of delta groups in the buffer.
	Buffered int
	// Seq is the last buffer sequence number.
	Seq uint64
	// BytesIn, BytesOut and Errors are the peers' traffic and failed exchanges summed
	// over every peer tracked since the engine started, those forgotten included: they
	// only grow, as counters must.
	BytesIn, BytesOut, Errors uint64
	// Queued is the number of messages waiting in the peers' send queues; QueuedBytes,
	// the bytes waiting or being sent; Sending, the peers whose sender runs. Zero until
	// Open.
	Queued, QueuedBytes, Sending int
	// Dropped counts the messages dropped because a peer's send queue was full, by kind
	// (delta, ack, root, list, digests, states); Coalesced, the deltas joined into one
	// already waiting for the same peer.
	Dropped   map[string]uint64
	Coalesced uint64
}

// traffic is what Stats sums over peers.
type traffic struct{ in, out, errors uint64 }

func (t *traffic) add(p *peer) {
	t.in += p.bytesIn
	t.out += p.bytesOut
	t.errors += p.errors
}

// Stats returns a copy of the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	refused := make(map[string]uint64, len(e.refused))
	for k, v := range e.refused {
		refused[k] = v
	}
	sum := e.gone
	for _, p := range e.peers {
		sum.add(p)
	}
	st := Stats{Refused: refused, Buffered: len(e.buf), Seq: e.seq,
		RefusedPeers: e.refusedPeers, Forgotten: e.forgotten, Dropped: map[string]uint64{},
		BytesIn: sum.in, BytesOut: sum.out, Errors: sum.errors}
	if ob := e.out.Load(); ob != nil {
		q := ob.stats()
		st.Queued, st.QueuedBytes, st.Sending, st.Coalesced = q.waiting, q.bytes, q.senders, q.coalesced
		for k, n := range q.dropped {
			st.Dropped[k.String()] = n
		}
	}
	return st
}

// PeerStatuses returns every known peer, sorted by name, as GET /v1/peers shows them.
// Lag is how long ago the oldest local change the peer has not acknowledged was made.
func (e *Engine) PeerStatuses(now time.Time) []ctxstore.PeerStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]ctxstore.PeerStatus, 0, len(e.peers))
	for _, p := range e.peers {
		st := ctxstore.PeerStatus{
			Name: p.name, Address: p.addr, State: p.state, LastContact: p.lastContact,
			BytesIn: p.bytesIn, BytesOut: p.bytesOut, Errors: p.errors, LastError: p.lastError,
		}
		for _, mk := range e.marks {
			if mk.seq > p.acked {
				st.Lag = max(0, now.Sub(mk.at))
				break
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ctxstore.PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}
