package peersync

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// An attacker on the sync port speaks memberlist's wire format directly (issue 10 item 4):
// it needs no key when the fleet has none. These are memberlist's message types and the
// fields of its alive and push-pull messages, encoded as memberlist encodes them
// (a type byte, then msgpack).
const (
	mlAlive    = 4
	mlPushPull = 6
	mlUser     = 8
)

type mlAliveMsg struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}

type mlPushPullHeader struct {
	Nodes        int
	UserStateLen int
	Join         bool
}

type mlPushNodeState struct {
	Name        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Incarnation uint32
	State       int
	Vsn         []uint8
}

// mlVsn is what memberlist 0.7 announces: protocol 1..5, speaking 2; delegate 0.
var mlVsn = []uint8{1, 5, 2, 0, 0, 0}

func msgpackEncode(t *testing.T, w io.Writer, v any) {
	t.Helper()
	if err := codec.NewEncoder(w, &codec.MsgpackHandle{}).Encode(v); err != nil {
		t.Fatal(err)
	}
}

// attacker sends forged peer traffic to one sidecar from a plain UDP socket and plain
// TCP connections, the way anyone who reaches the sync port can.
type attacker struct {
	t      *testing.T
	target *net.UDPAddr
	tcp    string
	udp    *net.UDPConn
	// fake is where the forged members claim to be: a closed port on loopback, so that
	// they never answer a probe.
	fake *net.UDPAddr
}

