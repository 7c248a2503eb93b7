package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/ctxprop/ctxprop/ctxstore"
)

// Error codes of the API, in the "code" field of an error answer.
const (
	CodeBadRequest       = "bad_request"            // 400: malformed body, name or parameter
	CodeNotFound         = "not_found"              // 404: no such context, entry or route
	CodeMethodNotAllowed = "method_not_allowed"     // 405: see the Allow header
	CodeBodyTooLarge     = "body_too_large"         // 413: body over admin.max_body_bytes
	CodeValueTooLarge    = "value_too_large"        // 413: a value over store.max_value_bytes
	CodeUnsupportedType  = "unsupported_media_type" // 415: wrong Content-Type
	CodeBodyTimeout      = "body_timeout"           // 408: the body stalled between two reads
	CodeHostNotAllowed   = "host_not_allowed"       // 403: Host is not loopback, localhost or in admin.allowed_hosts
	CodeCrossOrigin      = "cross_origin"           // 403: a write from a web page of another origin
	CodeSimpleRequest    = "simple_request"         // 403: a write a web page could send: no JSON type, no X-Requested-By
	CodeLimitExceeded    = "limit_exceeded"         // 422: a store limit would be exceeded
	CodeOutOfRange       = "out_of_range"           // 422: a counter would pass the int64 range (limit "counter_range")
	CodeShuttingDown     = "shutting_down"          // 503: the sidecar is stopping
	CodeStoreFailed      = "store_failed"           // 503: the store can no longer commit
	CodeNotReady         = "not_ready"              // 503: GET /readyz
	CodeInternal         = "internal"               // 500: a bug; the message says what
)

// LimitCounterRange is the limit an out_of_range answer names: counters hold int64 values
// (SPEC §4a), which no configuration changes.
const LimitCounterRange = "counter_range"

// Error is an error answer of the API, as admin.Client returns it.
type Error struct {
	Status  int    // HTTP status
	Code    string // one of the Code constants
	Message string // what is wrong and what to do
	// Limit names the store limit (config attribute) a 413/422 answer is about, if any.
	Limit string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("admin API: %d %s", e.Status, http.StatusText(e.Status))
	}
	return e.Message
}

// ErrorBody is the JSON form of an error answer; clients decode it.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Limit   string `json:"limit,omitempty"`
	} `json:"error"`
}

// WriteError answers e as every route of the admin listener answers errors:
// {"error":{"code","message","limit"?}} with e.Status, so that one error has one shape on
// every route.
func WriteError(w http.ResponseWriter, e *Error) {
	var b ErrorBody
	b.Error.Code, b.Error.Message, b.Error.Limit = e.Code, e.Message, e.Limit
	WriteJSON(w, e.Status, b)
}

// WriteJSON answers v in JSON with status, with a Content-Length.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Only unmarshalable types reach here: a bug, reported rather than sent half-written.
		status = http.StatusInternalServerError
		data = []byte(`{"error":{"code":"internal","message":"encoding the answer failed; report this bug"}}`)
	}
	WriteJSONLine(w, status, append(data, '\n'))
}

// WriteJSONLine answers line, a JSON value and a newline that the caller encoded, as
// WriteJSON would answer that value: for a hot route whose answer has a plain form that
// needs no encoding/json (issue 14: the admin API's counter increment).
func WriteJSONLine(w http.ResponseWriter, status int, line []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h.Set("Content-Length", strconv.Itoa(len(line)))
	w.WriteHeader(status)
	w.Write(line)
}

// jsonContentType is the Content-Type header value of every JSON answer, one slice for
// all of them, as Header.Set would make one per answer. net/http only reads it, and
// Header.Set and Add replace or grow it rather than writing into it.
var jsonContentType = []string{"application/json"}

// BadRequest is a 400 bad_request answer whose message is format and args.
func BadRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// StoreError maps an error of the store to its answer: a limit to 413 or 422 naming it,
// an invalid name to 400, an absent context to 404, a closed or failed store to 503.
func StoreError(err error) *Error {
	var lim *ctxstore.LimitError
	switch {
	case errors.As(err, &lim):
		if lim.Limit == "max_value_bytes" {
			return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeValueTooLarge, Message: err.Error(), Limit: lim.Limit}
		}
		return &Error{Status: http.StatusUnprocessableEntity, Code: CodeLimitExceeded, Message: err.Error(), Limit: lim.Limit}
	case errors.Is(err, ctxstore.ErrRange):
		return &Error{Status: http.StatusUnprocessableEntity, Code: CodeOutOfRange, Message: err.Error(), Limit: LimitCounterRange}
	case errors.Is(err, ctxstore.ErrInvalid):
		return BadRequest("%v", err)
	case errors.Is(err, ctxstore.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: err.Error()}
	case errors.Is(err, ctxstore.ErrClosed):
		return ShuttingDown()
	case errors.Is(err, ctxstore.ErrFailed):
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeStoreFailed, Message: err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The write is applied and will commit; only this request stopped waiting.
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeShuttingDown, Message: "the request ended before the write was confirmed on disk; it was applied and will be committed — read it back to check"}
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: err.Error()}
}

// ShuttingDown is the 503 shutting_down answer of a sidecar that is stopping.
func ShuttingDown() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeShuttingDown, Message: "the sidecar is shutting down; retry on another sidecar or once it has restarted"}
}
