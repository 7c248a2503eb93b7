package localstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ctxstore"
)

// Summary counts what a context holds (ctxstore.Summary).
type Summary = ctxstore.Summary

// Snapshot is the visible content of a context at one instant (ctxstore.Snapshot).
type Snapshot = ctxstore.Snapshot

// List returns a summary of every live context, sorted by name. The contexts out of the
// cache are decoded after the lock is released, so that writers do not wait for a pass
// over every context.
func (s *Store) List() []Summary {
	type encoded struct {
		name, data string
	}
	s.mu.RLock()
	now := s.now()
	out := make([]Summary, 0, len(s.contexts))
	var cold []encoded
	for name, sl := range s.contexts {
		if h := s.cache.m[name]; h == nil {
			cold = append(cold, encoded{name, sl.data})
		} else if h.c.Alive(now) {
			out = append(out, summary(name, h.c, now))
		}
	}
	s.mu.RUnlock()
	for _, e := range cold {
		c, err := decodeState(e.name, e.data)
		if err != nil {
			s.log.Error("list: context skipped", "context", e.name, "error", err)
			continue
		}
		if c.Alive(now) {
			out = append(out, summary(e.name, c, now))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func summary(name string, c *crdt.Context, now crdt.Timestamp) Summary {
	return Summary{
		Name:      name,
		ExpiresAt: expiresAt(c),
		Counters:  len(c.CounterKeys(now)),
		Maps:      len(c.MapNames(now)),
		Sets:      len(c.SetNames(now)),
	}
}

// read calls fn under the store's lock with the state of context name (nil if the
// store holds none), which fn must not change or keep, and the current instant. A context
// out of the cache is decoded into it, as a write would: a context read once is often
// read again.
func (s *Store) read(name string, fn func(c *crdt.Context, now crdt.Timestamp)) error {
	s.mu.RLock()
	if h := s.cache.m[name]; h != nil {
		defer s.mu.RUnlock()
		fn(h.c, s.now())
		return nil
	}
	if _, ok := s.contexts[name]; !ok {
		defer s.mu.RUnlock()
		fn(nil, s.now())
		return nil
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _, err := s.state(name)
	if err != nil {
		return err
	}
	fn(c, s.now())
	return nil
}

// Get returns the content of a live context, or ErrNotFound.
func (s *Store) Get(name string) (Snapshot, error) {
	if err := ValidName(name); err != nil {
		return Snapshot{}, err
	}
	var snap Snapshot
	alive := false
	err := s.read(name, func(c *crdt.Context, now crdt.Timestamp) {
		if c == nil || !c.Alive(now) {
			return
		}
		alive = true
		snap = Snapshot{
			Name:      name,
			ExpiresAt: expiresAt(c),
			Counters:  map[string]int64{},
			Maps:      map[string]map[string]json.RawMessage{},
			Sets:      map[string][]string{},
			Replicas:  c.Replicas(),
		}
		for _, k := range c.CounterKeys(now) {
			snap.Counters[k], _ = c.Counter(k, now)
		}
		for _, m := range c.MapNames(now) {
			snap.Maps[m] = copyEntries(c.MapEntries(m, now))
		}
		for _, set := range c.SetNames(now) {
			snap.Sets[set] = c.SetMembers(set, now)
		}
	})
	switch {
	case err != nil:
		return Snapshot{}, err
	case !alive:
		return Snapshot{}, fmt.Errorf("%w: context %q", ErrNotFound, name)
	}
	return snap, nil
}

// Counter returns a counter's value: 0 if it was never written or has expired.
func (s *Store) Counter(name, key string) (int64, error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	var v int64
	err := s.read(name, func(c *crdt.Context, now crdt.Timestamp) {
		if c != nil {
			v, _ = c.Counter(key, now)
		}
	})
	return v, err
}

// Map returns the live entries of a map; an absent map has none.
func (s *Store) Map(name, m string) (map[string]json.RawMessage, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	entries := map[string]json.RawMessage{}
	err := s.read(name, func(c *crdt.Context, now crdt.Timestamp) {
		if c != nil {
			entries = copyEntries(c.MapEntries(m, now))
		}
	})
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// MapGet returns one map entry, or ErrNotFound.
func (s *Store) MapGet(name, m, key string) (json.RawMessage, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	var v json.RawMessage
	found := false
	err := s.read(name, func(c *crdt.Context, now crdt.Timestamp) {
		if c != nil {
			var raw []byte
			if raw, found = c.MapGet(m, key, now); found {
				v = bytes.Clone(raw)
			}
		}
	})
	switch {
	case err != nil:
		return nil, err
	case !found:
		return nil, fmt.Errorf("%w: entry %q of map %q in context %q", ErrNotFound, key, m, name)
	}
	return v, nil
}

// Set returns the members of a set, sorted; an absent set has none.
func (s *Store) Set(name, set string) ([]string, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	var ms []string
	err := s.read(name, func(c *crdt.Context, now crdt.Timestamp) {
		if c != nil {
			ms = c.SetMembers(set, now)
		}
	})
	if err != nil {
		return nil, err
	}
	if ms == nil {
		ms = []string{}
	}
	return ms, nil
}

// State returns a copy of the replicated state of a context (live or not), for the sync
// layer and tools; ok is false if the store holds nothing under that name.
func (s *Store) State(name string) (c *crdt.Context, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h := s.cache.m[name]; h != nil {
		return h.c.Clone(), true
	}
	sl, ok := s.contexts[name]
	if !ok {
		return nil, false
	}
	// A context decoded for the caller alone is a copy already.
	c, err := decodeState(name, sl.data)
	if err != nil {
		s.log.Error("state: context unreadable", "context", name, "error", err)
		return nil, false
	}
	return c, true
}

func expiresAt(c *crdt.Context) *time.Time {
	if e := c.Expires(); e != 0 {
		t := e.Time()
		return &t
	}
	return nil
}

func copyEntries(m map[string][]byte) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[k] = bytes.Clone(v)
	}
	return out
}

// ContextCounters is the value of a few counters in one context, in the order of the keys
// asked for.
type ContextCounters struct {
	Name   string
	Values []int64
}

// Counters returns, for every live context that holds the counter marker, the values of
// keys (0 for a key it lacks), in no particular order. It is made for exporters that scrape
// a few counters of every context (the per-context telemetry of /metrics).
//
// Cost: one pass over the contexts' names under the read lock. A cached context is read in
// place; a context out of the cache whose encoding does not contain marker is skipped with
// a substring scan, no decoding; the others are decoded after the lock is released, as List
// does, and are not put in the cache (an exporter must not evict the working set).
func (s *Store) Counters(marker string, keys []string) []ContextCounters {
	return s.counters(nil, marker, keys)
}

// CountersOf is Counters for the contexts named only: those that are not live, not held
// or without the marker are left out. An exporter that keeps the values of every context
// rereads with it the few that changed (see Watch) rather than every context.
func (s *Store) CountersOf(names []string, marker string, keys []string) []ContextCounters {
	if names == nil {
		names = []string{}
	}
	return s.counters(names, marker, keys)
}

// counters reads the contexts named, or every context with names nil.
func (s *Store) counters(names []string, marker string, keys []string) []ContextCounters {
	type encoded struct {
		name, data string
	}
	read := func(name string, c *crdt.Context, now crdt.Timestamp) (ContextCounters, bool) {
		if !c.Alive(now) {
			return ContextCounters{}, false
		}
		if _, ok := c.Counter(marker, now); !ok {
			return ContextCounters{}, false
		}
		cc := ContextCounters{Name: name, Values: make([]int64, len(keys))}
		for i, k := range keys {
			cc.Values[i], _ = c.Counter(k, now)
		}
		return cc, true
	}
	s.mu.RLock()
	now := s.now()
	var out []ContextCounters
	var cold []encoded
	one := func(name string, sl slot) {
		if h := s.cache.m[name]; h != nil {
			if cc, ok := read(name, h.c, now); ok {
				out = append(out, cc)
			}
		} else if strings.Contains(sl.data, marker) {
			cold = append(cold, encoded{name, sl.data})
		}
	}
	if names == nil {
		for name, sl := range s.contexts {
			one(name, sl)
		}
	} else {
		for _, name := range names {
			if sl, ok := s.contexts[name]; ok {
				one(name, sl)
			}
		}
	}
	s.mu.RUnlock()
	for _, e := range cold {
		c, err := decodeState(e.name, e.data)
		if err != nil {
			s.log.Error("counters: context skipped", "context", e.name, "error", err)
			continue
		}
		if cc, ok := read(e.name, c, now); ok {
			out = append(out, cc)
		}
	}
	return out
}
