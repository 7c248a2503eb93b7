// Package httpapi writes the answers every route of a sidecar's admin listener shares, so
// that the admin API (package admin) and the flag routes (package flags) answer in one
// shape without importing each other:
//
//   - errors as JSON {"error":{"code","message","limit"?}} (Error, WriteError, StoreError,
//     which maps the errors of any store speaking ctxstore's errors),
//   - JSON bodies with a Content-Length (WriteJSON),
//   - request bodies read within a size limit and a per-read timeout (ReadBody,
//     TimeBodyReads),
//   - Server-Sent Events streams (SSE).
//
// It holds no routes and no state.
package httpapi
