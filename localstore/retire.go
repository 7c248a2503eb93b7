package localstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/ctxprop/ctxprop/crdt"
)

// Retirement of replicas that are gone for good (SPEC §7; the argument is in the crdt
// package doc). The sync layer decides who is gone and calls Retire; the sweeper settles
// the folds this replica made and Sweep prunes them a grace period (TombstoneTTL) later.

// ErrRetired is the store's failure once it learns that the fleet retired its own
// replica id while it was away (a partition or a stop longer than sync.retire_after): the
// increments it would make under that id could be pruned, so it takes no more writes. A
// restart continues under a new replica id (Open rotates it).
var ErrRetired = errors.New("this sidecar's replica id was retired by the fleet while it was away")

// Retire folds replica from into this one in every context that holds counter state of
// from (see crdt.Context.Absorb), as request-path writes (Windowed): the folds replicate
// like any delta. It returns how many contexts it changed. Retiring this store's own
// replica is refused.
func (s *Store) Retire(ctx context.Context, from crdt.ReplicaID) (int, error) {
	if from == s.replica || from == 0 {
		return 0, fmt.Errorf("%w: cannot retire replica %s", ErrInvalid, from)
	}
	var names []string
	s.scan(func(name string, c *crdt.Context) {
		if c.HoldsReplica(from) {
			names = append(names, name)
		}
	})
	slices.Sort(names)
	n := 0
	for _, name := range names {
		changed, err := s.fold(ctx, name, func(c *crdt.Context, w crdt.Write) (*crdt.Context, error) {
			return c.Absorb(w, from)
		})
		if err != nil {
			return n, fmt.Errorf("localstore: retire replica %s in context %q: %w", from, name, err)
		}
		if changed {
			n++
		}
	}
	if n > 0 {
		s.log.Info("retired a replica gone from the fleet", "replica", from, "contexts", n)
	}
	return n, nil
}

// settleFolds makes the folds of this replica exact (crdt.Context.Settle): it takes back
// a fold another replica's outranks and completes a standing one that a late delta
// outgrew. The sweeper runs it before each Sweep, so that pruning finds the folds settled.
// It looks only at the contexts whose folds changed since it last ran (noteFolds): a
// context nothing changed stays settled.
func (s *Store) settleFolds(ctx context.Context) (int, error) {
	s.mu.Lock()
	names := make([]string, 0, len(s.unsettled))
	for name := range s.unsettled {
		names = append(names, name)
	}
	clear(s.unsettled)
	s.mu.Unlock()
	slices.Sort(names)
	n := 0
	for i, name := range names {
		changed, err := s.fold(ctx, name, func(c *crdt.Context, w crdt.Write) (*crdt.Context, error) {
			return c.Settle(w)
		})
		if err != nil {
			s.mu.Lock()
			for _, name := range names[i:] {
				s.unsettled[name] = struct{}{} // the next sweep tries again
			}
			s.mu.Unlock()
			return n, fmt.Errorf("localstore: settle folds in context %q: %w", name, err)
		}
		if changed {
			n++
		}
	}
	return n, nil
}

// fold applies the retirement delta f makes of context name, if any, as a Windowed
// write that neither creates the context nor slides its TTL. It reports whether there
// was a delta.
func (s *Store) fold(ctx context.Context, name string, f func(*crdt.Context, crdt.Write) (*crdt.Context, error)) (bool, error) {
	s.mu.Lock()
	if err := s.writable(); err != nil {
		s.mu.Unlock()
		return false, err
	}
	c, ok, err := s.state(name)
	if err != nil || !ok {
		s.mu.Unlock()
		return false, err
	}
	delta, err := f(c, crdt.Write{Replica: s.replica, At: s.clock.Read()})
	if err != nil || delta == nil {
		s.mu.Unlock()
		return false, err
	}
	counted := !c.Marker()
	touched := c.Touches(delta)
	c.Join(delta)
	name = s.changed(name)
	s.recount(counted, c)
	s.noteFolds(name, c)
	s.seq++
	b := s.enqueue(Event{Context: name, Origin: s.replica, Delta: delta, Touched: touched}, Windowed)
	s.mu.Unlock()
	return true, s.wait(ctx, b, Windowed)
}

