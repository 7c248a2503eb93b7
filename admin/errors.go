package admin

import (
	"net/http"

	"github.com/ctxprop/ctxprop/httpapi"
)

// Error codes of the API, in the "code" field of an error answer (httpapi's, shared with
// the flag routes).
const (
	CodeBadRequest       = httpapi.CodeBadRequest       // 400: malformed body, name or parameter
	CodeNotFound         = httpapi.CodeNotFound         // 404: no such context, entry or route
	CodeMethodNotAllowed = httpapi.CodeMethodNotAllowed // 405: see the Allow header
	CodeBodyTooLarge     = httpapi.CodeBodyTooLarge     // 413: body over admin.max_body_bytes
	CodeValueTooLarge    = httpapi.CodeValueTooLarge    // 413: a value over store.max_value_bytes
	CodeUnsupportedType  = httpapi.CodeUnsupportedType  // 415: wrong Content-Type
	CodeBodyTimeout      = httpapi.CodeBodyTimeout      // 408: the body stalled between two reads
	CodeHostNotAllowed   = httpapi.CodeHostNotAllowed   // 403: Host is not loopback, localhost or in admin.allowed_hosts
	CodeCrossOrigin      = httpapi.CodeCrossOrigin      // 403: a write from a web page of another origin
	CodeSimpleRequest    = httpapi.CodeSimpleRequest    // 403: a write a web page could send: no JSON type, no X-Requested-By
	CodeLimitExceeded    = httpapi.CodeLimitExceeded    // 422: a store limit would be exceeded
	CodeOutOfRange       = httpapi.CodeOutOfRange       // 422: a counter would pass the int64 range (limit "counter_range")
	CodeShuttingDown     = httpapi.CodeShuttingDown     // 503: the sidecar is stopping
	CodeStoreFailed      = httpapi.CodeStoreFailed      // 503: the store can no longer commit
	CodeNotReady         = httpapi.CodeNotReady         // 503: GET /readyz
	CodeInternal         = httpapi.CodeInternal         // 500: a bug; the message says what
)

// LimitCounterRange is the limit an out_of_range answer names: counters hold int64 values
// (SPEC §4a), which no configuration changes.
const LimitCounterRange = httpapi.LimitCounterRange

// Error is an error answer of the API, as the Client returns it (httpapi.Error).
type Error = httpapi.Error

// errorBody is the JSON form of an error answer.
type errorBody = httpapi.ErrorBody

// WriteError answers e as every route of the admin listener answers errors:
// {"error":{"code","message","limit"?}} with e.Status (httpapi.WriteError, which the flag
// routes use too).
func WriteError(w http.ResponseWriter, e *Error) { httpapi.WriteError(w, e) }

// WriteJSON answers v in JSON with status, with a Content-Length (httpapi.WriteJSON).
func WriteJSON(w http.ResponseWriter, status int, v any) { httpapi.WriteJSON(w, status, v) }

// StoreError maps an error of the store to its answer: a limit to 413 or 422 naming it,
// an invalid name to 400, an absent context to 404, a closed or failed store to 503
// (httpapi.StoreError).
func StoreError(err error) *Error { return httpapi.StoreError(err) }

func badRequest(format string, args ...any) *Error { return httpapi.BadRequest(format, args...) }

func shuttingDown() *Error { return httpapi.ShuttingDown() }
