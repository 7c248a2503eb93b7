package localstore

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
)

// Event is one committed change of a context, local or replicated (ctxstore.Event).
type Event = ctxstore.Event

// Subscription receives the events of one watcher (ctxstore.Subscription).
type Subscription = ctxstore.Subscription

// The event log's bounds: a watcher that reconnects within about a minute of steady
// telemetry (or 4096 small changes) resumes where it stopped; later, it rereads the state.
const (
	eventLogEvents = 4096
	eventLogBytes  = 2 << 20
)

// eventLog keeps the latest events for resuming watchers and fans new ones out.
//
// It holds at most len(ring) events and about budget bytes of them, whichever is less:
// a count alone let the log grow for minutes under steady traffic (a telemetry event per
// context per commit window holds a delta of a dozen counters, about 3.8 KB), to some 15 MB
// (issue 14's memory growth). A watcher resuming from an event no longer held is told it
// missed events and rereads the state, as after any gap.
type eventLog struct {
	mu     sync.Mutex
	next   uint64
	ring   []Event // circular: n events from head
	cost   []int   // eventBytes of ring's events
	head   int
	n      int
	bytes  int // the sum of cost over the events held
	budget int
	subs   map[*subscription]struct{}
	closed bool
}

func newEventLog(size, budget int) *eventLog {
	// IDs start from the wall clock so that an ID from before a restart is older than
	// every ID after it: the watcher is told it missed events rather than given wrong ones.
	return &eventLog{
		next:   uint64(time.Now().UnixMicro()),
		ring:   make([]Event, size),
		cost:   make([]int, size),
		budget: budget,
		subs:   map[*subscription]struct{}{},
	}
}

// hold appends e to the held events, dropping the oldest beyond the count or the budget.
// The newest event is always held, whatever it costs.
func (l *eventLog) hold(e Event) {
	c := eventBytes(e)
	for l.n > 0 && (l.n == len(l.ring) || l.bytes+c > l.budget) {
		l.ring[l.head] = Event{} // let the delta go
		l.bytes -= l.cost[l.head]
		l.head = (l.head + 1) % len(l.ring)
		l.n--
	}
	i := (l.head + l.n) % len(l.ring)
	l.ring[i], l.cost[i] = e, c
	l.n++
	l.bytes += c
}

// eventBytes estimates the memory an event holds: its delta's maps and their entries as
// the Go runtime lays them out, measured on the telemetry deltas the proxy writes
// (TestEventLog_BudgetBoundsMemory holds the estimate to the heap).
func eventBytes(e Event) int {
	n := 512 + len(e.Context)
	d := e.Delta
	if d == nil {
		return n
	}
	for k, ct := range d.Counters {
		n += 260 + len(k) + 112*(len(ct.Slots)+len(ct.Folds))
	}
	for m, regs := range d.Maps {
		n += 260 + len(m)
		for k, r := range regs {
			n += 112 + len(k) + len(r.Value)
		}
	}
	for s, members := range d.Sets {
		n += 260 + len(s)
		for m, dots := range members {
			n += 112 + len(m) + 64*len(dots)
		}
	}
	n += 64 * len(d.Pruned)
	n += 32 * len(e.Touched.Counters)
	for m, keys := range e.Touched.Maps {
		n += 64 + len(m) + 32*len(keys)
	}
	return n + 32*len(e.Touched.Sets)
}

// subscription is the store's ctxstore.Subscription: a buffered channel the event log
// fans out to, closed rather than blocking the committer when full (lagged).
type subscription struct {
	c      chan Event
	missed bool // set before the subscription is handed out
	filter string
	log    *eventLog
	lagged bool
}

var _ Subscription = (*subscription)(nil)

func (s *subscription) Events() <-chan Event { return s.c }

func (s *subscription) Missed() bool { return s.missed }

func (s *subscription) Lagged() bool {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	return s.lagged
}

func (s *subscription) Close() {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	if _, ok := s.log.subs[s]; ok {
		delete(s.log.subs, s)
		close(s.c)
	}
}

// Watch subscribes to the committed changes of context name ("" for all), starting after
// event ID after (0: only new events). Events still held after that ID are delivered first.
func (s *Store) Watch(ctx context.Context, name string, after uint64) (Subscription, error) {
	if name != "" {
		if err := ValidName(name); err != nil {
			return nil, err
		}
	}
	sub, err := s.events.subscribe(name, after)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, sub.Close)
	return sub, nil
}

const subscriptionBuffer = 1024

func (l *eventLog) subscribe(name string, after uint64) (*subscription, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	sub := &subscription{c: make(chan Event, subscriptionBuffer), filter: name, log: l}
	if after != 0 {
		held := l.ordered()
		if len(held) == 0 || held[0].ID > after+1 {
			sub.missed = after+1 < l.next
		}
		for _, e := range held {
			if e.ID > after && (name == "" || e.Context == name) {
				if len(sub.c) == cap(sub.c) {
					sub.missed = true
					break
				}
				sub.c <- e
			}
		}
	}
	l.subs[sub] = struct{}{}
	return sub, nil
}

