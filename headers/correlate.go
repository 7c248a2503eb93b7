package headers

import (
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Entry is the context of an in-flight inbound request, remembered by trace-id.
type Entry struct {
	Name  string
	Flags []Flag
}

// Correlator is a bounded table of the contexts of in-flight inbound requests, keyed
// by trace-id (SPEC §4 Correlation). An entry leaves the table when its request
// completes (the release func), when it is older than the timeout, or when the table
// is full and it is the oldest. It is safe for concurrent use; the zero value is not
// usable, use NewCorrelator.
type Correlator struct{}

// NewCorrelator returns a Correlator holding at most capacity entries (at least 1),
// each for at most timeout after its last Begin (a timeout ≤ 0 means no timeout: a
// request that never completes stays until evicted for room). It starts no
// goroutine: expired entries are dropped lazily.
func NewCorrelator(capacity int, timeout time.Duration) *Correlator {
	return &Correlator{}
}

// Begin records e for trace-id id while an inbound request is in flight and returns
// the func to call when it completes (idempotent; safe after eviction). Concurrent
// requests with one trace-id share an entry holding the latest e; it leaves the table
// when the last of them completes. An invalid id records nothing.
func (c *Correlator) Begin(id trace.TraceID, e Entry) (release func()) {
	return func() {}
}

// Lookup returns the entry for id, if one is in flight and not expired.
func (c *Correlator) Lookup(id trace.TraceID) (Entry, bool) { return Entry{}, false }

// Len returns the number of entries in the table, expired ones not yet dropped
// included.
func (c *Correlator) Len() int { return 0 }
