package peersync

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// gatedTransport is the network edge of the send-queue tests: it records what each peer
// got and holds the sends to a peer while its gate is shut, as a dial to an unreachable
// peer hangs. Safe for concurrent use.
type gatedTransport struct {
	mu      sync.Mutex
	gates   map[string]chan struct{} // shut while open; sends to a peer without one pass
	started map[string]int           // sends begun
	got     map[string][]*message
}

func newGated() *gatedTransport {
	return &gatedTransport{gates: map[string]chan struct{}{}, started: map[string]int{}, got: map[string][]*message{}}
}

func (g *gatedTransport) Send(to string, data []byte) error {
	m, err := decode(data, 1<<20)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.started[to]++
	gate := g.gates[to]
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	g.mu.Lock()
	g.got[to] = append(g.got[to], m)
	g.mu.Unlock()
	return nil
}

func (g *gatedTransport) shut(peer string) {
	g.mu.Lock()
	g.gates[peer] = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedTransport) open(peer string) {
	g.mu.Lock()
	if c := g.gates[peer]; c != nil {
		close(c)
		delete(g.gates, peer)
	}
	g.mu.Unlock()
}

func (g *gatedTransport) sends(peer string) (started, done int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started[peer], len(g.got[peer])
}

func (g *gatedTransport) messages(peer string) []*message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*message(nil), g.got[peer]...)
}

var testNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newQueued is an open engine "a" (replica 1) over a gatedTransport, with peers "b"
// (replica 2) and "c" (replica 3) alive; mod changes its options.
func newQueued(t *testing.T, mod func(*EngineOptions)) (*Engine, *memStore, *gatedTransport) {
	t.Helper()
	st := newMemStore(1, func() time.Time { return testNow })
	g := newGated()
	opt := EngineOptions{Name: "a", Store: st, Transport: g}
	if mod != nil {
		mod(&opt)
	}
	e, err := NewEngine(opt)
	if err != nil {
		t.Fatal(err)
	}
	e.SetPeer("b", "b", 2, StateAlive, testNow)
	e.SetPeer("c", "c", 3, StateAlive, testNow)
	e.rejoins = 0 // gossip only
	e.Open(func() time.Time { return testNow })
	t.Cleanup(func() {
		g.open("b")
		g.open("c")
		e.Close()
	})
	return e, st, g
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// TestOutbox_HeldPeerHoldsOnlyItself: while every send to b hangs, rounds go on and c gets
// every delta; b's deltas wait joined into one message, which carries them all once b is
// reachable, and its acknowledgement stops the pushes to b.
func TestOutbox_HeldPeerHoldsOnlyItself(t *testing.T) {
	e, st, g := newQueued(t, nil)
	g.shut("b")
	const rounds = 6
	now := testNow
	for i := range rounds {
		d, _ := st.incr(fmt.Sprintf("ctx-%d", i), "hits")
		e.Local(fmt.Sprintf("ctx-%d", i), d, now)
		e.Round(now) // returns although b's first send hangs
		poll(t, fmt.Sprintf("c to get the delta of round %d", i), func() bool {
			_, done := g.sends("c")
			return done == i+1
		})
		now = now.Add(200 * time.Millisecond)
	}
	if started, done := g.sends("b"); started != 1 || done != 0 {
		t.Fatalf("sends to b: %d started, %d done; want the first hanging", started, done)
	}
	st1 := e.Stats()
	// Round 0's delta is being sent, round 1's waits, rounds 2..5 joined into it.
	if got, want := st1.Queued, 1; got != want {
		t.Errorf("messages waiting = %d, want %d (the deltas joined)", got, want)
	}
	if got, want := st1.Coalesced, uint64(rounds-2); got != want {
		t.Errorf("coalesced = %d, want %d", got, want)
	}

	g.open("b")
	poll(t, "b to get both messages", func() bool { _, done := g.sends("b"); return done == 2 })
	got := g.messages("b")
	first, joined := got[0], got[1]
	if first.base != 0 || first.seq != 1 || len(first.groups) != 1 {
		t.Fatalf("first message to b: (%d, %d] with %d groups, want (0, 1] with 1", first.base, first.seq, len(first.groups))
	}
	if joined.base != 1 || joined.seq != rounds || len(joined.groups) != rounds-1 {
		t.Fatalf("joined message to b: (%d, %d] with %d groups, want (1, %d] with %d", joined.base, joined.seq, len(joined.groups), rounds, rounds-1)
	}
	for i, gr := range joined.groups {
		v, _ := gr.ctx.Counter("hits", crdt.TimestampOf(testNow))
		if want := fmt.Sprintf("ctx-%d", i+1); gr.name != want || v != 1 {
			t.Errorf("joined group %d: %s hits=%d, want %s hits=1", i, gr.name, v, want)
		}
	}
	// b acknowledges both: a has nothing more to push it.
	ctx := context.Background()
	for _, m := range []*message{first, joined} {
		ack := &message{kind: kindAck, replica: 2, base: m.base, seq: m.seq}
		if err := e.Handle(ctx, ack.encode(), now); err != nil {
			t.Fatal(err)
		}
	}
	e.Round(now.Add(time.Second))
	poll(t, "the queues to drain", func() bool { return e.Stats().Sending == 0 })
	if _, done := g.sends("b"); done != 2 {
		t.Errorf("a pushed b again after b acknowledged everything: %d messages", done)
	}
}

// TestOutbox_Bounded: a peer whose sends hang holds at most QueueMessages messages and
// QueueBytes bytes waiting (one in flight besides); the rest is dropped, counted by kind
// and as the peer's errors, and the other peer is not affected.
func TestOutbox_Bounded(t *testing.T) {
	tests := []struct {
		name          string
		msgs, bytes   int
		roots         int
		wantWaiting   int
		wantDropped   uint64
		wantMaxWaitsB int
	}{
		{"by messages", 4, 1 << 20, 10, 4, 10 - 1 - 4, 4 * 64},
		{"by bytes", 64, 60, 10, 3, 10 - 1 - 3, 60}, // roots are 20 bytes
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, g := newQueued(t, func(o *EngineOptions) { o.QueueMessages, o.QueueBytes = tt.msgs, tt.bytes })
			g.shut("b")
			e.pushPullWith("b") // a root message, 20 bytes
			poll(t, "b's first root to be in flight", func() bool { started, _ := g.sends("b"); return started == 1 })
			for range tt.roots - 1 {
				e.pushPullWith("b")
			}
			e.pushPullWith("c")
			poll(t, "c to get its root", func() bool { _, done := g.sends("c"); return done == 1 })
			st := e.Stats()
			if got, want := st.Queued, tt.wantWaiting; got != want {
				t.Errorf("waiting = %d, want %d", got, want)
			}
			if got, want := st.Dropped["root"], tt.wantDropped; got != want {
				t.Errorf("dropped roots = %d, want %d", got, want)
			}
			if st.QueuedBytes > tt.wantMaxWaitsB+64 {
				t.Errorf("bytes queued = %d, over the bound %d and one in flight", st.QueuedBytes, tt.wantMaxWaitsB)
			}
			for _, p := range e.PeerStatuses(testNow) {
				if p.Name == "b" && p.Errors != tt.wantDropped {
					t.Errorf("b's errors = %d, want the %d drops", p.Errors, tt.wantDropped)
				}
			}
			g.open("b")
			poll(t, "b's queue to drain", func() bool { return e.Stats().Sending == 0 })
			if _, done := g.sends("b"); done != tt.roots-int(tt.wantDropped) {
				t.Errorf("b got %d roots, want %d", done, tt.roots-int(tt.wantDropped))
			}
		})
	}
}

