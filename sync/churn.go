package peersync

import (
	"fmt"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// ChurnOptions describe a simulated fleet whose pods are replaced again and again, as
// deploys, scale-ins and node drains replace them in Kubernetes: each replacement is a new
// replica id (an emptyDir store), and the old one is gone for good. Zero fields take the
// defaults written next to them.
type ChurnOptions struct {
	Nodes       int           // live fleet size; required, at least 2
	Generations int           // pods each node slot sees in turn (1 + replacements); 0 means 10
	Seed        uint64        // random seed of everything
	Every       time.Duration // one replacement every; 0 means 2s (the slots in turn)
	// Retire turns retirement on (SPEC §7): what the fleet did before it is Retire false.
	Retire      bool
	RetireAfter time.Duration // sync.retire_after; 0 means 30s
	Grace       time.Duration // store.tombstone_ttl, after which folds are pruned; 0 means 60s
	SweepEvery  time.Duration // store.sweep_interval: settle, compact, retire; 0 means 5s
	Contexts    int           // contexts written to; 0 means 10
	// WritesPerSecond are counter increments, fleet-wide, on random live nodes and
	// contexts; 0 means 1 per node.
	WritesPerSecond float64
	Samples         int           // measurements over the run; 0 means 10
	Interval        time.Duration // gossip round; 0 means 200ms
	Fanout          int           // 0 means 3
	PushPull        time.Duration // anti-entropy period; 0 means 5s
	Loss            float64       // fraction of messages lost
}

// ChurnSample is the fleet's state at one moment, averaged over the live nodes.
type ChurnSample struct {
	At       time.Duration
	Replaced int     // replacements so far
	Replicas float64 // replica ids a context holds state for
	// Slots, Folds and Pruned count a context's counter slots, fold records and pruned
	// replicas (see crdt's "Retiring replicas").
	Slots, Folds, Pruned float64
	// BytesPerContext is the encoded size of a context; BytesPerNode that of all the
	// contexts a node holds.
	BytesPerContext, BytesPerNode float64
}

// ChurnResult is what a churn simulation measured.
type ChurnResult struct {
	Samples []ChurnSample
	// Replaced counts the pods replaced; ReplicaIDs the replica ids that ever lived.
	Replaced, ReplicaIDs int
	// Increments made, and Wrong the counters that did not read exactly that (fleet-wide
	// sum, on every live node) once the run had settled.
	Increments int
	Wrong      int
	// Retired counts the replicas folded by a live one.
	Retired int
}

func (o *ChurnOptions) defaults() {
	if o.Generations <= 0 {
		o.Generations = 10
	}
	if o.Every <= 0 {
		o.Every = 2 * time.Second
	}
	if o.RetireAfter <= 0 {
		o.RetireAfter = 30 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = 60 * time.Second
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = 5 * time.Second
	}
	if o.Contexts <= 0 {
		o.Contexts = 10
	}
	if o.WritesPerSecond <= 0 {
		o.WritesPerSecond = float64(o.Nodes)
	}
	if o.Samples <= 0 {
		o.Samples = 10
	}
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.Fanout <= 0 {
		o.Fanout = 3
	}
	if o.PushPull <= 0 {
		o.PushPull = 5 * time.Second
	}
}

// churnNode is a simulated pod: its node, and the retirement bookkeeping a Syncer keeps.
type churnNode struct {
	*simNode
	retiring retirement
	leaving  bool // draining before it goes: it takes no more writes
}

// SimulateChurn runs a fleet through Nodes × Generations pods, replaced one at a time,
// under a steady write load, and measures the state the live nodes hold. A replaced pod
// drains as SIGTERM makes a sidecar drain (it pushes its last deltas) and leaves; once the
// replacements are over, the run lets the fleet settle (two grace periods past
// retire_after) and checks every counter on every live node.
func SimulateChurn(opt ChurnOptions) (ChurnResult, error) {
	if opt.Nodes < 2 {
		return ChurnResult{}, fmt.Errorf("peersync: churn with %d nodes: need at least 2", opt.Nodes)
	}
	opt.defaults()
	net := newSimNet(opt.Seed, time.Millisecond, 10*time.Millisecond, opt.Loss)
	net.maxPeers = 4 * opt.Nodes // departed pods linger in the peer list for a while
	var res ChurnResult
	var nextID crdt.ReplicaID
	slots := make([]*churnNode, opt.Nodes)
	live := func() []*churnNode {
		var out []*churnNode
		for _, n := range slots {
			if n != nil && !n.leaving {
				out = append(out, n)
			}
		}
		return out
	}
	all := map[string]*churnNode{}
	start := func(slot, gen int) (*churnNode, error) {
		// Replica ids are random in a real fleet: spread them, so that the pod with the
		// smallest id (the one that retires others) is not always the oldest.
		nextID++
		res.ReplicaIDs++
		sn, err := net.addNode(fmt.Sprintf("s%02d-g%03d", slot, gen), nextID*0x9e3779b97f4a7c15, opt.Interval, opt.Fanout, nil)
		if err != nil {
			return nil, err
		}
		n := &churnNode{simNode: sn, retiring: retirement{started: net.now, lastSign: map[crdt.ReplicaID]time.Time{}}}
		all[n.name] = n
		for _, o := range all {
			if o != n && !o.down {
				o.engine.SetPeer(n.name, n.name, n.store.replica, StateAlive, net.now)
				n.engine.SetPeer(o.name, o.name, o.store.replica, StateAlive, net.now)
			}
		}
		net.every(time.Duration(net.rng.Int64N(int64(opt.Interval))), opt.Interval, func() {
			if !n.down {
				n.engine.Round(net.now)
			}
		})
		net.every(time.Duration(net.rng.Int64N(int64(opt.PushPull))), opt.PushPull, func() {
			if !n.down {
				n.engine.PushPull()
			}
		})
		net.every(time.Duration(net.rng.Int64N(int64(opt.SweepEvery))), opt.SweepEvery, func() {
			if !n.down {
				res.Retired += n.sweep(net, opt)
			}
		})
		n.engine.PushPull() // a new pod catches up by full state
		return n, nil
	}
	for i := range slots {
		n, err := start(i, 0)
		if err != nil {
			return res, err
		}
		slots[i] = n
	}

	// Replacements, the slots in turn: the old pod drains for a few rounds, then leaves.
	total := opt.Nodes * (opt.Generations - 1)
	var startErr error
	for k := range total {
		slot, gen := k%opt.Nodes, k/opt.Nodes+1
		net.at(time.Duration(k+1)*opt.Every, func() {
			old := slots[slot]
			old.leaving = true
			n, err := start(slot, gen)
			if err != nil {
				startErr = err
				net.stop = true
				return
			}
			slots[slot] = n
			res.Replaced++
			net.after(10*opt.Interval, func() {
				old.down = true
				for _, o := range all {
					if !o.down {
						o.engine.SetPeer(old.name, old.name, old.store.replica, StateLeft, net.now)
					}
				}
			})
		})
	}
	writesEnd := time.Duration(total+1) * opt.Every

	// Writes: a Poisson process of increments on random live pods and contexts.
	want := map[string]int64{}
	gap := func() time.Duration {
		return time.Duration(net.rng.ExpFloat64() / opt.WritesPerSecond * float64(time.Second))
	}
	var write func()
	write = func() {
		if net.sinceStart() >= writesEnd {
			return
		}
		ns := live()
		n := ns[net.rng.IntN(len(ns))]
		name := fmt.Sprintf("ctx-%d", net.rng.IntN(opt.Contexts))
		delta, _ := n.store.incr(name, "hits")
		want[name]++
		res.Increments++
		n.engine.Local(name, delta, net.now)
		net.after(gap(), write)
	}
	net.after(gap(), write)

	// Samples over the replacements and the settling after them.
	end := writesEnd + opt.RetireAfter*2 + opt.Grace*3
	every := end / time.Duration(opt.Samples)
	for i := 1; i <= opt.Samples; i++ {
		net.at(time.Duration(i)*every, func() { res.Samples = append(res.Samples, sample(net, live(), res.Replaced)) })
	}
	net.run(end)
	if startErr != nil {
		return res, startErr
	}
	for _, n := range live() {
		for name, w := range want {
			if got := n.store.value(name, "hits"); got != w {
				res.Wrong++
			}
		}
	}
	return res, nil
}

// sweep is what a sidecar's sweeper and retire loop do, for a simulated pod: retire the
// replicas gone for RetireAfter, settle its folds, compact. It returns how many replicas
// it retired.
func (n *churnNode) sweep(net *simNet, opt ChurnOptions) int {
	m := n.store
	retired := 0
	if opt.Retire {
		alive, heard := n.engine.activity()
		for _, id := range n.retiring.gone(m.replica, alive, heard, m.counterReplicas(), net.now, opt.RetireAfter) {
			if m.apply(n.engine, net.now, func(c *crdt.Context, w crdt.Write) (*crdt.Context, error) { return c.Absorb(w, id) }) > 0 {
				retired++
			}
		}
		m.apply(n.engine, net.now, func(c *crdt.Context, w crdt.Write) (*crdt.Context, error) { return c.Settle(w) })
	}
	m.mu.Lock()
	now := m.clock.Read()
	for _, c := range m.states {
		c.Compact(now, opt.Grace)
	}
	m.mu.Unlock()
	return retired
}

// counterReplicas is localstore.Store.CounterReplicas for the simulator's store.
func (m *memStore) counterReplicas() map[crdt.ReplicaID]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[crdt.ReplicaID]int{}
	for _, c := range m.states {
		c.CounterReplicas(func(r crdt.ReplicaID) { out[r]++ })
	}
	return out
}

