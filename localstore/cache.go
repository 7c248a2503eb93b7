package localstore

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// Contexts are kept in memory in their binary encoding, and decoded only while they are
// in use (issue 11). A decoded crdt.Context is made of Go maps, a map per counter among
// them: a context holding one counter takes about 900 bytes of heap decoded and about 40
// encoded. A store of 100 000 idle contexts would otherwise take 90 MB of heap, and twice
// that in RSS once the garbage collector's headroom is counted. The contexts used lately
// stay decoded in a small cache, so the request path, which writes the same few contexts
// over and over, decodes nothing; a write to another context costs one decode, and one
// encode when the cache lets it go.

const (
	// defaultCacheContexts and defaultCacheBytes bound the cache of decoded contexts
	// (Options.CacheContexts, Options.CacheBytes).
	defaultCacheContexts = 1024
	defaultCacheBytes    = 16 << 20
)

// slot is what the store holds of every context; a map of them by name is the index of
// the store. It is kept small: in a Go map of 100 000 contexts each byte of it costs about
// two.
type slot struct {
	// data is the canonical encoding of the state (crdt.Context.MarshalBinary), a string
	// so that it costs no capacity and can be read after the lock is released. While
	// the context is in the cache and changed since (hotContext.stale) it is out of date,
	// and "" for a context created since.
	data string
	// due is when the sweeper must next look at the state data encodes (sweepDue), so
	// that it decodes only the few contexts due, not every context every SweepInterval.
	due crdt.Timestamp
}

// hotContext is a decoded context in the cache, on a list from the most recently used
// to the least.
type hotContext struct {
	name string
	c    *crdt.Context
	// stale: c changed since slot.data was encoded.
	stale bool
	// size is the length of the last encoding, what the cache's byte bound counts.
	size       int
	prev, next *hotContext
}

// cache holds the decoded contexts by name and in the order of their use, and what they
// count against its bounds.
type cache struct {
	m          map[string]*hotContext
	head       hotContext // head.next is the most recently used, head.prev the least
	n, bytes   int
	maxN, maxB int
}

func (l *cache) init(maxN, maxB int) {
	l.m = make(map[string]*hotContext)
	l.head.next, l.head.prev = &l.head, &l.head
	l.maxN, l.maxB = maxN, maxB
}

func (l *cache) add(h *hotContext) {
	l.m[h.name] = h
	h.prev, h.next = &l.head, l.head.next
	h.prev.next, h.next.prev = h, h
	l.n++
	l.bytes += h.size
}

func (l *cache) remove(h *hotContext) {
	delete(l.m, h.name)
	h.prev.next, h.next.prev = h.next, h.prev
	h.prev, h.next = nil, nil
	l.n--
	l.bytes -= h.size
}

func (l *cache) moveToFront(h *hotContext) {
	if l.head.next == h {
		return
	}
	h.prev.next, h.next.prev = h.next, h.prev
	h.prev, h.next = &l.head, l.head.next
	h.prev.next, h.next.prev = h, h
}

// state returns the decoded state of context name, decoding it into the cache if it is
// not there, and whether the store holds the context. The state may be changed in place;
// call changed after. s.mu must be held for writing (or the store not yet open).
func (s *Store) state(name string) (*crdt.Context, bool, error) {
	if h := s.cache.m[name]; h != nil {
		s.cache.moveToFront(h)
		return h.c, true, nil
	}
	sl, ok := s.contexts[name]
	if !ok {
		return nil, false, nil
	}
	c, err := decodeState(name, sl.data)
	if err != nil {
		// Memory the store wrote no longer reads back: stop taking writes, as when a
		// write to disk fails, rather than build on it; a restart reloads the file.
		s.log.Error("refusing further writes", "error", err)
		s.failed = fmt.Errorf("%w: %v", ErrFailed, err)
		s.stats.Failures++
		return nil, false, s.failed
	}
	h := &hotContext{name: s.key(name), c: c, size: len(sl.data)}
	s.cache.add(h)
	s.trim(h)
	return c, true, nil
}

// key returns the store's copy of the name of a context it holds: a name that came with
// a request or a peer's message is part of the whole request line or message, which must
// not stay in memory with it. s.mu must be held.
func (s *Store) key(name string) string {
	if h := s.cache.m[name]; h != nil {
		return h.name
	}
	// Go maps do not give their keys back; the name is copied once per decode.
	return strings.Clone(name)
}

// create adds context name, which the store does not hold, with state c, and returns the
// name as the store keeps it; s.mu must be held for writing.
func (s *Store) create(name string, c *crdt.Context) string {
	name = strings.Clone(name) // see key
	s.contexts[name] = slot{}
	h := &hotContext{name: name, c: c, stale: true}
	s.cache.add(h)
	s.trim(h)
	return name
}