func newAttacker(t *testing.T, target string) *attacker {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fake, err := net.ResolveUDPAddr("udp", freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	return &attacker{t: t, target: ua, tcp: target, udp: conn, fake: fake}
}

func (a *attacker) send(pkt []byte) {
	if _, err := a.udp.WriteToUDP(pkt, a.target); err != nil {
		a.t.Fatal(err)
	}
}

// alive announces a member that does not exist.
func (a *attacker) alive(name string) {
	var b bytes.Buffer
	b.WriteByte(mlAlive)
	msgpackEncode(a.t, &b, &mlAliveMsg{Incarnation: 1, Node: name, Addr: a.fake.IP.To4(), Port: uint16(a.fake.Port), Vsn: mlVsn})
	a.send(b.Bytes())
}

// engineMsg sends a message of ctxprop's own protocol as a memberlist user message.
func (a *attacker) engineMsg(msg []byte) {
	a.send(append([]byte{mlUser}, msg...))
}

// pushPull joins over TCP with a node list of names that do not exist.
func (a *attacker) pushPull(names []string) {
	conn, err := net.DialTimeout("tcp", a.tcp, 2*time.Second)
	if err != nil {
		a.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(conn)
	w.WriteByte(mlPushPull)
	msgpackEncode(a.t, w, &mlPushPullHeader{Nodes: len(names), Join: true})
	for _, n := range names {
		msgpackEncode(a.t, w, &mlPushNodeState{Name: n, Addr: a.fake.IP.To4(), Port: uint16(a.fake.Port), Incarnation: 1, Vsn: mlVsn})
	}
	if err := w.Flush(); err != nil {
		a.t.Fatal(err)
	}
	// The sidecar answers with its own state, then merges ours and closes.
	_, _ = io.Copy(io.Discard, conn)
}

// lineCounter counts the log lines at WARN and above.
type lineCounter struct {
	t     *testing.T
	lines atomic.Int64
}

func (c *lineCounter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if strings.Contains(line, "[WARN]") || strings.Contains(line, "[ERROR]") {
			c.lines.Add(1)
			if n := c.lines.Load(); n <= 20 {
				c.t.Log(line)
			}
		}
	}
	return len(p), nil
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// settledHeap is heapInUse once the victim has worked off what a flood left queued
// (packets in its own and memberlist's queues, which a loaded machine leaves longer): it
// polls, with a deadline, until two readings 100 ms apart agree within 1 %, and returns the
// lowest reading. State kept per sender stays in every reading; queues drain out of it.
func settledHeap() uint64 {
	low := heapInUse()
	deadline := time.Now().Add(5 * time.Second)
	for prev := low; time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // polling with a deadline
		h := heapInUse()
		low = min(low, h)
		if d := int64(h) - int64(prev); d < int64(prev)/100 && -d < int64(prev)/100 {
			break
		}
		prev = h
	}
	return low
}

// TestSyncer_UnkeyedFloodIsBounded is the flood of issue 10 item 4: a sidecar without
// sync.key_file receives, from one host, thousands of memberlist alive messages and
// push-pull joins naming members that do not exist, thousands of ctxprop messages from
// replica ids it never saw, and malformed messages. The peers it tracks, memberlist's
// members, the per-peer metric series and the WARN lines stay bounded; a second flood as
// large as the first does not grow the heap; and once the flood stops, every made-up peer
// is forgotten within UnprovenTTL.
func TestSyncer_UnkeyedFloodIsBounded(t *testing.T) {
	const (
		perFlood = 3000 // fresh identities of each kind per flood, about 3 × the bound
		bound    = DefaultMaxPeers
	)
	logs := &lineCounter{t: t}
	victim := startNodeWith(t, "victim", filepath.Join(t.TempDir(), "victim.db"), freeAddr(t), nil, nil, func(o *Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "victim", Level: hclog.Info, Output: logs})
		o.UnprovenTTL = 2 * time.Second
		o.PeerMetrics = true // the series per peer are bounded too when asked for
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(victim.sync)
	atk := newAttacker(t, victim.sync.Addr())

	serial := 0
	flood := func() time.Duration {
		start := time.Now()
		pace := time.NewTicker(time.Millisecond) // the attacker's own rate: 100 packets a tick
		defer pace.Stop()
		var names []string
		for i := range perFlood {
			serial++
			atk.alive(fmt.Sprintf("ghost-%d/%x", serial, 1<<40+serial))
			atk.engineMsg((&message{kind: kindRoot, replica: crdt.ReplicaID(1<<50 + serial), seq: 1, root: 42}).encode())
			atk.engineMsg([]byte("\x01\x01garbage"))
			names = append(names, fmt.Sprintf("ghost-tcp-%d/%x", serial, 1<<41+serial))
			if len(names) == 500 {
				atk.pushPull(names)
				names = names[:0]
			}
			if i%100 == 99 {
				<-pace.C
			}
		}
		if len(names) > 0 {
			atk.pushPull(names)
		}
		// Every forged packet has been handled once one more malformed message, sent
		// alone, is the only one counted: memberlist's queues and the sidecar's are empty.
		refused := func() uint64 { st := victim.sync.Stats(); return st.Refused["malformed"] + st.Refused["overload"] }
		waitFor(t, 30*time.Second, "the sidecar to handle the flood", func() bool {
			before := refused()
			atk.engineMsg([]byte("\x01\x01garbage"))
			var after uint64
			waitFor(t, 10*time.Second, "a malformed message to be counted", func() bool {
				after = refused()
				return after > before
			})
			return after == before+1
		})
		return time.Since(start)
	}

	check := func(round string, took time.Duration) {
		t.Helper()
		peers := len(victim.sync.Peers())
		members := victim.sync.ml.NumMembers()
		series, err := testutil.GatherAndCount(reg, "ctxprop_sync_peer_received_bytes_total")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d peers, %d memberlist members, %d per-peer series of one metric, %d WARN/ERROR lines in %s",
			round, peers, members, series, logs.lines.Load(), took.Round(time.Millisecond))
		if peers > bound {
			t.Errorf("%s: the sidecar tracks %d peers, over sync.max_peers (%d)", round, peers, bound)
		}
		if members > bound+1 {
			t.Errorf("%s: memberlist lists %d members, over sync.max_peers (%d) + itself", round, members, bound)
		}
		if series > bound {
			t.Errorf("%s: %d series of ctxprop_sync_peer_received_bytes_total, over sync.max_peers (%d)", round, series, bound)
		}
	}

	took := flood()
	check("first flood", took)
	heap1 := settledHeap()
	lines1 := logs.lines.Load()

	took2 := flood()
	check("second flood", took2)
	lines2 := logs.lines.Load() - lines1
	heap2 := settledHeap()

	// One line per second per kind of problem, a handful of kinds.
	if max := 10 * (int64(took2.Seconds()) + 2); lines2 > max {
		t.Errorf("second flood logged %d WARN/ERROR lines in %s, want at most %d (rate limited)", lines2, took2, max)
	}
	growth := int64(heap2) - int64(heap1)
	t.Logf("heap after the first flood %d KiB, after the second %d KiB", heap1>>10, heap2>>10)
	if perPacket := growth / (3 * perFlood); perPacket > 64 {
		t.Errorf("heap grew by %d KiB over a flood of %d forged packets (%d bytes a packet): state grows per sender", growth>>10, 3*perFlood, perPacket)
	}
	if n, err := testutil.GatherAndCount(reg, "ctxprop_sync_refused_peers_total"); err != nil || n != 2 {
		t.Errorf("ctxprop_sync_refused_peers_total has %d series (%v), want 2", n, err)
	}
	if refusedPeers(t, reg, "membership") == 0 || refusedPeers(t, reg, "engine") == 0 {
		t.Errorf("refused peers: membership %v, engine %v; want both counted", refusedPeers(t, reg, "membership"), refusedPeers(t, reg, "engine"))
	}

	// None of them ever answered: all are forgotten, none kept as alive.
	waitFor(t, 10*time.Second, "every made-up peer to be forgotten", func() bool { return len(victim.sync.Peers()) == 0 })
	if got := victim.sync.Stats().Forgotten; got < bound {
		t.Errorf("%d peers forgotten, want at least %d", got, bound)
	}
	if names := victim.store.Names(); len(names) != 0 {
		t.Errorf("store holds %v, want nothing", names)
	}
}

