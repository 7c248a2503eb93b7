package peersync

import (
	"bytes"
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// This file is the fleet simulator of issue 4: many Engines over an in-memory network with
// latency, loss and partitions, driven by a fake clock in a single goroutine, so that a
// seed gives the same run every time. The engines are the production ones; only the
// network, the clock and the store (in memory, no fsync) are simulated.

// SimOptions describe a simulated fleet and its load. Zero fields take the defaults
// written next to them.
type SimOptions struct {
	Nodes            int           // fleet size; required
	Seed             uint64        // random seed of everything
	Interval         time.Duration // gossip round; 0 means 200ms
	Fanout           int           // peers per round; 0 means 3
	PushPullInterval time.Duration // anti-entropy period per node; 0 means 5s
	LatencyMin       time.Duration // one-way latency, uniform in [min, max]; 0 means 1ms
	LatencyMax       time.Duration // 0 means 10ms
	Loss             float64       // fraction of messages dropped
	Contexts         int           // contexts written to; 0 means 10
	WritesPerSecond  float64       // counter increments per second, fleet-wide; 0 means 1 per node
	Duration         time.Duration // how long writes go on; 0 means 20s
	// Partition, if set, cuts the fleet in two halves from PartitionAt until
	// PartitionAt+PartitionFor; writes stop at the heal and the run measures how long the
	// fleet takes to converge after it. Membership is modelled as memberlist behaves: each
	// side sees the other dead SuspectAfter into the partition and alive again RejoinAfter
	// the heal.
	PartitionAt, PartitionFor time.Duration
	SuspectAfter              time.Duration // 0 means 3s
	RejoinAfter               time.Duration // 0 means 500ms
}

// SimResult is what a simulation measured.
type SimResult struct {
	Nodes   int
	Updates int // increments made
	// Visible are the times until an increment was visible on every node.
	VisibleP50, VisibleP99, VisibleMax time.Duration
	// NotVisible counts increments still not everywhere when the run ended.
	NotVisible int
	// BytesPerNodeSecond is the mean sent replication traffic per node per second of
	// the write period; MaxBytesPerNodeSecond that of the busiest node.
	BytesPerNodeSecond, MaxBytesPerNodeSecond float64
	// Messages sent in all.
	Messages uint64
	// HealConverge is the time from the heal of the partition until every node held the
	// same state (0 without a partition); Converged reports whether that happened.
	HealConverge time.Duration
	Converged    bool
}

func (o *SimOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.Fanout <= 0 {
		o.Fanout = 3
	}
	if o.PushPullInterval <= 0 {
		o.PushPullInterval = 5 * time.Second
	}
	if o.LatencyMin <= 0 {
		o.LatencyMin = time.Millisecond
	}
	if o.LatencyMax <= 0 {
		o.LatencyMax = 10 * time.Millisecond
	}
	if o.Contexts <= 0 {
		o.Contexts = 10
	}
	if o.WritesPerSecond <= 0 {
		o.WritesPerSecond = float64(o.Nodes)
	}
	if o.Duration <= 0 {
		o.Duration = 20 * time.Second
	}
	if o.SuspectAfter <= 0 {
		o.SuspectAfter = 3 * time.Second
	}
	if o.RejoinAfter <= 0 {
		o.RejoinAfter = 500 * time.Millisecond
	}
}

// Simulate runs a fleet as opt says and measures it.
func Simulate(opt SimOptions) (SimResult, error) {
	if opt.Nodes < 2 {
		return SimResult{}, fmt.Errorf("peersync: simulate %d nodes: need at least 2", opt.Nodes)
	}
	opt.defaults()
	net := newSimNet(opt.Seed, opt.LatencyMin, opt.LatencyMax, opt.Loss)
	net.maxPeers = opt.Nodes
	tr := &visibility{n: opt.Nodes, pending: map[writeKey][]*simWrite{}}
	for i := range opt.Nodes {
		if _, err := net.addNode(fmt.Sprintf("n%04d", i), crdt.ReplicaID(i+1), opt.Interval, opt.Fanout, tr.observe); err != nil {
			return SimResult{}, err
		}
	}
	net.meshAll()
	for _, n := range net.order {
		n := n
		net.every(time.Duration(net.rng.Int64N(int64(opt.Interval))), opt.Interval, func() { n.engine.Round(net.now) })
		net.every(time.Duration(net.rng.Int64N(int64(opt.PushPullInterval))), opt.PushPullInterval, func() { n.engine.PushPull() })
	}

	healAt := opt.PartitionAt + opt.PartitionFor
	writesEnd := opt.Duration
	if opt.PartitionFor > 0 {
		writesEnd = healAt
		half := opt.Nodes / 2
		side := func(name string) int {
			if net.nodes[name].index < half {
				return 0
			}
			return 1
		}
		net.at(opt.PartitionAt, func() {
			net.cut = func(a, b string) bool { return side(a) != side(b) }
		})
		net.at(healAt, func() { net.cut = nil })
		across := func(state string) func() {
			return func() {
				for _, a := range net.order {
					for _, b := range net.order {
						if side(a.name) != side(b.name) {
							a.engine.SetPeer(b.name, "", b.store.replica, state, net.now)
						}
					}
				}
			}
		}
		net.at(opt.PartitionAt+opt.SuspectAfter, across(StateDead))
		net.at(healAt+opt.RejoinAfter, across(StateAlive))
	}

	// Writes: a Poisson process of increments on random nodes and contexts.
	gap := func() time.Duration {
		return time.Duration(net.rng.ExpFloat64() / opt.WritesPerSecond * float64(time.Second))
	}
	var write func()
	write = func() {
		if net.sinceStart() >= writesEnd {
			return
		}
		n := net.order[net.rng.IntN(len(net.order))]
		name := fmt.Sprintf("ctx-%d", net.rng.IntN(opt.Contexts))
		delta, p := n.store.incr(name, "hits")
		tr.wrote(net.now, name, n.store.replica, p)
		n.engine.Local(name, delta, net.now)
		net.after(gap(), write)
	}
	net.after(gap(), write)

	res := SimResult{Nodes: opt.Nodes}
	end := writesEnd + 10*time.Second
	if opt.PartitionFor > 0 {
		// Check convergence every round after the heal.
		var check func()
		check = func() {
			if net.converged() {
				res.HealConverge, res.Converged = net.sinceStart()-healAt, true
				net.stop = true
				return
			}
			net.after(opt.Interval/2, check)
		}
		net.at(healAt, check)
		end = healAt + 60*time.Second
	}
	net.run(end)

	res.Updates = tr.writes
	res.NotVisible = tr.writes - len(tr.latencies)
	if l := tr.latencies; len(l) > 0 {
		slices.Sort(l)
		res.VisibleP50 = l[len(l)/2]
		res.VisibleP99 = l[min(len(l)-1, len(l)*99/100)]
		res.VisibleMax = l[len(l)-1]
	}
	secs := writesEnd.Seconds()
	var total uint64
	for _, n := range net.order {
		total += n.sent
		res.MaxBytesPerNodeSecond = max(res.MaxBytesPerNodeSecond, float64(n.sent)/secs)
	}
	res.BytesPerNodeSecond = float64(total) / secs / float64(opt.Nodes)
	res.Messages = net.messages
	if opt.PartitionFor == 0 {
		res.Converged = net.converged()
	}
	return res, nil
}

// ---------------------------------------------------------------------------------------
// Visibility: when has every node seen an increment?

type writeKey struct {
	context string
	replica crdt.ReplicaID
}

type simWrite struct {
	p    uint64 // the slot's P after the increment
	at   time.Time
	seen int
}

type visibility struct {
	n         int
	writes    int
	pending   map[writeKey][]*simWrite
	latencies []time.Duration
}

func (v *visibility) wrote(now time.Time, name string, r crdt.ReplicaID, p uint64) {
	v.writes++
	w := &simWrite{p: p, at: now, seen: 1}
	k := writeKey{name, r}
	v.pending[k] = append(v.pending[k], w)
	if v.n == 1 {
		v.latencies = append(v.latencies, 0)
	}
}

// observe is told, on every merge, how each replica's slot of counter "hits" moved.
func (v *visibility) observe(now time.Time, name string, r crdt.ReplicaID, from, to uint64) {
	k := writeKey{name, r}
	ws := v.pending[k]
	kept := ws[:0]
	for _, w := range ws {
		if w.p > from && w.p <= to {
			w.seen++
		}
		if w.seen >= v.n {
			v.latencies = append(v.latencies, now.Sub(w.at))
			continue
		}
		kept = append(kept, w)
	}
	v.pending[k] = kept
}

// ---------------------------------------------------------------------------------------
// The in-memory network and its event loop

type simEvent struct {
	at  time.Time
	seq uint64
	fn  func()
}

type eventHeap []simEvent

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type simNode struct {
	name   string
	index  int
	store  *memStore
	engine *Engine
	sent   uint64
	down   bool
}

type simNet struct {
	start, now time.Time
	rng        *rand.Rand
	q          eventHeap
	seq        uint64
	nodes      map[string]*simNode
	order      []*simNode
	lmin, lmax time.Duration
	loss       float64
	cut        func(from, to string) bool
	messages   uint64
	stop       bool
	// maxPeers is each engine's MaxPeers; 0 means the default. A simulated fleet's
	// membership is all real, so Simulate makes room for all of it.
	maxPeers int
}

func newSimNet(seed uint64, lmin, lmax time.Duration, loss float64) *simNet {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &simNet{start: start, now: start, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes: map[string]*simNode{}, lmin: lmin, lmax: lmax, loss: loss}
}

func (s *simNet) addNode(name string, replica crdt.ReplicaID, interval time.Duration, fanout int, observe func(time.Time, string, crdt.ReplicaID, uint64, uint64)) (*simNode, error) {
	n := &simNode{name: name, index: len(s.order)}
	n.store = newMemStore(replica, func() time.Time { return s.now })
	if observe != nil {
		n.store.observe = func(name string, r crdt.ReplicaID, from, to uint64) { observe(s.now, name, r, from, to) }
	}
	e, err := NewEngine(EngineOptions{
		Name: name, Store: n.store, Transport: simTransport{s, n}, Fanout: fanout, Interval: interval, MaxPeers: s.maxPeers,
		Rand: rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),
	})
	if err != nil {
		return nil, err
	}
	n.engine = e
	s.nodes[name] = n
	s.order = append(s.order, n)
	return n, nil
}

