package peersync

import (
	"sync"
)

// outbox holds, for each peer, the messages waiting to be sent to it, and runs one sender
// goroutine for each peer that has something to send (SPEC §7: "Sends to one slow or
// unreachable peer never delay sends to others"; issue 11). A send may block: memberlist
// dials a TCP stream for a message over one UDP packet, and a dial to a peer that is cut
// off but not yet declared dead waits out the dial timeout. That now holds only that
// peer's sender; the caller of put (a gossip round, the receive loop answering a
// push-pull) never waits on a send.
//
// A sender exits when its queue is empty, so an idle peer costs no goroutine, and senders
// are at most maxQueues (MaxPeers). Memory is bounded: per peer, at most maxMsgs messages
// and maxBytes bytes waiting (a queue with none waiting takes one message of any size,
// which the engine keeps under MaxMessageBytes), and maxTotal bytes waiting or being sent
// over every peer. The bursts of a push-pull (digests, states) wait as a few names and are
// read and split into messages by the sender, one message at a time.
//
// What does not fit is coalesced or dropped, and counted:
//
//   - A delta for a peer that already has a delta waiting is joined into it (joinDeltas):
//     deltas are join-semilattice values, so the join carries both, in one message no
//     bigger than their union. A slow peer then holds one delta that grows only with new
//     changes, not one message per round.
//   - Anything else that does not fit is dropped: an ack (the sender resends the interval
//     when the ack does not come), a push-pull step (the next push-pull starts over), a
//     delta that cannot be joined (the engine marks the interval unsent and pushes it
//     again from the last acknowledged point; what ages out of the buffer meanwhile,
//     anti-entropy repairs). A dropped message is reported to drop, which does that
//     bookkeeping.
type outbox struct {
	// send sends one item and records the outcome; it may block. drop records an item
	// that will not be sent. Neither is called with mu held.
	send func(to string, it *item)
	drop func(to string, it *item)

	maxMsgs, maxBytes, maxTotal, maxQueues, maxMessage int

	mu        sync.Mutex
	queues    map[string]*queue
	total     int // bytes waiting or being sent, every peer
	waiting   int // messages waiting, every peer
	closed    bool
	dropped   map[kind]uint64
	coalesced uint64
	wg        sync.WaitGroup
}

// queue is one peer's messages; outbox.mu guards it.
type queue struct {
	to      string
	items   []*item // waiting, oldest first
	bytes   int     // of items
	sending bool    // a sender goroutine runs for it
}

// item is one message for a peer: encoded (data), or a lazy push-pull step (digests or
// states) that the sender reads and splits into messages when it gets to it.
type item struct {
	msg  *message
	data []byte
	size int // bytes held: len(data), or the names of a lazy step
}

func newOutbox(send, drop func(string, *item), maxMsgs, maxBytes, maxTotal, maxQueues, maxMessage int) *outbox {
	return &outbox{send: send, drop: drop, maxMsgs: maxMsgs, maxBytes: maxBytes, maxTotal: maxTotal,
		maxQueues: maxQueues, maxMessage: maxMessage, queues: map[string]*queue{}, dropped: map[kind]uint64{}}
}

// put queues it for peer to and returns at once. After close it drops it silently.
func (o *outbox) put(to string, it *item) {
	if it.msg.kind == kindDelta {
		if w := o.takeDelta(to); w != nil {
			// Joined outside the lock: a join and its encoding cost the caller, not the
			// other peers' senders.
			if j := joinDeltas(w.msg, it.msg); j != nil {
				if data := j.encode(); len(data) <= o.maxMessage {
					o.mu.Lock()
					o.coalesced++
					o.mu.Unlock()
					it = &item{msg: j, data: data, size: len(data)}
					w = nil
				}
			}
			if w != nil {
				o.add(to, w) // too big to join: both wait, if they fit
			}
		}
	}
	o.add(to, it)
}

// takeDelta removes and returns the delta waiting for peer to, nil if none.
func (o *outbox) takeDelta(to string) *item {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queues[to]
	if q == nil {
		return nil
	}
	for i, it := range q.items {
		if it.msg.kind == kindDelta {
			q.items = append(q.items[:i], q.items[i+1:]...)
			q.bytes -= it.size
			o.total -= it.size
			o.waiting--
			return it
		}
	}
	return nil
}