// TestOutbox_DroppedDeltaIsPushedAgain: a delta with no room in the queues is dropped and
// its interval marked unsent, so that the next round pushes it again from what the peer
// acknowledged: nothing is lost for want of room.
func TestOutbox_DroppedDeltaIsPushedAgain(t *testing.T) {
	// Room for two deltas, and for the roots hanging for b, but not for those and a
	// delta: the deltas fit only once b's roots are sent.
	root := len((&message{kind: kindRoot, replica: 1}).encode())
	sample, _ := newMemStore(1, func() time.Time { return testNow }).incr("orders", "hits")
	delta := len((&message{kind: kindDelta, replica: 1, seq: 1, groups: []group{{name: "orders", data: mustEncode(t, sample)}}}).encode())
	total := 2*delta + 10
	roots := (total-delta)/root + 1
	e, st, g := newQueued(t, func(o *EngineOptions) { o.QueueTotalBytes = total })
	g.shut("b")
	for range roots {
		e.pushPullWith("b")
	}
	poll(t, "b's root to be in flight", func() bool { started, _ := g.sends("b"); return started == 1 })
	d, _ := st.incr("orders", "hits")
	e.Local("orders", d, testNow)
	e.Round(testNow)
	if got := e.Stats().Dropped["delta"]; got != 2 {
		t.Fatalf("dropped deltas = %d, want 2 (to b and to c: no room)", got)
	}
	g.open("b")
	poll(t, "the queues to drain", func() bool { return e.Stats().Sending == 0 })
	// Within the ack timeout, and yet pushed again: the drop unmarked it.
	e.Round(testNow.Add(200 * time.Millisecond))
	for _, peer := range []string{"b", "c"} {
		poll(t, peer+" to get the delta", func() bool {
			for _, m := range g.messages(peer) {
				if m.kind == kindDelta && m.base == 0 && m.seq == 1 && len(m.groups) == 1 {
					return true
				}
			}
			return false
		})
	}
}