// meshAll tells every engine that every other node is alive, as memberlist would.
func (s *simNet) meshAll() {
	for _, a := range s.order {
		for _, b := range s.order {
			if a != b {
				a.engine.SetPeer(b.name, b.name, b.store.replica, StateAlive, s.now)
			}
		}
	}
}

func (s *simNet) sinceStart() time.Duration { return s.now.Sub(s.start) }

func (s *simNet) after(d time.Duration, fn func()) {
	s.seq++
	heap.Push(&s.q, simEvent{at: s.now.Add(d), seq: s.seq, fn: fn})
}

func (s *simNet) at(d time.Duration, fn func()) { s.after(d-s.sinceStart(), fn) }

func (s *simNet) every(first, period time.Duration, fn func()) {
	var tick func()
	tick = func() {
		fn()
		s.after(period, tick)
	}
	s.after(first, tick)
}

// run processes events until end (since start) or until stopped.
func (s *simNet) run(end time.Duration) {
	limit := s.start.Add(end)
	for len(s.q) > 0 && !s.stop {
		ev := heap.Pop(&s.q).(simEvent)
		if ev.at.After(limit) {
			s.now = limit
			return
		}
		s.now = ev.at
		ev.fn()
	}
}

// runUntil processes events until cond holds or d passes; it reports whether cond held.
func (s *simNet) runUntil(d time.Duration, cond func() bool) bool {
	limit := s.now.Add(d)
	for len(s.q) > 0 {
		if cond() {
			return true
		}
		ev := heap.Pop(&s.q).(simEvent)
		if ev.at.After(limit) {
			heap.Push(&s.q, ev)
			s.now = limit
			return cond()
		}
		s.now = ev.at
		ev.fn()
	}
	return cond()
}