// refusedPeers reads ctxprop_sync_refused_peers_total{source}.
func refusedPeers(t *testing.T, reg *prometheus.Registry, source string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ctxprop_sync_refused_peers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == source {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no ctxprop_sync_refused_peers_total{source=%q}", source)
	return 0
}

// TestSyncer_KeyedRefusalsCountedExactly: with sync.key_file, packets that do not
// authenticate are refused and each is counted, while the log gets a line a second.
func TestSyncer_KeyedRefusalsCountedExactly(t *testing.T) {
	const packets = 1000
	key := []byte("0123456789abcdef0123456789abcdef")
	logs := &lineCounter{t: t}
	victim := startNodeWith(t, "victim", filepath.Join(t.TempDir(), "victim.db"), freeAddr(t), nil, key, func(o *Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Name: "victim", Level: hclog.Info, Output: logs})
	})
	atk := newAttacker(t, victim.sync.Addr())
	start := time.Now()
	for i := 0; i < packets; i += 50 {
		// In batches the socket buffer holds, so that the count can be exact.
		for j := range 50 {
			atk.alive(fmt.Sprintf("ghost-%d", i+j)) // not encrypted: refused
		}
		waitFor(t, 10*time.Second, "the batch to be refused", func() bool {
			return victim.sync.Stats().Refused["unauthenticated"] >= uint64(i+50)
		})
	}
	took := time.Since(start)
	if got, want := victim.sync.Stats().Refused["unauthenticated"], uint64(packets); got != want {
		t.Errorf("refused unauthenticated = %d, want %d: one per packet", got, want)
	}
	if max := 3 * (int64(took.Seconds()) + 2); logs.lines.Load() > max {
		t.Errorf("%d WARN/ERROR lines for %d refused packets in %s, want at most %d", logs.lines.Load(), packets, took, max)
	}
	if got := len(victim.sync.Peers()); got != 0 {
		t.Errorf("%d peers after unauthenticated packets, want none", got)
	}
	if got := victim.sync.ml.NumMembers(); got != 1 {
		t.Errorf("memberlist lists %d members, want only itself", got)
	}
}

