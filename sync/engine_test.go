package peersync

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// fleet builds n engines on the in-memory network, all alive to each other, with rounds
// and push-pulls scheduled as Syncer runs them.
func fleet(t *testing.T, n int, seed uint64, loss float64) *simNet {
	t.Helper()
	net := newSimNet(seed, time.Millisecond, 5*time.Millisecond, loss)
	for i := range n {
		if _, err := net.addNode(fmt.Sprintf("n%d", i), crdt.ReplicaID(i+1), 200*time.Millisecond, 3, nil); err != nil {
			t.Fatal(err)
		}
	}
	net.meshAll()
	for _, nd := range net.order {
		nd := nd
		net.every(time.Duration(net.rng.Int64N(int64(200*time.Millisecond))), 200*time.Millisecond, func() { nd.engine.Round(net.now) })
		net.every(time.Duration(net.rng.Int64N(int64(5*time.Second))), 5*time.Second, func() { nd.engine.PushPull() })
	}
	return net
}

func incr(net *simNet, nd *simNode, name string) {
	d, _ := nd.store.incr(name, "hits")
	nd.engine.Local(name, d, net.now)
}

func TestEngine_DeltaReachesEveryNode(t *testing.T) {
	for _, n := range []int{2, 5, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			net := fleet(t, n, 7, 0)
			for i, nd := range net.order {
				for range i + 1 {
					incr(net, nd, "orders")
				}
			}
			want := int64(n * (n + 1) / 2)
			ok := net.runUntil(3*time.Second, func() bool {
				for _, nd := range net.order {
					if nd.store.value("orders", "hits") != want {
						return false
					}
				}
				return true
			})
			if !ok {
				for _, nd := range net.order {
					t.Logf("%s: %d", nd.name, nd.store.value("orders", "hits"))
				}
				t.Fatalf("not every node reads %d within 3s", want)
			}
		})
	}
}

// recorder is a transport that keeps what is sent, for checking what goes to whom.
type recorder struct{ sent []sentMsg }

type sentMsg struct {
	to string
	m  *message
}

func (r *recorder) Send(to string, data []byte) error {
	m, err := decode(data, 1<<20)
	if err != nil {
		return err
	}
	r.sent = append(r.sent, sentMsg{to, m})
	return nil
}

func (r *recorder) take() []sentMsg { s := r.sent; r.sent = nil; return s }

// testReplicas are the replica ids of the engines the recorded tests build.
var testReplicas = map[string]crdt.ReplicaID{"a": 1, "b": 2}

func newRecorded(t *testing.T, name string, replica crdt.ReplicaID, peers ...string) (*Engine, *memStore, *recorder) {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := newMemStore(replica, func() time.Time { return now })
	rec := &recorder{}
	e, err := NewEngine(EngineOptions{Name: name, Store: st, Transport: rec})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		e.SetPeer(p, p, testReplicas[p], StateAlive, now)
	}
	e.rejoins = 0 // these tests look at gossip only
	return e, st, rec
}

func TestEngine_NeverBackToSenderAndStripsAcked(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, as, arec := newRecorded(t, "a", 1, "b")
	b, _, brec := newRecorded(t, "b", 2, "a")
	ctx := context.Background()

	d, _ := as.incr("orders", "hits")
	a.Local("orders", d, now)
	a.Round(now)
	out := arec.take()
	if got, want := len(out), 1; got != want {
		t.Fatalf("a sent %d messages, want %d", got, want)
	}
	if got, want := out[0].m.kind, kindDelta; got != want {
		t.Fatalf("a sent %s, want %s", got, want)
	}
	// b merges and acks; it must not push the group back to a.
	if err := b.Handle(ctx, out[0].m.encodeFrom("a", 1), now); err != nil {
		t.Fatal(err)
	}
	acks := brec.take()
	if len(acks) != 1 || acks[0].m.kind != kindAck {
		t.Fatalf("b answered %v, want one ack", acks)
	}
	b.Round(now.Add(200 * time.Millisecond))
	if got := brec.take(); len(got) != 0 {
		t.Fatalf("b pushed %d messages back to the sender a, want none", len(got))
	}
	// Once a has the ack, its next round sends b nothing: b has it all.
	if err := a.Handle(ctx, acks[0].m.encodeFrom("b", 2), now); err != nil {
		t.Fatal(err)
	}
	a.Round(now.Add(time.Second))
	if got := arec.take(); len(got) != 0 {
		t.Fatalf("a pushed %d messages to b after b acknowledged everything, want none", len(got))
	}
	// Without an ack, a pushes again after the ack timeout.
	d, _ = as.incr("orders", "hits")
	a.Local("orders", d, now)
	a.Round(now.Add(2 * time.Second))
	arec.take()
	a.Round(now.Add(2*time.Second + 200*time.Millisecond))
	if got := arec.take(); len(got) != 0 {
		t.Fatalf("a resent within the ack timeout: %d messages", len(got))
	}
	a.Round(now.Add(4 * time.Second))
	if got := arec.take(); len(got) != 1 {
		t.Fatalf("a did not resend an unacknowledged push after the timeout: %d messages", len(got))
	}
}

