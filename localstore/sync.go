package localstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/ctxprop/ctxprop/crdt"
)

// This file holds what the sync layer (package sync, issue 4) needs beyond the admin API:
// every context name, canonical encodings for digests and full-state transfer, and a merge
// of many remote deltas in one commit that reports which of them changed anything.

// Names returns the name of every context the store holds, expired ones included (their
// clears and expiries must replicate too), sorted.
func (s *Store) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.contexts))
	for name := range s.contexts {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Encoded returns the canonical encoding of a context's state (equal states give equal
// bytes); ok is false if the store holds nothing under that name. The store keeps most
// contexts encoded (cache.go): it costs a copy of the bytes, or one pass over the state of
// a context changed since its last encoding.
func (s *Store) Encoded(name string) (data []byte, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h := s.cache.m[name]; h != nil && h.stale {
		data, err := h.c.MarshalBinary()
		return data, err == nil
	}
	sl, ok := s.contexts[name]
	if !ok {
		return nil, false
	}
	return []byte(sl.data), true
}

// MergeAll joins deltas received from replica origin, deltas[i] into context names[i], in
// one commit, and returns after it is durable. changed[i] reports whether deltas[i] changed
// the state; a delta that changed nothing produces no event and no write. Every name and
// every timestamp is checked before anything is joined: one bad delta refuses the whole
// call (an error wrapping ErrInvalid) with nothing merged.
func (s *Store) MergeAll(ctx context.Context, origin crdt.ReplicaID, names []string, deltas []*crdt.Context) (changed []bool, err error) {
	if len(names) != len(deltas) {
		return nil, fmt.Errorf("%w: %d names for %d deltas", ErrInvalid, len(names), len(deltas))
	}
	for _, name := range names {
		if err := ValidName(name); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	if err := s.writable(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	retired := false
	for _, d := range deltas {
		if err := s.observeClock(d); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		retired = retired || s.retiredBy(d)
	}
	changed = make([]bool, len(deltas))
	var b *batch
	for i, d := range deltas {
		name := names[i]
		c, ok, err := s.state(name)
		if err != nil {
			// The store failed (see state): what was joined before is not acknowledged.
			s.mu.Unlock()
			return nil, err
		}
		if !ok {
			c = &crdt.Context{}
		}
		counted := ok && !c.Marker()
		touched := c.Touches(d)
		// Joining what c already holds leaves it equal, so joining in place is safe, and
		// Join tells a change at the cost of d, not of c.
		if !c.Join(d) {
			continue
		}
		if ok {
			name = s.changed(name)
		} else {
			name = s.create(name, c)
		}
		s.recount(counted, c)
		changed[i] = true
		b = s.enqueue(Event{Context: name, Origin: origin, Delta: d, Touched: touched}, Durable)
	}
	s.mu.Unlock()
	if b != nil {
		if err := s.wait(ctx, b, Durable); err != nil {
			return changed, err
		}
	}
	if retired {
		s.stopRetired()
		return changed, s.Ready()
	}
	return changed, nil
}