// TestSyncer_PeerPastTheBoundJoinsOnceAPlaceFrees: with a key too, a sidecar tracks at
// most sync.max_peers peers; one more is refused, loudly, and joins once a member leaves.
func TestSyncer_PeerPastTheBoundJoinsOnceAPlaceFrees(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	victim := startNodeWith(t, "victim", filepath.Join(t.TempDir(), "v.db"), addrs[0], addrs, key, func(o *Options) {
		o.MaxPeers = 1
		o.DeadMemberHold = 500 * time.Millisecond
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(victim.sync)
	first := startNode(t, "first", filepath.Join(t.TempDir(), "a.db"), addrs[1], addrs[:1], key)
	waitFor(t, 10*time.Second, "victim to track first", func() bool {
		ps := victim.sync.Peers()
		return len(ps) == 1 && strings.HasPrefix(ps[0].Name, "first/") && ps[0].State == StateAlive
	})
	second := startNode(t, "second", filepath.Join(t.TempDir(), "b.db"), addrs[2], addrs[:1], key)
	waitFor(t, 10*time.Second, "second to be refused", func() bool { return refusedPeers(t, reg, "membership") > 0 })
	if _, err := second.store.Apply(t.Context(), "late", []ops.Op{{Kind: ops.Incr, Key: "k", By: 7}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	// Refused, second's pushes are not merged either.
	for _, p := range victim.sync.Peers() {
		if !strings.HasPrefix(p.Name, "first/") {
			t.Fatalf("victim tracks %s past sync.max_peers = 1", p.Name)
		}
	}
	if got := victim.sync.ml.NumMembers(); got > 2 {
		t.Fatalf("victim's memberlist lists %d members, want itself and one peer", got)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := first.sync.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "second to join in first's place and its write to arrive", func() bool {
		v, _ := victim.store.Counter("late", "k")
		return v == 7 && hasMember(victim, "second/")
	})
	for _, p := range victim.sync.Peers() {
		if strings.HasPrefix(p.Name, "first/") && p.State == StateAlive {
			t.Errorf("first is still alive in victim's peers: %+v", p)
		}
	}
}

// TestSyncer_UnprovenMemberIsForgotten: without a key, an alive message for a member
// that does not exist takes the only place; the member never answers, so the sidecar
// forgets it within UnprovenTTL instead of keeping it alive, memberlist's failure
// detector finds it dead, and a real sidecar refused meanwhile joins.
func TestSyncer_UnprovenMemberIsForgotten(t *testing.T) {
	addrs := []string{freeAddr(t), freeAddr(t)}
	victim := startNodeWith(t, "victim", filepath.Join(t.TempDir(), "v.db"), addrs[0], addrs, nil, func(o *Options) {
		o.MaxPeers = 1
		o.UnprovenTTL = time.Second
		o.DeadMemberHold = 500 * time.Millisecond
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(victim.sync)
	atk := newAttacker(t, victim.sync.Addr())
	atk.alive("ghost/00000000000000aa")
	waitFor(t, 5*time.Second, "the ghost to be a member", func() bool { return victim.sync.ml.NumMembers() == 2 })
	if ps := victim.sync.Peers(); len(ps) != 1 || ps[0].Name != "ghost/00000000000000aa" {
		t.Fatalf("peers %+v, want the ghost", ps)
	}

	real := startNode(t, "real", filepath.Join(t.TempDir(), "r.db"), addrs[1], addrs[:1], nil)
	waitFor(t, 10*time.Second, "the real sidecar to be refused", func() bool { return refusedPeers(t, reg, "membership") > 0 })
	waitFor(t, 5*time.Second, "the ghost to be forgotten", func() bool {
		for _, p := range victim.sync.Peers() {
			if p.Name == "ghost/00000000000000aa" {
				return false
			}
		}
		return victim.sync.Stats().Forgotten > 0
	})
	if _, err := real.store.Apply(t.Context(), "c", []ops.Op{{Kind: ops.Incr, Key: "k", By: 3}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the real sidecar to join and its write to arrive", func() bool {
		v, _ := victim.store.Counter("c", "k")
		return v == 3 && hasMember(victim, "real/")
	})
	ps := victim.sync.Peers()
	if len(ps) != 1 || !strings.HasPrefix(ps[0].Name, "real/") {
		t.Fatalf("peers %+v, want the real sidecar only", ps)
	}
	// It answers: established, so Expire keeps it.
	waitFor(t, 5*time.Second, "the real sidecar to be established", func() bool { return victim.sync.engine.Established(ps[0].Name) })
}

// hasMember reports whether nd's memberlist lists a member named prefix… alive and its
// engine tracks it alive.
func hasMember(nd *testNode, prefix string) bool {
	inML := false
	for _, n := range nd.sync.ml.Members() {
		inML = inML || strings.HasPrefix(n.Name, prefix)
	}
	for _, p := range nd.sync.Peers() {
		if inML && strings.HasPrefix(p.Name, prefix) && p.State == StateAlive {
			return true
		}
	}
	return false
}