// apply makes the delta f returns of every context, joins it and hands it to the engine
// as a local change; it returns how many contexts changed.
func (m *memStore) apply(e *Engine, now time.Time, f func(*crdt.Context, crdt.Write) (*crdt.Context, error)) int {
	n := 0
	for _, name := range m.Names() {
		m.mu.Lock()
		c := m.states[name]
		d, err := f(c, crdt.Write{Replica: m.replica, At: m.clock.Read()})
		if err == nil && d != nil {
			c.Join(d)
		}
		m.mu.Unlock()
		if err == nil && d != nil {
			e.Local(name, d, now)
			n++
		}
	}
	return n
}

// sample measures the state the live nodes hold.
func sample(net *simNet, live []*churnNode, replaced int) ChurnSample {
	s := ChurnSample{At: net.sinceStart(), Replaced: replaced}
	contexts := 0
	for _, n := range live {
		n.store.mu.Lock()
		for _, c := range n.store.states {
			data, _ := c.MarshalBinary()
			s.BytesPerNode += float64(len(data))
			s.Replicas += float64(c.Replicas())
			for _, ct := range c.Counters {
				s.Slots += float64(len(ct.Slots))
				s.Folds += float64(len(ct.Folds))
			}
			s.Pruned += float64(len(c.Pruned))
			contexts++
		}
		n.store.mu.Unlock()
	}
	if contexts > 0 {
		s.BytesPerContext = s.BytesPerNode / float64(contexts)
		s.Replicas /= float64(contexts)
		s.Slots /= float64(contexts)
		s.Folds /= float64(contexts)
		s.Pruned /= float64(contexts)
	}
	if len(live) > 0 {
		s.BytesPerNode /= float64(len(live))
	}
	return s
}
