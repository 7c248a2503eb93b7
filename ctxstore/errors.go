package ctxstore

import (
	"errors"
	"fmt"
	"regexp"
)

// Errors every store reports the same way, so that the admin API maps them to the same
// answers whatever store serves it (admin.StoreError).
var (
	// ErrNotFound: the context or value does not exist (or has expired).
	ErrNotFound = errors.New("not found")
	// ErrInvalid is wrapped by errors about the caller's input.
	ErrInvalid = errors.New("invalid")
	// ErrClosed: the store is closed or closing.
	ErrClosed = errors.New("store is shutting down")
	// ErrFailed: a commit failed and the store no longer takes writes.
	ErrFailed = errors.New("store failed to commit")
	// ErrRange is wrapped, with a *crdt.RangeError naming the counter, the value and the
	// increment, by the error of an increment refused because it would take a counter
	// past the int64 range (SPEC §4a; the admin API names it limit "counter_range").
	// Nothing of the write is applied.
	ErrRange = errors.New("counter out of range")
)

// LimitError reports a write refused because it would exceed a configured limit. Nothing
// of the write is applied.
type LimitError struct {
	Limit string // the config attribute, e.g. "max_values_per_context"
	Max   int
	What  string // what would exceed it
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s would exceed store.%s = %d; raise the limit in config.hcl or remove entries", e.What, e.Limit, e.Max)
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,200}$`)

// ValidName checks a context name (SPEC §3); the error wraps ErrInvalid. Stores check the
// names they are given with it, and replication backends the names they receive.
func ValidName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w: context name %q: want 1-200 characters of A-Z a-z 0-9 . _ : -", ErrInvalid, truncate(name, 60))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