// TestOutbox_CloseStopsSenders: Close waits for a send in progress and drops what waits;
// afterwards nothing is sent and no sender goroutine is left.
func TestOutbox_CloseStopsSenders(t *testing.T) {
	st := newMemStore(1, func() time.Time { return testNow })
	g := newGated()
	e, err := NewEngine(EngineOptions{Name: "a", Store: st, Transport: g})
	if err != nil {
		t.Fatal(err)
	}
	e.SetPeer("b", "b", 2, StateAlive, testNow)
	e.rejoins = 0
	e.Open(func() time.Time { return testNow })
	g.shut("b")
	for range 3 {
		e.pushPullWith("b")
	}
	poll(t, "a send to b in progress", func() bool { started, _ := g.sends("b"); return started == 1 })
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	// Close waits for the send in progress: it cannot return until the gate opens.
	poll(t, "Close to drop what waits", func() bool { return e.Stats().Queued == 0 })
	select {
	case <-closed:
		t.Fatal("Close returned while a send was in progress")
	default:
	}
	g.open("b")
	<-closed
	e.Close() // twice is fine
	e.pushPullWith("b")
	if started, done := g.sends("b"); started != 1 || done != 1 {
		t.Errorf("sends to b: %d started, %d done; want only the one in progress at Close", started, done)
	}
	// Close waited for them; their goroutines end just after.
	poll(t, "no sender goroutine left", func() bool { return senders() == 0 })
}

// senders counts the goroutines running an outbox's sender.
func senders() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "peersync.(*outbox).run(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestJoinDeltas: the join of two deltas for one peer covers both intervals and joins
// the groups of a context; the buffer's own deltas are left as they were.
func TestJoinDeltas(t *testing.T) {
	at := crdt.TimestampOf(testNow)
	var c1, c2, c3 crdt.Context
	x1 := c1.Incr(crdt.Write{Replica: 1, At: at}, "hits", 1, 0)
	x2 := c2.Incr(crdt.Write{Replica: 2, At: at}, "hits", 2, 0)
	y := c3.Incr(crdt.Write{Replica: 1, At: at}, "hits", 5, 0)
	a := &message{kind: kindDelta, replica: 1, base: 3, seq: 5, groups: []group{{name: "x", ctx: x1, data: mustEncode(t, x1)}}}
	b := &message{kind: kindDelta, replica: 1, base: 5, seq: 9, groups: []group{
		{name: "y", ctx: y, data: mustEncode(t, y)}, {name: "x", ctx: x2, data: mustEncode(t, x2)}}}
	j := joinDeltas(a, b)
	if j.base != 3 || j.seq != 9 {
		t.Errorf("interval (%d, %d], want (3, 9]", j.base, j.seq)
	}
	m, err := decode(j.encode(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, g := range m.groups {
		got[g.name], _ = g.ctx.Counter("hits", at)
	}
	if got["x"] != 3 || got["y"] != 5 || len(got) != 2 {
		t.Errorf("joined groups %v, want x=3 (1 from replica 1, 2 from replica 2) y=5", got)
	}
	if v, _ := x1.Counter("hits", at); v != 1 {
		t.Errorf("the buffer's delta x1 changed: hits=%d, want 1", v)
	}
}

// TestOutbox_PeersBounded: at most maxQueues peers have a queue (and a sender); a message
// for one more is dropped until a queue drains, and a drained queue is given up.
func TestOutbox_PeersBounded(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var sent, dropped []string
	o := newOutbox(func(to string, _ *item) {
		<-release
		mu.Lock()
		sent = append(sent, to)
		mu.Unlock()
	}, func(to string, _ *item) {
		mu.Lock()
		dropped = append(dropped, to)
		mu.Unlock()
	}, 64, 1<<20, 1<<20, 2, 1<<20)
	root := func() *item {
		m := &message{kind: kindRoot, replica: 1}
		data := m.encode()
		return &item{msg: m, data: data, size: len(data)}
	}
	o.put("b", root())
	o.put("c", root())
	o.put("d", root())
	mu.Lock()
	if got, want := fmt.Sprint(dropped), "[d]"; got != want {
		t.Errorf("dropped %s, want %s: two queues are the bound", got, want)
	}
	mu.Unlock()
	if got := o.stats().senders; got != 2 {
		t.Errorf("%d senders, want 2", got)
	}
	close(release)
	poll(t, "the queues to drain and be given up", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.queues) == 0
	})
	o.put("d", root())
	poll(t, "d to get its message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sent) == 3
	})
	o.close()
	if got := o.stats().dropped[kindRoot]; got != 1 {
		t.Errorf("dropped roots counted %d, want 1", got)
	}
}
