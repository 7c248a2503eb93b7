package peersync

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// Retirer folds replicas gone from the fleet into this one, so that the state of every
// context follows the live replicas rather than every pod that ever lived (SPEC §7; the
// argument is in the crdt package doc). *localstore.Store implements it. Both methods
// are called from the retire loop only, never concurrently with each other; Retire
// blocks until the folds are in the store's log and replicate like any write.
type Retirer interface {
	// CounterReplicas returns the replica ids that hold counter state, with how many
	// contexts each holds it in.
	CounterReplicas() map[crdt.ReplicaID]int
	// Retire folds replica from into this one everywhere and returns how many contexts
	// changed.
	Retire(ctx context.Context, from crdt.ReplicaID) (int, error)
}

// retirement is the syncer's bookkeeping of who is gone: when each replica that holds
// state in the store was last alive in membership or heard from. Bounded by the replicas
// the store holds state for.
type retirement struct {
	mu       sync.Mutex
	started  time.Time
	lastSign map[crdt.ReplicaID]time.Time
	retired  atomic.Uint64 // replicas retired (each counted once per Retire that changed something)
}

// activity returns the replica ids of the peers membership says are alive or suspect,
// and when each known peer was last heard from.
func (e *Engine) activity() (alive map[crdt.ReplicaID]bool, heard map[crdt.ReplicaID]time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	alive = make(map[crdt.ReplicaID]bool, len(e.peers))
	heard = make(map[crdt.ReplicaID]time.Time, len(e.peers))
	for _, p := range e.peers {
		if p.replica == 0 {
			continue
		}
		if p.member && (p.state == StateAlive || p.state == StateSuspect) {
			alive[p.replica] = true
		}
		if !p.lastContact.IsZero() {
			heard[p.replica] = p.lastContact
		}
	}
	return alive, heard
}

// retireLoop retires, every eighth of RetireAfter (at most every 10 minutes), the
// replicas gone for RetireAfter. Not more often: finding the replicas that hold state
// decodes every context the store keeps encoded (localstore's CounterReplicas).
func (s *Syncer) retireLoop(ctx context.Context) {
	defer s.wg.Done()
	every := min(max(s.opt.RetireAfter/8, time.Second), 10*time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.retireGone(ctx, s.opt.Now())
		}
	}
}

// retireGone retires the replicas that hold state in the store and have been neither
// alive in membership nor heard from for RetireAfter (see retirement.gone).
func (s *Syncer) retireGone(ctx context.Context, now time.Time) {
	alive, heard := s.engine.activity()
	holders := s.opt.Retirer.CounterReplicas()
	for _, id := range s.retiring.gone(s.opt.Store.Replica(), alive, heard, holders, now, s.opt.RetireAfter) {
		n, err := s.opt.Retirer.Retire(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("retiring a replica gone from the fleet failed; retrying later", "replica", id, "error", err)
			}
			return
		}
		if n > 0 {
			s.retiring.retired.Add(1)
			s.log.Info("retired a replica gone for sync.retire_after", "replica", id, "contexts", n, "retire_after", s.opt.RetireAfter)
		}
	}
}

// gone returns, sorted, the replicas of holders (those that hold state in the store) that
// replica self should retire at now: neither alive in membership nor heard from for
// after. One replica does it, to keep two from folding the same replica at once (which
// is exact, but costs a settle): the live member with the smallest replica id. Any other
// steps in after twice that long, in case that one cannot. It updates r's record of when
// each holder was last alive or heard from.
func (r *retirement) gone(self crdt.ReplicaID, alive map[crdt.ReplicaID]bool, heard map[crdt.ReplicaID]time.Time,
	holders map[crdt.ReplicaID]int, now time.Time, after time.Duration) []crdt.ReplicaID {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, t := range heard {
		if _, ok := holders[id]; ok && t.After(r.lastSign[id]) {
			r.lastSign[id] = t
		}
	}
	for id := range alive {
		if _, ok := holders[id]; ok {
			r.lastSign[id] = now
		}
	}
	for id := range r.lastSign {
		if _, ok := holders[id]; !ok {
			delete(r.lastSign, id) // nothing left to retire: forget it
		}
	}
	designated := true
	for id := range alive {
		if id < self {
			designated = false
		}
	}
	var gone []crdt.ReplicaID
	for id := range holders {
		if id == self || alive[id] {
			continue
		}
		last, ok := r.lastSign[id]
		if !ok {
			last = r.started // never seen since this sidecar started
		}
		quiet := now.Sub(last)
		if quiet >= after && (designated || quiet >= 2*after) {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	return gone
}