// converged reports whether every node holds the same state.
func (s *simNet) converged() bool {
	var first map[string]uint64
	for i, n := range s.order {
		sums := n.store.sums()
		if i == 0 {
			first = sums
			continue
		}
		if len(sums) != len(first) {
			return false
		}
		for k, v := range sums {
			if first[k] != v {
				return false
			}
		}
	}
	return true
}

type simTransport struct {
	net  *simNet
	from *simNode
}

func (t simTransport) Send(to string, msg []byte) error {
	s := t.net
	dst := s.nodes[to]
	if dst == nil {
		return fmt.Errorf("no node %s", to)
	}
	t.from.sent += uint64(len(msg))
	s.messages++
	if t.from.down || dst.down || (s.cut != nil && s.cut(t.from.name, to)) || s.rng.Float64() < s.loss {
		return nil // lost on the way, as a datagram would be
	}
	lat := s.lmin + time.Duration(s.rng.Int64N(int64(s.lmax-s.lmin)+1))
	data := bytes.Clone(msg)
	s.after(lat, func() {
		if !dst.down {
			_ = dst.engine.Handle(context.Background(), data, s.now)
		}
	})
	return nil
}

// ---------------------------------------------------------------------------------------
// memStore: the simulator's store, in memory

type memStore struct {
	replica crdt.ReplicaID
	clock   crdt.Clock
	mu      sync.Mutex
	states  map[string]*crdt.Context
	// observe, if set, is told how each replica's slot of counter "hits" moved in a merge.
	observe func(name string, r crdt.ReplicaID, from, to uint64)
}

