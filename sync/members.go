package peersync

import (
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// members bounds memberlist's node list (issue 10 item 4). memberlist adds every name an
// alive message or a push-pull announces, and without a keyring anyone can send those;
// its AliveDelegate is the one place a name can be turned away, and members is its
// book-keeping: the names admitted, at most max, and the member to send to for each.
//
// A name keeps its place while memberlist has it alive or suspect, and for hold after it
// died or left (or after it was admitted, if memberlist never added it): memberlist keeps
// gossiping about a dead member for GossipToTheDeadTime, which the Syncer sets to hold,
// and drops it at its next probe cycle after that. A place is reclaimed only when a new
// name needs it. memberlist itself thus holds at most max live members plus the dead
// ones it has not dropped yet, and the rate at which those appear is bounded by max per
// hold.
//
// Safe for concurrent use. memberlist calls into it with its node lock held, so members
// calls nothing outside itself while its own lock is held.
type members struct {
	self string
	max  int
	hold time.Duration

	mu      sync.Mutex
	byName  map[string]*member
	refused uint64
	// reclaim is the earliest instant a place may be reclaimed: a flood of names past
	// the bound does not scan the table for each.
	reclaim time.Time
}

// never is later than any reclaim.
var never = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

type member struct {
	node  *memberlist.Node // nil until memberlist added it (NotifyJoin)
	gone  bool             // dead or left
	since time.Time        // of admission, or of leaving
}

func newMembers(self string, max int, hold time.Duration) *members {
	return &members{self: self, max: max, hold: hold, byName: make(map[string]*member)}
}

// admit reports whether memberlist may add or keep the member name.
func (ms *members) admit(name string, now time.Time) bool {
	if name == ms.self {
		return true
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if _, ok := ms.byName[name]; ok {
		return true
	}
	if len(ms.byName) >= ms.max && !now.Before(ms.reclaim) {
		next := never // none to reclaim: leave and admit set it when there is one
		for n, m := range ms.byName {
			if m.node != nil && !m.gone {
				continue
			}
			if at := m.since.Add(ms.hold); now.After(at) {
				delete(ms.byName, n)
			} else if at.Before(next) {
				next = at
			}
		}
		ms.reclaim = next
	}
	if len(ms.byName) >= ms.max {
		ms.refused++
		return false
	}
	ms.byName[name] = &member{since: now}
	ms.noteGone(now)
	return true
}

// noteGone records that a place may be reclaimed at now+hold; ms.mu held.
func (ms *members) noteGone(now time.Time) {
	if at := now.Add(ms.hold); at.Before(ms.reclaim) {
		ms.reclaim = at
	}
}

// join records that memberlist added or revived n.
func (ms *members) join(n *memberlist.Node, now time.Time) {
	if n.Name == ms.self {
		return
	}
	c := *n
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m := ms.byName[n.Name]
	if m == nil {
		// Added without asking admit: only memberlist's own node does that.
		m = &member{}
		ms.byName[n.Name] = m
	}
	m.node, m.gone, m.since = &c, false, now
}

// leave records that memberlist found n dead or departed.
func (ms *members) leave(n *memberlist.Node, now time.Time) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if m := ms.byName[n.Name]; m != nil && !m.gone {
		m.gone, m.since = true, now
		ms.noteGone(now)
	}
}

// node returns the member to send to, nil if name is not one, and whether memberlist has
// it alive or suspect.
func (ms *members) node(name string) (n *memberlist.Node, alive bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if m := ms.byName[name]; m != nil {
		return m.node, m.node != nil && !m.gone
	}
	return nil, false
}

func (ms *members) refusedCount() uint64 {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.refused
}

// pingQueue holds the members waiting for verifyLoop to ping them, each once, first come
// first served. It holds at most as many names as there are members, so it is bounded by
// MaxPeers too; a member is tried a few times, going to the back of the queue after each
// miss, so that members that do not answer (made up, or gone) delay the others by one
// ProbeTimeout per worker at most. Safe for concurrent use.
type pingQueue struct {
	mu    sync.Mutex
	names []string
	tries map[string]int // of the names queued
	ready chan struct{}  // holds a token while names is not empty
}

// pingTries is how many times a member is pinged before Engine.Expire decides.
const pingTries = 3

func newPingQueue() *pingQueue {
	return &pingQueue{tries: make(map[string]int), ready: make(chan struct{}, 1)}
}

// push queues name unless it is queued already.
func (q *pingQueue) push(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, queued := q.tries[name]; queued {
		return
	}
	q.tries[name] = 0
	q.names = append(q.names, name)
	q.signal()
}

// signal leaves a token in ready if names is not empty; q.mu held.
func (q *pingQueue) signal() {
	if len(q.names) > 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
}

// pop takes the first name, waiting for one until done is closed.
func (q *pingQueue) pop(done <-chan struct{}) (string, bool) {
	for {
		q.mu.Lock()
		if len(q.names) > 0 {
			name := q.names[0]
			q.names = q.names[1:]
			q.tries[name]++
			q.signal() // for the next worker
			q.mu.Unlock()
			return name, true
		}
		q.mu.Unlock()
		select {
		case <-done:
			return "", false
		case <-q.ready:
		}
	}
}

// missed puts name back at the end if it has tries left, and forgets it otherwise; done
// forgets it.
func (q *pingQueue) missed(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.tries[name] >= pingTries {
		delete(q.tries, name)
		return
	}
	q.names = append(q.names, name)
	q.signal()
}

func (q *pingQueue) done(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.tries, name)
}
