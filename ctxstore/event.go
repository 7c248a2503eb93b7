package ctxstore

import (
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// Event is one committed change of a context, local or replicated.
type Event struct {
	// ID orders events; a watcher that reconnects resumes after the last ID it saw.
	ID      uint64
	Time    time.Time
	Context string
	// Origin is the replica that made the change (the store's own for local writes).
	Origin crdt.ReplicaID
	// Delta is the change. Shared between watchers: do not modify.
	Delta *crdt.Context
	// Touched names the counters, map entries and sets the change touched, removals
	// included.
	Touched crdt.Touched
}

// Subscription delivers the committed changes one watcher asked for, in commit order. A
// store's Watch returns it. All methods are safe for concurrent use.
type Subscription interface {
	// Events carries the events. It is closed when the store closes, when the
	// subscription is closed (by Close or by the end of the context given to Watch), or
	// when the watcher fell so far behind that events were dropped (Lagged). The same
	// channel is returned on every call.
	Events() <-chan Event
	// Missed reports whether events after the ID the watcher asked to resume from were no
	// longer held when the subscription began: the watcher should reread the state. It
	// does not change after Watch returns.
	Missed() bool
	// Lagged reports whether Events was closed because the watcher did not keep up. A
	// watcher that sees Events closed and Lagged true subscribes again.
	Lagged() bool
	// Close stops the subscription and closes Events; safe to call twice.
	Close()
}

// Durability says when a write returns.
type Durability int

const (
	// Durable writes return after their commit is on disk (fsync'd).
	Durable Durability = iota
	// Windowed writes return at once and are committed within the store's commit window.
	Windowed
)

// Result reports what a write left behind: the value of each counter it changed and the
// members of each set it changed.
type Result struct {
	Counters map[string]int64
	Sets     map[string][]string
}
