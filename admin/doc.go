// Package admin serves the admin API of a sidecar (SPEC §3a) on a loopback listener and
// provides a Go client for it.
//
// The API is JSON over HTTP. Names in paths are percent-encoded, one path segment each:
// a map key "a/b" travels as "a%2Fb", and a key "." or ".." must be sent as "%2E" or
// "%2E%2E" (an unescaped dot segment is refused, not resolved). Every write is applied
// with ctxstore.Durable: it answers only after its commit is on disk.
//
// Errors are JSON {"error":{"code":"...","message":"..."}} with the status the spec
// assigns: 400 malformed, 403 refused as possibly sent by a web page, 404 absent, 405 wrong
// method (with Allow), 408 body stalled, 413 body or value too large, 415 wrong
// Content-Type, 422 over a store limit (naming it in "limit"), 503 while shutting down or
// after the store failed. The message says what is wrong and what to do.
//
// The server has no authentication; it refuses a non-loopback address unless
// Options.AllowNonLoopback is set. Since a browser on the same machine reaches loopback
// too, it answers only requests whose Host is a loopback address, localhost or a name of
// Options.AllowedHosts (no DNS rebinding), refuses writes from pages of other origins, and
// takes a write to /v1 only with a JSON Content-Type or the X-Requested-By header, which
// no page can send elsewhere without a CORS preflight (SPEC §4a). The Client sends both.
//
// The server reaches its store through small interfaces, one per kind of route (Writer,
// Contexts, Values, Changes, Checker), in ctxstore's types; errors, bodies and event
// streams are written by package httpapi, which the flag routes share.
//
// GET /v1/watch streams Server-Sent Events. Each event's data gives the values, read from
// the store when the event is sent, of every counter, map entry and set the change
// touched; so a watcher that applies them in order converges on the current state even
// though a value may already include a later change.
package admin
