package localstore

import "github.com/ctxprop/ctxprop/ctxstore"

// The store's errors are ctxstore's, which every store shares, so that the admin API
// answers them alike whatever store serves it.
var (
	// ErrNotFound: the context or value does not exist (or has expired).
	ErrNotFound = ctxstore.ErrNotFound
	// ErrInvalid is wrapped by errors about the caller's input.
	ErrInvalid = ctxstore.ErrInvalid
	// ErrClosed: the store is closed or closing.
	ErrClosed = ctxstore.ErrClosed
	// ErrFailed: a commit failed and the store no longer takes writes.
	ErrFailed = ctxstore.ErrFailed
	// ErrRange is wrapped, with a *crdt.RangeError, by the error of an increment refused
	// because it would take a counter past the int64 range (ctxstore.ErrRange).
	ErrRange = ctxstore.ErrRange
)

// LimitError reports a write refused because it would exceed a configured limit. Nothing
// of the write is applied.
type LimitError = ctxstore.LimitError