var _ Store = (*memStore)(nil)

func newMemStore(r crdt.ReplicaID, now func() time.Time) *memStore {
	return &memStore{replica: r, clock: crdt.Clock{Now: now}, states: map[string]*crdt.Context{}}
}

func (m *memStore) Replica() crdt.ReplicaID { return m.replica }

func (m *memStore) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.states))
	for n := range m.states {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (m *memStore) Encoded(name string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.states[name]
	if c == nil {
		return nil, false
	}
	data, err := c.MarshalBinary()
	return data, err == nil
}

func (m *memStore) MergeAll(_ context.Context, _ crdt.ReplicaID, names []string, deltas []*crdt.Context) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := make([]bool, len(deltas))
	for i, d := range deltas {
		c := m.states[names[i]]
		if c == nil {
			c = &crdt.Context{}
		}
		var moved [][3]uint64
		if m.observe != nil {
			for r, s := range d.Counters["hits"].Slots {
				moved = append(moved, [3]uint64{uint64(r), c.Counters["hits"].Slots[r].P, s.P})
			}
		}
		if !c.Join(d) {
			continue
		}
		m.states[names[i]] = c
		changed[i] = true
		for _, mv := range moved {
			if mv[2] > mv[1] {
				m.observe(names[i], crdt.ReplicaID(mv[0]), mv[1], mv[2])
			}
		}
	}
	return changed, nil
}

// incr increments counter key of context name by one and returns the delta and the
// replica's slot P after it.
func (m *memStore) incr(name, key string) (*crdt.Context, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.states[name]
	if c == nil {
		c = &crdt.Context{}
		m.states[name] = c
	}
	d := c.Incr(crdt.Write{Replica: m.replica, At: m.clock.Read()}, key, 1, 0)
	c.Join(d)
	return d, c.Counters[key].Slots[m.replica].P
}

// value reads counter key of context name.
func (m *memStore) value(name, key string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.states[name]
	if c == nil {
		return 0
	}
	v, _ := c.Counter(key, m.clock.Read())
	return v
}

func (m *memStore) sums() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]uint64, len(m.states))
	for name, c := range m.states {
		data, _ := c.MarshalBinary()
		var h uint64 = 14695981039346656037
		for _, b := range data {
			h ^= uint64(b)
			h *= 1099511628211
		}
		out[name] = h
	}
	return out
}