// changed records that the state of context name, in the cache, changed, and returns
// the name as the store keeps it (see key); s.mu must be held for writing.
func (s *Store) changed(name string) string {
	h := s.cache.m[name]
	h.stale = true
	return h.name
}

// remove forgets context name; s.mu must be held for writing.
func (s *Store) remove(name string) {
	if h := s.cache.m[name]; h != nil {
		s.cache.remove(h)
	}
	delete(s.contexts, name)
}

// trim lets the least recently used contexts go, encoding those that changed, until
// the cache is within its bounds; keep, the one in use, always stays. s.mu must be held
// for writing.
func (s *Store) trim(keep *hotContext) {
	for s.cache.n > s.cache.maxN || s.cache.bytes > s.cache.maxB {
		h := s.cache.head.prev
		if h == keep || h == &s.cache.head {
			return
		}
		if h.stale {
			data, due := s.encode(h)
			s.contexts[h.name] = slot{data, due}
		}
		s.cache.remove(h)
	}
}

// encoded returns the current encoding of context name, encoding a changed state and
// keeping the result; ok is false if the store does not hold the context. s.mu must be
// held for writing.
func (s *Store) encoded(name string) (data string, ok bool) {
	if h := s.cache.m[name]; h != nil && h.stale {
		data, due := s.encode(h)
		s.contexts[name] = slot{data, due}
		return data, true
	}
	sl, ok := s.contexts[name]
	return sl.data, ok
}

// encode encodes a cached state (see encodeState), marks it up to date and updates the
// cache's byte count. s.mu must be held for writing.
func (s *Store) encode(h *hotContext) (string, crdt.Timestamp) {
	data, due := s.encodeState(h.c)
	h.stale = false
	s.cache.bytes += len(data) - h.size
	h.size = len(data)
	return data, due
}

// encodeState returns the encoding of c, exactly sized (an encoding grown by append would
// keep up to twice its bytes for as long as the context stays idle), and when the sweeper
// must next look at c. s.mu must be held for writing (or the store not yet open).
func (s *Store) encodeState(c *crdt.Context) (string, crdt.Timestamp) {
	// AppendBinary cannot fail: the error is part of the encoding.BinaryAppender shape.
	s.scratch, _ = c.AppendBinary(s.scratch[:0])
	data := string(s.scratch)
	if cap(s.scratch) > 1<<20 {
		s.scratch = nil // a rare large context should not pin its buffer
	}
	return data, sweepDue(c, s.opt.TombstoneTTL)
}

// sweepDue returns an instant before which Sweep would not change c: Compact(now, grace)
// changes nothing and the context is not dropped for any now before it. It is the
// earliest instant any of these rules of Compact and Sweep could apply, or earlier:
//
//   - an entry, set addition, counter or the context expires (Expires);
//   - a tombstone, an expired counter's floor or a context holding nothing is older
//     than grace (TS, Floor, Cleared + grace);
//   - a retired replica's fold is older than grace, or its Pruned record older than
//     twice that (crdt's compactRetired).
//
// The zero Timestamp means c is due now; a state with nothing that ever expires or ages
// gets the largest Timestamp. TestSweepDue holds it to Compact.
func sweepDue(c *crdt.Context, grace time.Duration) crdt.Timestamp {
	g := crdt.Timestamp(uint64(grace.Milliseconds()) << 16) // a Timestamp's logical part is 16 bits
	due := crdt.Timestamp(math.MaxUint64)
	at := func(t crdt.Timestamp) {
		if t != 0 {
			due = min(due, t)
		}
	}
	at(c.Meta.Expires)
	if c.Size() == 0 {
		at(max(c.Cleared, c.Meta.TS, 1) + g)
	}
	for _, ct := range c.Counters {
		if ct.Floor != 0 {
			at(ct.Floor + g)
		}
		for _, sl := range ct.Slots {
			at(sl.Expires)
		}
		for _, f := range ct.Folds {
			if f.At != 0 {
				at(f.At + g) // a settled fold is pruned then
			}
		}
	}
	for _, t := range c.Pruned {
		at(max(t, 1) + 2*g) // a pruned replica's record is forgotten a second grace later
	}
	for _, m := range c.Maps {
		for _, r := range m {
			at(r.Expires)
			if r.Value == nil {
				at(r.TS + g)
			}
		}
	}
	for _, set := range c.Sets {
		for _, dots := range set {
			for _, b := range dots {
				at(b.Expires)
			}
		}
	}
	return due
}

// decodeState decodes the encoding the store keeps of context name. The store made it,
// so an error means memory the store did not write: a bug, not bad input.
func decodeState(name, data string) (*crdt.Context, error) {
	c := &crdt.Context{}
	if err := c.UnmarshalBinary([]byte(data)); err != nil {
		return nil, fmt.Errorf("localstore: context %q: the encoding kept in memory does not decode (%w); this is a bug, please report it, and restart the sidecar to reload its file", name, err)
	}
	return c, nil
}
