package peersync

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// throttleEvery is how often a line of one kind may be logged.
const throttleEvery = time.Second

// throttle lets through at most one log line of each kind a second and counts the lines
// it holds back; the next line of that kind carries their number as "suppressed". Every
// packet from outside can cause a line (a refused message, a refused peer), so without it
// a flood of packets is a flood of log lines (issue 10); the metrics keep the exact
// counts. Kinds are a fixed set chosen by the code, never text from a packet: an entry is
// kept per kind. The zero value is ready; safe for concurrent use.
type throttle struct {
	mu    sync.Mutex
	kinds map[string]*throttled
}

type throttled struct {
	next time.Time // no line of the kind before it
	held uint64    // lines held back since the last one written
}

// log writes msg with args at level to l, unless a line of kind was written less than a
// second before now.
func (t *throttle) log(l hclog.Logger, level hclog.Level, kind string, now time.Time, msg string, args ...any) {
	if l.GetLevel() > level {
		return // not written anyway: nothing to count
	}
	t.mu.Lock()
	if t.kinds == nil {
		t.kinds = make(map[string]*throttled)
	}
	k := t.kinds[kind]
	if k == nil {
		k = &throttled{}
		t.kinds[kind] = k
	}
	if now.Before(k.next) {
		k.held++
		t.mu.Unlock()
		return
	}
	held := k.held
	k.held, k.next = 0, now.Add(throttleEvery)
	t.mu.Unlock()
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	l.Log(level, msg, args...)
}