// add appends it to peer to's queue if it fits, starting the peer's sender if none runs;
// otherwise it drops it.
func (o *outbox) add(to string, it *item) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	q := o.queues[to]
	fits := o.total+it.size <= o.maxTotal
	if q == nil {
		fits = fits && len(o.queues) < o.maxQueues
	} else {
		fits = fits && len(q.items) < o.maxMsgs && (len(q.items) == 0 || q.bytes+it.size <= o.maxBytes)
	}
	if !fits {
		o.dropped[it.msg.kind]++
		o.mu.Unlock()
		o.drop(to, it)
		return
	}
	if q == nil {
		q = &queue{to: to}
		o.queues[to] = q
	}
	q.items = append(q.items, it)
	q.bytes += it.size
	o.total += it.size
	o.waiting++
	if !q.sending {
		q.sending = true
		o.wg.Add(1)
		go o.run(q)
	}
	o.mu.Unlock()
}

// run sends q's items in order until q is empty or the outbox closes.
func (o *outbox) run(q *queue) {
	defer o.wg.Done()
	for {
		o.mu.Lock()
		if len(q.items) == 0 || o.closed {
			q.sending = false
			if len(q.items) == 0 && o.queues[q.to] == q {
				delete(o.queues, q.to)
			}
			o.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		q.bytes -= it.size
		o.waiting--
		o.mu.Unlock()

		o.send(q.to, it)

		o.mu.Lock()
		o.total -= it.size
		o.mu.Unlock()
	}
}

// close drops what waits and waits for the sends in progress to end; safe to call twice.
// A send in progress ends by itself: the transport bounds it with its own timeout, and
// Syncer shuts memberlist down, which ends its dials, before it closes the engine.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	for to, q := range o.queues {
		for _, it := range q.items {
			o.total -= it.size
		}
		o.waiting -= len(q.items)
		q.items, q.bytes = nil, 0
		if !q.sending {
			delete(o.queues, to)
		}
	}
	o.mu.Unlock()
	o.wg.Wait()
}

// outboxStats are an outbox's counters.
type outboxStats struct {
	waiting, bytes, senders int
	dropped                 map[kind]uint64
	coalesced               uint64
}

func (o *outbox) stats() outboxStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := outboxStats{waiting: o.waiting, bytes: o.total, dropped: make(map[kind]uint64, len(o.dropped)), coalesced: o.coalesced}
	for _, q := range o.queues {
		if q.sending {
			st.senders++
		}
	}
	for k, n := range o.dropped {
		st.dropped[k] = n
	}
	return st
}

// busy reports whether peer to has a message being sent or waiting.
func (o *outbox) busy(to string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queues[to]
	return q != nil && (q.sending || len(q.items) > 0)
}

// joinDeltas joins two delta messages to one peer into one that carries both: the
// interval (min base, max seq] and, per context, the join of both groups. Nil if a joined
// group cannot be encoded.
//
// Its acknowledgement is right. The engine takes an ack of (base, seq] only when base is
// at most what the peer acknowledged, and then records that the peer knows every entry up
// to seq. The joined message holds every entry of both intervals. Between them there is
// no gap the peer may not know: a later delta starts where the earlier one ended (the
// engine's sent mark) or at what the peer acknowledged, which covers all before it; and
// a delta built in between was joined into the same waiting message, or was sent before
// it. Entries from the peer itself are left out of both, as of every push to it.
func joinDeltas(a, b *message) *message {
	out := &message{kind: kindDelta, replica: a.replica, base: min(a.base, b.base), seq: max(a.seq, b.seq),
		groups: make([]group, 0, len(a.groups)+len(b.groups))}
	index := make(map[string]int, len(a.groups)+len(b.groups))
	joined := map[int]bool{}
	for _, g := range a.groups {
		index[g.name] = len(out.groups)
		out.groups = append(out.groups, g)
	}
	for _, g := range b.groups {
		i, ok := index[g.name]
		if !ok {
			index[g.name] = len(out.groups)
			out.groups = append(out.groups, g)
			continue
		}
		if !joined[i] {
			// The groups' contexts are the buffer's entries: never changed in place.
			out.groups[i].ctx = out.groups[i].ctx.Clone()
			joined[i] = true
		}
		out.groups[i].ctx.Join(g.ctx)
	}
	for i := range joined {
		data, err := out.groups[i].ctx.MarshalBinary()
		if err != nil {
			return nil
		}
		out.groups[i].data = data
	}
	return out
}