// CounterReplicas returns, for every replica id that holds a counter slot in some
// context, how many contexts it holds one in; the sync layer picks retirement candidates
// from it. It decodes every context not in the cache (see scan): call it seldom.
func (s *Store) CounterReplicas() map[crdt.ReplicaID]int {
	out := map[crdt.ReplicaID]int{}
	s.scan(func(_ string, c *crdt.Context) {
		c.CounterReplicas(func(r crdt.ReplicaID) { out[r]++ })
	})
	return out
}

// scan calls f with the state of every context the store holds, one at a time: those in
// the cache under the read lock, the others decoded outside it, so that writers do not
// wait for a pass over every context. f must not change or keep c. A context a write
// changes during the scan is seen as it was before or after; the callers (retirement)
// look again later.
func (s *Store) scan(f func(name string, c *crdt.Context)) {
	type cold struct{ name, data string }
	var cs []cold
	s.mu.RLock()
	for name, sl := range s.contexts {
		if h := s.cache.m[name]; h != nil {
			f(name, h.c)
		} else {
			cs = append(cs, cold{name, sl.data})
		}
	}
	s.mu.RUnlock()
	for _, e := range cs {
		c, err := decodeState(e.name, e.data)
		if err != nil {
			s.log.Error("context skipped", "context", e.name, "error", err)
			continue
		}
		f(e.name, c)
	}
}

// noteFolds records that context name, just changed, holds folds the sweeper may have to
// settle (settleFolds); s.mu must be held for writing.
func (s *Store) noteFolds(name string, c *crdt.Context) {
	if c.HasFolds() {
		s.unsettled[name] = struct{}{}
	}
}

// retiredBy reports whether delta, about to be merged, says that this replica was
// retired: a fold of it, or its id pruned. A delta that only names it as a fold's Into
// (it folded someone) does not.
func (s *Store) retiredBy(delta *crdt.Context) bool { return delta.Retires(s.replica) }

// stopRetired stops the store once it has merged, durably, a delta saying that the fleet
// retired this replica: it takes no more writes, and a restart continues under a new
// replica id (rotateIfRetired finds that delta in the file).
func (s *Store) stopRetired() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return
	}
	s.failed = fmt.Errorf("%w (replica %s); restart the sidecar: it continues under a new replica id, and what it wrote before is kept by the fleet", ErrRetired, s.replica)
	s.log.Error("store stopped taking writes", "error", s.failed)
	close(s.retired)
}

// Retired is closed when the store learns that the fleet retired its replica id (see
// ErrRetired); the sidecar exits then, so that it restarts under a new id.
func (s *Store) Retired() <-chan struct{} { return s.retired }

// rotateIfRetired gives the store a new replica id when a context it loaded says the
// fleet retired the current one, after the write-ahead log was replayed under the old
// one. Everything the old id wrote stays in the contexts: the fleet folds it like any
// retired replica's.
func (s *Store) rotateIfRetired() error {
	if !s.retiredAtLoad {
		return nil
	}
	old := s.replica
	s.replica = newReplicaID()
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyReplica, binary.BigEndian.AppendUint64(nil, uint64(s.replica)))
	}); err != nil {
		return fmt.Errorf("localstore: store a new replica id: %w", err)
	}
	// The log's header names the replica: a fresh one under the new id. Everything the
	// old log held was replayed and committed to the bbolt file by now.
	if err := s.wal.close(); err != nil {
		return fmt.Errorf("localstore: close the write-ahead log: %w", err)
	}
	w, _, err := openWAL(walPath(s.opt.Path), s.opt.logSize(), s.replica)
	if err != nil {
		return fmt.Errorf("localstore: %w", err)
	}
	w.lsn = s.walLSN
	s.wal = w
	s.log.Warn("the fleet retired this store's replica id while this sidecar was away; continuing under a new one", "retired", old, "replica", s.replica)
	return nil
}