// encodeFrom re-encodes a decoded message as sent by from.
func (m *message) encodeFrom(from string, r crdt.ReplicaID) []byte {
	c := *m
	c.from, c.replica = from, r
	return c.encode()
}

func TestEngine_PushPullSendsOnlyDifferingContexts(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	a, as, arec := newRecorded(t, "a", 1, "b")
	b, bs, brec := newRecorded(t, "b", 2, "a")
	// Both hold "same"; only a holds "onlya"; both changed "both" differently.
	for _, name := range []string{"same", "both"} {
		d, _ := as.incr(name, "hits")
		if _, err := bs.MergeAll(ctx, 1, []string{name}, []*crdt.Context{d}); err != nil {
			t.Fatal(err)
		}
	}
	as.incr("onlya", "hits")
	as.incr("both", "hits")
	bs.incr("both", "hits")

	a.PushPull()
	deliver := func(from *Engine, fromName string, rec *recorder, to *Engine) []sentMsg {
		t.Helper()
		msgs := rec.take()
		for _, s := range msgs {
			if err := to.Handle(ctx, s.m.encodeFrom(fromName, from.replica), now); err != nil {
				t.Fatal(err)
			}
		}
		return msgs
	}
	deliver(a, "a", arec, b)           // root
	deliver(b, "b", brec, a)           // bucket digests
	deliver(a, "a", arec, b)           // a's digests of the buckets that differ
	states := deliver(b, "b", brec, a) // b's states + want
	if got, want := len(states), 1; got != want {
		t.Fatalf("b sent %d states messages, want %d", got, want)
	}
	var sent []string
	for _, g := range states[0].m.groups {
		sent = append(sent, g.name)
	}
	if got, want := fmt.Sprint(sent), "[both]"; got != want {
		t.Errorf("b sent the states of %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(states[0].m.want), "[both onlya]"; got != want {
		t.Errorf("b asked for %s, want %s", got, want)
	}
	deliver(a, "a", arec, b) // a's wanted states
	for _, name := range []string{"same", "both", "onlya"} {
		if got, want := bs.value(name, "hits"), as.value(name, "hits"); got != want {
			t.Errorf("after push-pull %s: b reads %d, a reads %d", name, got, want)
		}
	}
	if got, want := as.value("both", "hits"), int64(3); got != want {
		t.Errorf("both: %d, want %d", got, want)
	}
	// A second push-pull finds equal roots and moves no state.
	a.PushPull()
	deliver(a, "a", arec, b)
	list := deliver(b, "b", brec, a)
	if len(list) != 1 || !list[0].m.equal {
		t.Fatalf("second push-pull: want one equal list, got %+v", list)
	}
}

func TestEngine_RefusesBadMessages(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	b, bs, _ := newRecorded(t, "b", 2, "a")
	good := (&message{kind: kindDelta, from: "a", replica: 1, seq: 1, groups: []group{{name: "x", data: mustEncode(t, incrDelta(1))}}}).encode()
	badName := (&message{kind: kindDelta, from: "a", replica: 1, seq: 1, groups: []group{{name: "bad name!", data: mustEncode(t, incrDelta(1))}}}).encode()
	badCRDT := (&message{kind: kindDelta, from: "a", replica: 1, seq: 1, groups: []group{{name: "y", data: []byte{1, 2, 3}}}}).encode()
	big := append(append([]byte{}, good...), make([]byte, 5<<20)...)
	bomb := (&message{kind: kindStates, replica: 1, groups: []group{{name: "z", data: make([]byte, 5<<20)}}}).encode()
	if len(bomb) > 64<<10 {
		t.Fatalf("the deflate bomb is %d bytes, meant to be small", len(bomb))
	}
	tests := []struct {
		name, reason string
		data         []byte
	}{
		{"empty", "malformed", nil},
		{"garbage", "malformed", []byte("GET / HTTP/1.1\r\n")},
		{"truncated", "malformed", good[:len(good)-3]},
		{"trailing", "malformed", append(append([]byte{}, good...), 0)},
		{"bad context name", "malformed", badName},
		{"bad crdt", "malformed", badCRDT},
		{"oversized", "oversized", big},
		{"inflates past the limit", "oversized", bomb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.Stats().Refused[tt.reason]
			if err := b.Handle(ctx, tt.data, now); !errors.Is(err, errMalformed) {
				t.Fatalf("Handle: %v, want a malformed-message error", err)
			}
			if got, want := b.Stats().Refused[tt.reason], before+1; got != want {
				t.Errorf("refused[%s] = %d, want %d", tt.reason, got, want)
			}
			if names := bs.Names(); len(names) != 0 {
				t.Errorf("store holds %v after a refused message, want nothing", names)
			}
		})
	}
	if err := b.Handle(ctx, good, now); err != nil {
		t.Fatalf("good message: %v", err)
	}
	if got, want := bs.value("x", "hits"), int64(1); got != want {
		t.Errorf("x = %d, want %d", got, want)
	}
}

