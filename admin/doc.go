// Package admin serves the admin API of a sidecar (SPEC §3a) on a loopback listener and
// provides a Go client for it.
//
// The API is JSON over HTTP. Names in paths are percent-encoded, one path segment each:
// a map key "a/b" travels as "a%2Fb", and a key "." or ".." must be sent as "%2E" or
// "%2E%2E" (an unescaped dot segment is refused, not resolved). Every write is applied
// with localstore.Durable: it answers only after its commit is on disk.
//
// Errors are JSON {"error":{"code":"...","message":"..."}} with the status the spec
// assigns: 400 malformed, 404 absent, 405 wrong method (with Allow), 413 body or value too
// large, 415 wrong Content-Type, 422 over a store limit, 503 while shutting down or after
// the store failed. The message says what is wrong and what to do.
//
// The server has no authentication; it refuses a non-loopback address unless
// Options.AllowNonLoopback is set.
//
// GET /v1/watch streams Server-Sent Events. Each event's data gives the values, read from
// the store when the event is sent, of every counter, map entry and set the change
// touched; so a watcher that applies them in order converges on the current state even
// though a value may already include a later change.
package admin