// LastEventID returns the ID of the latest event, 0 if none yet: a watcher that has just
// read the state resumes after it.
func (s *Store) LastEventID() uint64 {
	s.events.mu.Lock()
	defer s.events.mu.Unlock()
	return s.events.next - 1
}

// ordered returns the events held, oldest first.
func (l *eventLog) ordered() []Event {
	if l.head+l.n <= len(l.ring) {
		return l.ring[l.head : l.head+l.n]
	}
	return append(append([]Event{}, l.ring[l.head:]...), l.ring[:(l.head+l.n)%len(l.ring)]...)
}

// coalesce joins the events of one committed batch per context and origin, in the order
// the pairs first appear, as logEntries does for the write-ahead log: a window of Windowed
// writes is one event per context, not one per write. Without it a batch larger than a
// subscription's buffer (1024) was delivered in one burst under the log's lock, faster
// than any watcher reads, so the sync layer's subscription lagged and was renewed on every
// busy window even with no peer to send to (issue 14). A join of deltas is a delta of the
// same writes, so a watcher sees the same state.
func coalesce(events []Event) []Event {
	if len(events) < 2 {
		return events
	}
	type key struct {
		name   string
		origin crdt.ReplicaID
	}
	at := make(map[key]int, 1)
	out := make([]Event, 0, 1)
	owned := make([]bool, 0, 1)
	for _, e := range events {
		k := key{e.Context, e.Origin}
		i, seen := at[k]
		if !seen {
			at[k] = len(out)
			out = append(out, e)
			owned = append(owned, false)
			continue
		}
		t := &out[i].Touched
		if !owned[i] {
			// The first event's delta is shared (the writer's, the write-ahead log's
			// entries): join into a copy. Its lists are shared too: they grow as copies,
			// sorted once at the end rather than at every join.
			out[i].Delta, owned[i] = out[i].Delta.Clone(), true
			t.Counters, t.Sets = slices.Clone(t.Counters), slices.Clone(t.Sets)
		}
		out[i].Delta.Join(e.Delta)
		t.Counters = appendTouched(t.Counters, e.Touched.Counters)
		t.Sets = appendTouched(t.Sets, e.Touched.Sets)
		t.Context = t.Context || e.Touched.Context
		if len(t.Maps)+len(e.Touched.Maps) > 0 {
			t.Maps = joinTouched(crdt.Touched{Maps: t.Maps}, crdt.Touched{Maps: e.Touched.Maps}).Maps
		}
	}
	for i := range out {
		if owned[i] {
			t := &out[i].Touched
			slices.Sort(t.Counters)
			t.Counters = slices.Compact(t.Counters)
			slices.Sort(t.Sets)
			t.Sets = slices.Compact(t.Sets)
		}
	}
	return out
}

// appendTouched appends y to x, a list coalesce owns, and sorts and compacts x first
// whenever it is full: a window of many events touching the same keys keeps a list about
// the size of its keys, not of its events.
func appendTouched(x, y []string) []string {
	if len(x)+len(y) > cap(x) {
		slices.Sort(x)
		x = slices.Compact(x)
	}
	return append(x, y...)
}

// joinTouched returns what a and b touch together, each list sorted and without
// duplicates as crdt.Context.Touches makes them.
func joinTouched(a, b crdt.Touched) crdt.Touched {
	union := func(x, y []string) []string {
		if len(y) == 0 {
			return x
		}
		out := append(slices.Clone(x), y...)
		slices.Sort(out)
		return slices.Compact(out)
	}
	t := crdt.Touched{Counters: union(a.Counters, b.Counters), Sets: union(a.Sets, b.Sets), Context: a.Context || b.Context}
	if len(a.Maps)+len(b.Maps) > 0 {
		t.Maps = make(map[string][]string, len(a.Maps)+len(b.Maps))
		for m, keys := range a.Maps {
			t.Maps[m] = keys
		}
		for m, keys := range b.Maps {
			t.Maps[m] = union(t.Maps[m], keys)
		}
	}
	return t
}

// publish delivers events, coalesced by the caller (see coalesce), and holds them.
func (l *eventLog) publish(events []Event, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range events {
		e.ID = l.next
		e.Time = now
		l.next++
		l.hold(e)
		for sub := range l.subs {
			if sub.filter != "" && sub.filter != e.Context {
				continue
			}
			select {
			case sub.c <- e:
			default:
				sub.lagged = true
				delete(l.subs, sub)
				close(sub.c)
			}
		}
	}
}

func (l *eventLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for sub := range l.subs {
		delete(l.subs, sub)
		close(sub.c)
	}
}