func incrDelta(r crdt.ReplicaID) *crdt.Context {
	var c crdt.Context
	return c.Incr(crdt.Write{Replica: r, At: crdt.TimestampOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}, "hits", 1, 0)
}

func mustEncode(t *testing.T, c *crdt.Context) []byte {
	t.Helper()
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWire_CounterDeltaSize checks SPEC §7's bound: a counter increment on the wire, in a
// delta message of its own, takes at most 64 bytes. (With a TTL the slot carries an
// expiry and the context its TTL meta: about 70 bytes; in a batch each further increment
// costs 15 to 30 bytes, see BenchmarkEncodeBatch.)
func TestWire_CounterDeltaSize(t *testing.T) {
	for _, key := range []string{"orders", "http.requests"} {
		t.Run(key, func(t *testing.T) {
			var c crdt.Context
			d := c.Incr(crdt.Write{Replica: 0x1234567890abcdef, At: crdt.TimestampOf(time.Now())}, key, 1, 0)
			data := mustEncode(t, d)
			msg := (&message{kind: kindDelta, replica: 0x1234567890abcdef, base: 41, seq: 42,
				groups: []group{{name: "checkout", data: data}}}).encode()
			t.Logf("counter delta: %d bytes of CRDT encoding, %d bytes as a whole message", len(data), len(msg))
			if len(msg) > 64 {
				t.Errorf("a counter increment takes %d bytes on the wire, over 64", len(msg))
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add((&message{kind: kindAck, from: "a", replica: 1, base: 1, seq: 2}).encode())
	f.Add((&message{kind: kindList, from: "a", replica: 1, seq: 2, sums: []uint64{7, 8}}).encode())
	f.Add((&message{kind: kindDigests, from: "a", replica: 1, seq: 2, count: 4, bucketIDs: []int{1, 3}, digests: []digest{{"x", 7}}}).encode())
	f.Add((&message{kind: kindStates, from: "a", replica: 1, want: []string{"x"}, groups: []group{{name: "x", data: []byte{1}}}}).encode())
	var c crdt.Context
	d := c.Incr(crdt.Write{Replica: 9, At: 1 << 30}, "k", 1, 0)
	data, _ := d.MarshalBinary()
	big := &message{kind: kindDelta, from: "a", replica: 1, seq: 3}
	for i := range 20 {
		big.groups = append(big.groups, group{name: fmt.Sprintf("ctx-%d", i), data: data})
	}
	f.Add(big.encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decode(data, 1<<16)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		m2, err := decode(m.encode(), 1<<16)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if m2.kind != m.kind || m2.seq != m.seq || len(m2.groups) != len(m.groups) || len(m2.want) != len(m.want) || len(m2.digests) != len(m.digests) || len(m2.sums) != len(m.sums) || len(m2.bucketIDs) != len(m.bucketIDs) {
			t.Fatalf("round trip changed the message: %+v vs %+v", m, m2)
		}
	})
}

func TestEngine_PrunesDepartedPeers(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, _, _ := newRecorded(t, "a", 1, "b")
	a.SetPeer("b", "b", 2, StateLeft, now)
	a.Prune(now.Add(30 * time.Minute))
	if got := len(a.PeerStatuses(now)); got != 1 {
		t.Fatalf("%d peers listed 30m after b left, want 1 (kept for an hour)", got)
	}
	a.Prune(now.Add(2 * time.Hour))
	if got := len(a.PeerStatuses(now)); got != 0 {
		t.Fatalf("%d peers listed 2h after b left, want 0", got)
	}
	if len(a.names) != 0 {
		t.Errorf("replica index still holds %v after pruning", a.names)
	}
}

// TestEngine_TotalsOutlivePeers: the fleet-wide traffic Stats reports (the counters
// /metrics exports by default) never goes down when a peer is forgotten.
func TestEngine_TotalsOutlivePeers(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, as, arec := newRecorded(t, "a", 1, "b")
	b, _, _ := newRecorded(t, "b", 2, "a")
	d, _ := as.incr("orders", "hits")
	a.Local("orders", d, now)
	a.Round(now)
	out := arec.take()
	if len(out) != 1 {
		t.Fatalf("a sent %d messages, want 1", len(out))
	}
	if err := b.Handle(context.Background(), out[0].m.encodeFrom("a", 1), now); err != nil {
		t.Fatal(err)
	}
	before := b.Stats()
	if before.BytesIn == 0 || before.BytesOut == 0 {
		t.Fatalf("b's totals after a push and its ack: %d bytes in, %d out; want both > 0", before.BytesIn, before.BytesOut)
	}
	b.SetPeer("a", "a", 1, StateLeft, now)
	b.Prune(now.Add(2 * time.Hour))
	if got := len(b.PeerStatuses(now)); got != 0 {
		t.Fatalf("%d peers after pruning, want 0", got)
	}
	after := b.Stats()
	if after.BytesIn != before.BytesIn || after.BytesOut != before.BytesOut || after.Errors != before.Errors {
		t.Errorf("totals went from %+v to %+v once the peer was forgotten; want them kept", before, after)
	}
}

// pushPull runs one push-pull from a to b to the end, delivering every message, and
// returns the bytes each kind took and how many messages of each kind were sent.
func pushPull(t *testing.T, a, b *Engine, arec, brec *recorder) (bytes, msgs map[kind]int) {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bytes, msgs = map[kind]int{}, map[kind]int{}
	a.pushPullWith("b")
	for turn := 0; turn < 10; turn++ {
		from, fromName, rec, to := a, "a", arec, b
		if turn%2 == 1 {
			from, fromName, rec, to = b, "b", brec, a
		}
		sent := rec.take()
		if len(sent) == 0 {
			return bytes, msgs
		}
		for _, s := range sent {
			data := s.m.encodeFrom(fromName, from.replica)
			if len(data) > from.opt.MaxMessageBytes {
				t.Fatalf("%s message of %d bytes, over the limit of %d", s.m.kind, len(data), from.opt.MaxMessageBytes)
			}
			bytes[s.m.kind] += len(data)
			msgs[s.m.kind]++
			if err := to.Handle(context.Background(), data, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Fatal("push-pull did not end in 10 turns")
	return nil, nil
}

func newSized(t *testing.T, name string, replica crdt.ReplicaID, peer string, maxMessage int) (*Engine, *memStore, *recorder) {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := newMemStore(replica, func() time.Time { return now })
	rec := &recorder{}
	e, err := NewEngine(EngineOptions{Name: name, Store: st, Transport: rec, MaxMessageBytes: maxMessage})
	if err != nil {
		t.Fatal(err)
	}
	e.SetPeer(peer, peer, testReplicas[peer], StateAlive, now)
	e.rejoins = 0
	return e, st, rec
}

// Many contexts, few of them different (workflow contexts waiting to expire, a few
// active): a push-pull sends the bucket digests and the digests of the few buckets that
// differ, not one digest per context.
func TestEngine_PushPullScalesWithDifferences(t *testing.T) {
	ctx := context.Background()
	a, as, arec := newSized(t, "a", 1, "b", 0)
	b, bs, brec := newSized(t, "b", 2, "a", 0)
	const contexts = 20000
	names := make([]string, 0, contexts)
	deltas := make([]*crdt.Context, 0, contexts)
	for i := range contexts {
		name := fmt.Sprintf("order-%06d", i)
		d, _ := as.incr(name, "hits")
		names, deltas = append(names, name), append(deltas, d)
	}
	if _, err := bs.MergeAll(ctx, 1, names, deltas); err != nil {
		t.Fatal(err)
	}
	as.incr("order-000007", "hits")
	bs.incr("order-012345", "hits")
	as.incr("new-on-a", "hits")

	sent, _ := pushPull(t, a, b, arec, brec)
	for _, name := range []string{"order-000007", "order-012345", "new-on-a"} {
		if got, want := bs.value(name, "hits"), as.value(name, "hits"); got != want {
			t.Errorf("%s: b reads %d, a reads %d after the push-pull", name, got, want)
		}
	}
	full := contexts * (len("order-000000") + 1 + 8) // one digest per context, as a list
	compared := sent[kindList] + sent[kindDigests]
	t.Logf("compared %d contexts in %d bytes (list %d, digests %d); a digest per context would be %d", contexts, compared, sent[kindList], sent[kindDigests], full)
	if compared > full/5 {
		t.Errorf("the comparison took %d bytes, over a fifth of a digest per context (%d)", compared, full)
	}
	if again, _ := pushPull(t, a, b, arec, brec); again[kindDigests] != 0 || again[kindStates] != 0 {
		t.Errorf("second push-pull moved %v: the states should be equal", again)
	}
}

// When everything differs, the digests are split by bucket into messages under the size
// limit, and every state still arrives.
func TestEngine_PushPullSplitsDigestsUnderTheLimit(t *testing.T) {
	const limit = 64 << 10
	a, as, arec := newSized(t, "a", 1, "b", limit)
	b, bs, brec := newSized(t, "b", 2, "a", limit)
	const contexts = 10000
	for i := range contexts {
		as.incr(fmt.Sprintf("workflow-with-a-long-name-%06d", i), "hits")
	}
	bs.incr("only-on-b", "hits")
	_, msgs := pushPull(t, a, b, arec, brec)
	if got := len(bs.Names()); got != contexts+1 {
		t.Errorf("b holds %d contexts after the push-pull, want %d", got, contexts+1)
	}
	if got := as.value("only-on-b", "hits"); got != 1 {
		t.Errorf("a reads only-on-b = %d, want 1", got)
	}
	if msgs[kindDigests] < 2 || msgs[kindStates] < 2 {
		t.Errorf("%d digests and %d states messages: the test meant to need several of each", msgs[kindDigests], msgs[kindStates])
	}
}

// A peer that answers with one bucket for many contexts (an older view of how many we
// hold) gets that bucket split across messages; it may then send states we hold already,
// never too few.
func TestEngine_PushPullSplitsOneBigBucket(t *testing.T) {
	const limit = 16 << 10
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	a, as, arec := newSized(t, "a", 1, "b", limit)
	b, bs, brec := newSized(t, "b", 2, "a", limit)
	for i := range 3000 {
		as.incr(fmt.Sprintf("workflow-%05d", i), "hits")
	}
	bs.incr("only-on-b", "hits")
	list := &message{kind: kindList, seq: 1, sums: []uint64{0}}
	if err := a.Handle(ctx, list.encodeFrom("b", 2), now); err != nil {
		t.Fatal(err)
	}
	digests := arec.take()
	if len(digests) < 2 {
		t.Fatalf("a sent %d digests messages for one bucket of 3000 contexts, want several", len(digests))
	}
	for turn, msgs := 0, digests; len(msgs) > 0 && turn < 10; turn++ {
		from, fromName, to, next := a, "a", b, brec
		if turn%2 == 1 {
			from, fromName, to, next = b, "b", a, arec
		}
		for _, s := range msgs {
			if err := to.Handle(ctx, s.m.encodeFrom(fromName, from.replica), now); err != nil {
				t.Fatal(err)
			}
		}
		msgs = next.take()
	}
	if got := len(bs.Names()); got != 3001 {
		t.Errorf("b holds %d contexts, want 3001", got)
	}
	if got := as.value("only-on-b", "hits"); got != 1 {
		t.Errorf("a reads only-on-b = %d, want 1", got)
	}
}

// newBounded is an engine a with MaxPeers max, an UnprovenTTL of 10s and a recorder.
func newBounded(t *testing.T, max int) (*Engine, *recorder) {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := &recorder{}
	e, err := NewEngine(EngineOptions{Name: "a", Store: newMemStore(1, func() time.Time { return now }), Transport: rec,
		MaxPeers: max, UnprovenTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e, rec
}

// fromStranger is a root message from a replica id that membership never named.
func fromStranger(r crdt.ReplicaID) []byte {
	return (&message{kind: kindRoot, replica: r, seq: 1, root: 42}).encode()
}

func peerNames(e *Engine, now time.Time) string {
	var names []string
	for _, p := range e.PeerStatuses(now) {
		names = append(names, p.Name)
	}
	return fmt.Sprint(names)
}

// TestEngine_MaxPeers: the peers an engine tracks never exceed MaxPeers; a newcomer takes
// only a place whose loss costs nothing, and is otherwise refused and counted.
func TestEngine_MaxPeers(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, e *Engine)
		// want is the peers tracked at the end; refused, the peers refused.
		want    string
		refused uint64
	}{
		{"strangers past the bound are refused", func(t *testing.T, e *Engine) {
			for r := crdt.ReplicaID(10); r < 13; r++ {
				err := e.Handle(ctx, fromStranger(r), now)
				if r < 12 && err != nil {
					t.Fatalf("stranger %s refused with room left: %v", r, err)
				}
				if r == 12 && !errors.Is(err, errPeerLimit) {
					t.Fatalf("third stranger: err = %v, want the sync.max_peers error", err)
				}
			}
			if got, want := e.Stats().Refused["max_peers"], uint64(1); got != want {
				t.Errorf("refused max_peers messages = %d, want %d", got, want)
			}
		}, "[000000000000000a 000000000000000b]", 1},
		{"a member takes the place of the stranger seen first", func(t *testing.T, e *Engine) {
			e.Handle(ctx, fromStranger(10), now)
			e.Handle(ctx, fromStranger(11), now.Add(time.Second))
			if !e.SetPeer("b", "b", 2, StateAlive, now) {
				t.Fatal("member b refused, want it to take a stranger's place")
			}
		}, "[000000000000000b b]", 0},
		{"a stranger named by membership keeps its place", func(t *testing.T, e *Engine) {
			e.Handle(ctx, fromStranger(2), now)
			e.SetPeer("c", "c", 3, StateAlive, now)
			if !e.SetPeer("b", "b", 2, StateAlive, now) {
				t.Fatal("member b refused though it was tracked as a stranger")
			}
		}, "[b c]", 0},
		{"the member dead the longest makes room", func(t *testing.T, e *Engine) {
			e.SetPeer("b", "b", 2, StateAlive, now)
			e.SetPeer("c", "c", 3, StateAlive, now)
			e.SetPeer("c", "c", 3, StateDead, now.Add(time.Second))
			e.SetPeer("b", "b", 2, StateLeft, now.Add(2*time.Second))
			if !e.SetPeer("d", "d", 4, StateAlive, now) {
				t.Fatal("member d refused though two members are gone")
			}
		}, "[b d]", 0},
		{"alive members are never pushed out", func(t *testing.T, e *Engine) {
			e.SetPeer("b", "b", 2, StateAlive, now)
			e.SetPeer("c", "c", 3, StateSuspect, now)
			if e.SetPeer("d", "d", 4, StateAlive, now) {
				t.Fatal("member d admitted past the bound")
			}
			if err := e.Handle(ctx, fromStranger(10), now); !errors.Is(err, errPeerLimit) {
				t.Fatalf("stranger: err = %v, want the sync.max_peers error", err)
			}
		}, "[b c]", 2},
		{"a peer that is gone is not tracked", func(t *testing.T, e *Engine) {
			if e.SetPeer("b", "b", 2, StateDead, now) {
				t.Fatal("SetPeer tracked a dead peer it never knew")
			}
		}, "[]", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newBounded(t, 2)
			tt.run(t, e)
			if got := peerNames(e, now); got != tt.want {
				t.Errorf("peers %s, want %s", got, tt.want)
			}
			if got := e.Stats().RefusedPeers; got != tt.refused {
				t.Errorf("RefusedPeers = %d, want %d", got, tt.refused)
			}
		})
	}
}

// TestEngine_ExpireForgetsUnproven: a peer that completed no exchange within UnprovenTTL
// is forgotten, member or stranger, and its place goes to the next one; an established
// peer stays.
func TestEngine_ExpireForgetsUnproven(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	e, _ := newBounded(t, 3)
	e.SetPeer("b", "b", 2, StateAlive, now)
	e.SetPeer("c", "c", 3, StateAlive, now)
	e.Handle(ctx, fromStranger(10), now)
	e.Establish("b", "b", 2, now)
	if err := e.Handle(ctx, fromStranger(11), now); !errors.Is(err, errPeerLimit) {
		t.Fatalf("a second stranger past the bound: err = %v, want the sync.max_peers error", err)
	}
	e.Expire(now.Add(10 * time.Second))
	if got, want := peerNames(e, now), "[000000000000000a b c]"; got != want {
		t.Fatalf("peers %s right at UnprovenTTL, want %s", got, want)
	}
	e.Expire(now.Add(11 * time.Second))
	if got, want := peerNames(e, now), "[b]"; got != want {
		t.Fatalf("peers %s after UnprovenTTL, want %s (only the established one)", got, want)
	}
	if got, want := e.Stats().Forgotten, uint64(2); got != want {
		t.Errorf("Forgotten = %d, want %d", got, want)
	}
	if len(e.names) != 1 {
		t.Errorf("replica index holds %v, want only b's", e.names)
	}
	if err := e.Handle(ctx, fromStranger(11), now.Add(11*time.Second)); err != nil {
		t.Fatalf("the second stranger refused once the unproven peers were forgotten: %v", err)
	}
	// A forgotten member that answers a probe is tracked again, established.
	e.Establish("c", "c", 3, now.Add(12*time.Second))
	if !e.Established("c") {
		t.Error("c is not established after answering a probe")
	}
}

// TestEngine_Established pins down what completes an exchange: an answer, from a member,
// to a message this engine sent it. Unsolicited messages, and anything from a stranger,
// do not.
func TestEngine_Established(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	tests := []struct {
		name string
		// run leaves b (or the stranger) established or not in a.
		run  func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string
		want bool
	}{
		{"ack of a push", func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string {
			d, _ := as.incr("orders", "hits")
			a.Local("orders", d, now)
			a.Round(now)
			for _, s := range arec.take() {
				b.Handle(ctx, s.m.encodeFrom("a", 1), now)
			}
			for _, s := range brec.take() {
				a.Handle(ctx, s.m.encodeFrom("b", 2), now)
			}
			return "b"
		}, true},
		{"list answering a root", func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string {
			a.PushPull()
			for _, s := range arec.take() {
				b.Handle(ctx, s.m.encodeFrom("a", 1), now)
			}
			for _, s := range brec.take() {
				a.Handle(ctx, s.m.encodeFrom("b", 2), now)
			}
			return "b"
		}, true},
		{"unsolicited ack", func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string {
			a.Handle(ctx, (&message{kind: kindAck, replica: 2, base: 0, seq: 1}).encode(), now)
			return "b"
		}, false},
		{"unsolicited list", func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string {
			a.Handle(ctx, (&message{kind: kindList, replica: 2, seq: 0, equal: true}).encode(), now)
			return "b"
		}, false},
		{"root from the peer", func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string {
			b.PushPull()
			for _, s := range brec.take() {
				a.Handle(ctx, s.m.encodeFrom("b", 2), now)
			}
			return "b"
		}, false},
		{"stranger answering a list", func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string {
			as.incr("orders", "hits")
			a.Handle(ctx, (&message{kind: kindRoot, replica: 9, seq: 1, root: 42}).encode(), now)
			list := arec.take()
			if len(list) != 1 || list[0].m.kind != kindList {
				t.Fatalf("a answered the stranger's root with %v, want a list", list)
			}
			a.Handle(ctx, (&message{kind: kindDigests, replica: 9, seq: 1, count: len(list[0].m.sums)}).encode(), now)
			return crdt.ReplicaID(9).String()
		}, false},
		{"membership probe", func(t *testing.T, a *Engine, as *memStore, arec *recorder, b *Engine, brec *recorder) string {
			a.Establish("b", "b", 2, now)
			return "b"
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, as, arec := newRecorded(t, "a", 1, "b")
			b, _, brec := newRecorded(t, "b", 2, "a")
			name := tt.run(t, a, as, arec, b, brec)
			if got := a.Established(name); got != tt.want {
				t.Errorf("Established(%s) = %v, want %v", name, got, tt.want)
			}
		})
	}
}
