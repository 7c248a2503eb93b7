package headers

import (
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Entry is the context of an in-flight inbound request, remembered by trace-id.
// The Correlator shares it between goroutines: treat Flags as read-only.
type Entry struct {
	Name  string
	Flags []Flag
}

func (e Entry) empty() bool { return e.Name == "" && len(e.Flags) == 0 }

// Sharding keeps Begin and Lookup from contending on one mutex under load. Small
// tables use one shard so that the capacity bound is exact and eviction is strictly
// oldest first.
const (
	maxShards          = 16
	minPerShardToSplit = 64
)

// Correlator is a bounded table of the contexts of in-flight inbound requests, keyed
// by trace-id (SPEC §4 Correlation). An entry leaves the table when its request
// completes (the release func), when it is older than the timeout, or when the table
// is full and it is the oldest. It is safe for concurrent use; the zero value is not
// usable, use NewCorrelator.
type Correlator struct {
	timeout time.Duration
	shards  []shard
}

// shard is a map for lookup plus a doubly linked list in Begin order, oldest at
// head: with one timeout for all entries, that is also deadline order, so both
// expiry and eviction take from the head.
type shard struct {
	mu         sync.Mutex
	capacity   int
	m          map[trace.TraceID]*slot
	head, tail *slot
}

type slot struct {
	id         trace.TraceID
	entry      Entry
	refs       int       // requests in flight with this trace-id
	deadline   time.Time // zero: none
	prev, next *slot
	gone       bool // removed from the table; its releases are no-ops
}

// NewCorrelator returns a Correlator holding at most capacity entries (at least 1),
// each for at most timeout after its last Begin (a timeout ≤ 0 means no timeout: a
// request that never completes stays until evicted for room). It starts no
// goroutine: expired entries are dropped lazily.
func NewCorrelator(capacity int, timeout time.Duration) *Correlator {
	capacity = max(capacity, 1)
	n := 1
	for n < maxShards && capacity/(n*2) >= minPerShardToSplit {
		n *= 2
	}
	c := &Correlator{timeout: timeout, shards: make([]shard, n)}
	for i := range c.shards {
		// The per-shard share rounds down, so the total never exceeds capacity.
		c.shards[i] = shard{capacity: capacity / n, m: make(map[trace.TraceID]*slot)}
	}
	return c
}

func (c *Correlator) shard(id trace.TraceID) *shard {
	// Level 2 trace-ids have their randomness at the right (§3.2.2.3), and
	// sequential ones vary there too.
	return &c.shards[int(id[15])&(len(c.shards)-1)]
}

// Begin records e for trace-id id while an inbound request is in flight and returns
// the func to call when it completes (idempotent; safe after eviction). Concurrent
// requests with one trace-id share an entry holding the latest e; it leaves the table
// when the last of them completes. An invalid id or an empty e records nothing.
func (c *Correlator) Begin(id trace.TraceID, e Entry) (release func()) {
	return c.BeginAt(id, e, time.Now())
}

// BeginAt is Begin for a request that started at now: a proxy that reads the clock
// for the request's latency anyway passes that reading and saves one.
func (c *Correlator) BeginAt(id trace.TraceID, e Entry, now time.Time) (release func()) {
	if !id.IsValid() || e.empty() {
		return func() {}
	}
	var deadline time.Time
	if c.timeout > 0 {
		deadline = now.Add(c.timeout)
	}
	s := c.shard(id)
	s.mu.Lock()
	s.expire(now)
	sl := s.m[id]
	if sl != nil {
		sl.refs++
		sl.entry, sl.deadline = e, deadline
		s.unlink(sl)
		s.push(sl)
	} else {
		if len(s.m) >= s.capacity {
			s.remove(s.head)
		}
		sl = &slot{id: id, entry: e, refs: 1, deadline: deadline}
		s.m[id] = sl
		s.push(sl)
	}
	s.mu.Unlock()

	released := false
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if released || sl.gone {
			released = true
			return
		}
		released = true
		if sl.refs--; sl.refs == 0 {
			s.remove(sl)
		}
	}
}

// Lookup returns the entry for id, if one is in flight and not expired.
func (c *Correlator) Lookup(id trace.TraceID) (Entry, bool) {
	if !id.IsValid() {
		return Entry{}, false
	}
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.m[id]
	if sl == nil {
		return Entry{}, false
	}
	if !sl.deadline.IsZero() && !time.Now().Before(sl.deadline) {
		s.remove(sl)
		return Entry{}, false
	}
	return sl.entry, true
}

// Len returns the number of entries in the table, expired ones not yet dropped
// included.
func (c *Correlator) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// expire drops the entries whose deadline has passed. Called with s.mu held.
func (s *shard) expire(now time.Time) {
	for s.head != nil && !s.head.deadline.IsZero() && !now.Before(s.head.deadline) {
		s.remove(s.head)
	}
}

func (s *shard) push(sl *slot) {
	sl.prev, sl.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = sl
	} else {
		s.head = sl
	}
	s.tail = sl
}

func (s *shard) unlink(sl *slot) {
	if sl.prev != nil {
		sl.prev.next = sl.next
	} else {
		s.head = sl.next
	}
	if sl.next != nil {
		sl.next.prev = sl.prev
	} else {
		s.tail = sl.prev
	}
	sl.prev, sl.next = nil, nil
}

func (s *shard) remove(sl *slot) {
	s.unlink(sl)
	delete(s.m, sl.id)
	sl.gone = true
}
