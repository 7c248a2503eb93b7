package localstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// Summary counts what a context holds.
type Summary struct {
	Name      string     `json:"name"`
	ExpiresAt *time.Time `json:"expires_at"`
	Counters  int        `json:"counters"`
	Maps      int        `json:"maps"`
	Sets      int        `json:"sets"`
}

// Snapshot is the visible content of a context at one instant.
type Snapshot struct {
	Name      string                                `json:"name"`
	ExpiresAt *time.Time                            `json:"expires_at"`
	Counters  map[string]int64                      `json:"counters"`
	Maps      map[string]map[string]json.RawMessage `json:"maps"`
	Sets      map[string][]string                   `json:"sets"`
	// Replicas is how many replica ids the context holds state for (counter slots,
	// causal-context entries, set dots): the live replicas that wrote to it plus those
	// gone but not retired yet (sync.retire_after, then store.tombstone_ttl).
	Replicas int `json:"replicas"`
}

// List returns a summary of every live context, sorted by name.
func (s *Store) List() []Summary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	out := make([]Summary, 0, len(s.contexts))
	for name, c := range s.contexts {
		if !c.Alive(now) {
			continue
		}
		out = append(out, Summary{
			Name:      name,
			ExpiresAt: expiresAt(c),
			Counters:  len(c.CounterKeys(now)),
			Maps:      len(c.MapNames(now)),
			Sets:      len(c.SetNames(now)),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns the content of a live context, or ErrNotFound.
func (s *Store) Get(name string) (Snapshot, error) {
	if err := ValidName(name); err != nil {
		return Snapshot{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	c, err := s.live(name, now)
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{
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
	return snap, nil
}

// Counter returns a counter's value: 0 if it was never written or has expired.
func (s *Store) Counter(name, key string) (int64, error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.contexts[name]
	if c == nil {
		return 0, nil
	}
	v, _ := c.Counter(key, s.now())
	return v, nil
}

// Map returns the live entries of a map; an absent map has none.
func (s *Store) Map(name, m string) (map[string]json.RawMessage, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.contexts[name]
	if c == nil {
		return map[string]json.RawMessage{}, nil
	}
	return copyEntries(c.MapEntries(m, s.now())), nil
}

// MapGet returns one map entry, or ErrNotFound.
func (s *Store) MapGet(name, m, key string) (json.RawMessage, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.contexts[name]; c != nil {
		if v, ok := c.MapGet(m, key, s.now()); ok {
			return bytes.Clone(v), nil
		}
	}
	return nil, fmt.Errorf("%w: entry %q of map %q in context %q", ErrNotFound, key, m, name)
}

// Set returns the members of a set, sorted; an absent set has none.
func (s *Store) Set(name, set string) ([]string, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.contexts[name]
	if c == nil {
		return []string{}, nil
	}
	ms := c.SetMembers(set, s.now())
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
	if c := s.contexts[name]; c != nil {
		return c.Clone(), true
	}
	return nil, false
}

func (s *Store) live(name string, now crdt.Timestamp) (*crdt.Context, error) {
	c := s.contexts[name]
	if c == nil || !c.Alive(now) {
		return nil, fmt.Errorf("%w: context %q", ErrNotFound, name)
	}
	return c, nil
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
