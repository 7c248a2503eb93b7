package flags

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ctxprop/ctxprop/httpapi"
)

// OFREP (OpenFeature Remote Evaluation Protocol, github.com/open-feature/protocol,
// service/openapi.yaml) on the admin listener.

// BulkAnswer is the body of a successful bulk evaluation.
type BulkAnswer struct {
	Flags []Result `json:"flags"`
	// Metadata is the flag set metadata of the answer (OFREP's bulk metadata): see
	// bulkMetadata in flagsets.go. Always an object, as flagd answers it.
	Metadata map[string]any `json:"metadata"`
	// EventStreams points static-context providers at the change stream (OFREP ADR-0008,
	// which named it refreshConnections in its first draft: no published provider read that
	// name, so it is not sent).
	EventStreams []EventStream `json:"eventStreams,omitempty"`
}

// EventStream is an OFREP event stream: type "sse" and the stream's URL.
type EventStream struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// bulkFailure is the body of a bulk evaluation refused as a whole.
type bulkFailure struct {
	ErrorCode    string `json:"errorCode"`
	ErrorDetails string `json:"errorDetails"`
}

// readContext reads the body of an OFREP request, {"context": {...}}. An empty body is an
// empty context. It returns the status (400, or the 413/408 of a body over the limit or
// stalled), an error code and details when the body is refused.
func (f *Flags) readContext(w http.ResponseWriter, r *http.Request) (ctx map[string]any, canonical []byte, status int, code, details string) {
	body, e := httpapi.ReadBody(w, r, f.opt.MaxBodyBytes)
	if e != nil {
		return nil, nil, e.Status, CodeParseError, e.Message
	}
	status = http.StatusBadRequest
	ctx = map[string]any{}
	if len(bytes.TrimSpace(body)) > 0 {
		var req map[string]json.RawMessage
		if err := strictUnmarshal(body, &req); err != nil || req == nil {
			msg := "the body is not a JSON object"
			if err != nil {
				msg = fmt.Sprintf("the body is not JSON (%v)", err)
			}
			return nil, nil, status, CodeParseError, msg + `; send {"context":{"targetingKey":"...", ...}}`
		}
		if raw, ok := req["context"]; ok {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, nil, status, CodeParseError, fmt.Sprintf("context is not JSON (%v)", err)
			}
			switch v := v.(type) {
			case nil:
			case map[string]any:
				ctx = v
			default:
				return nil, nil, status, CodeInvalidContext, fmt.Sprintf("context is %s; it must be an object of attributes", kindOf(v))
			}
		}
	}
	if tk, ok := ctx["targetingKey"]; ok && tk != nil {
		if _, ok := tk.(string); !ok {
			return nil, nil, status, CodeInvalidContext, fmt.Sprintf("context.targetingKey is %s; it must be a string", kindOf(tk))
		}
	}
	canonical, _ = json.Marshal(ctx) // map keys sorted: equal contexts, equal bytes
	return ctx, canonical, 0, "", ""
}

// evaluateOne serves POST /ofrep/v1/evaluate/flags/{key}.
func (f *Flags) evaluateOne(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	ectx, canonical, status, code, details := f.readContext(w, r)
	if code != "" {
		f.counters.count(viaOFREP, Result{ErrorCode: code})
		httpapi.WriteJSON(w, status, failure(key, code, "%s", details))
		return
	}
	sel, err := parseSelector(r)
	if err != nil {
		f.counters.count(viaOFREP, Result{ErrorCode: CodeParseError})
		httpapi.WriteJSON(w, http.StatusBadRequest, failure(key, CodeParseError, "%v", err))
		return
	}
	fl := f.snap.Load().lookup(key, sel)
	if fl == nil {
		f.counters.count(viaOFREP, Result{ErrorCode: CodeFlagNotFound})
		res := failure(key, CodeFlagNotFound, "no flag %q; define it in a flag file or with PUT /v1/flags/{key}", key)
		if !sel.empty() {
			res = failure(key, CodeFlagNotFound, "no flag %q in %s (%s %s); check the selector, or the flag's metadata.flagSetId", key, sel, HeaderSelector, r.Header.Get(HeaderSelector))
			res.Metadata = sel.reflect()
		}
		httpapi.WriteJSON(w, http.StatusNotFound, res)
		return
	}
	res := withSelector(fl.Evaluate(ectx, f.opt.Now()), sel)
	f.counters.count(viaOFREP, res)
	if !res.OK() {
		httpapi.WriteJSON(w, http.StatusBadRequest, res)
		return
	}
	if res.Reason == ReasonDisabled {
		// The caller's default, as flagd's OFREP service answers a disabled flag: the
		// published server provider (@openfeature/ofrep-provider) refuses a 200 without a
		// value as malformed, and any value would replace the caller's default.
		a := failure(key, CodeFlagNotFound, "flag %q is DISABLED: use the default in your code, or set its state to ENABLED", key)
		a.Metadata = res.Metadata
		httpapi.WriteJSON(w, http.StatusNotFound, a)
		return
	}
	f.writeEvaluation(w, r, withEventStreams(res, r), digestOf(map[string]*Flag{key: fl}, []string{key}), canonical)
}

// withEventStreams is a single evaluation's answer with the change stream in eventStreams
// (OFREP ADR-0008 puts it in both evaluation answers). It adds the field to the encoded
// Result rather than embedding the type, so that it holds whatever JSON Result writes.
func withEventStreams(res Result, r *http.Request) any {
	var a map[string]json.RawMessage
	if b, err := json.Marshal(res); err != nil || json.Unmarshal(b, &a) != nil {
		return res
	}
	a["eventStreams"], _ = json.Marshal([]EventStream{{Type: "sse", URL: eventsURL(r)}})
	return a
}

// evaluateAll serves POST /ofrep/v1/evaluate/flags: every flag for one context. Flags
// whose evaluation fails are in the answer with their error code, as OFREP has it.
func (f *Flags) evaluateAll(w http.ResponseWriter, r *http.Request) {
	ectx, canonical, status, code, details := f.readContext(w, r)
	if code != "" {
		f.counters.count(viaOFREP, Result{ErrorCode: code})
		httpapi.WriteJSON(w, status, bulkFailure{ErrorCode: code, ErrorDetails: details})
		return
	}
	sel, err := parseSelector(r)
	if err != nil {
		f.counters.count(viaOFREP, Result{ErrorCode: CodeParseError})
		httpapi.WriteJSON(w, http.StatusBadRequest, bulkFailure{ErrorCode: CodeParseError, ErrorDetails: err.Error()})
		return
	}
	s := f.snap.Load()
	now := f.opt.Now()
	selected := s.selected(sel)
	a := BulkAnswer{Flags: make([]Result, 0, len(selected)), Metadata: s.bulkMetadata(selected, sel)}
	for _, fl := range selected {
		res := withSelector(fl.Evaluate(ectx, now), sel)
		f.counters.count(viaOFREP, res)
		a.Flags = append(a.Flags, res)
	}
	a.EventStreams = []EventStream{{Type: "sse", URL: eventsURL(r)}}
	f.writeEvaluation(w, r, a, s.digest, canonical)
}

// writeEvaluation answers v with an ETag, or 304 when the client's If-None-Match holds
// it. The ETag covers the flag configuration (digest), the evaluation context and the
// answer itself: a rule that reads $flagd.timestamp can change its answer with neither of
// the first two changing.
func (f *Flags) writeEvaluation(w http.ResponseWriter, r *http.Request, v any, digest string, canonicalCtx []byte) {
	body, err := json.Marshal(v)
	if err != nil {
		httpapi.WriteJSON(w, http.StatusInternalServerError, map[string]string{"errorDetails": "encoding the answer failed; report this bug"})
		return
	}
	h := sha256.New()
	h.Write([]byte(digest))
	h.Write([]byte{0})
	h.Write(canonicalCtx)
	h.Write([]byte{0})
	h.Write(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18]) + `"`
	w.Header().Set("ETag", etag)
	if matchETag(r.Header.Values("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// matchETag is If-None-Match's weak comparison (RFC 9110 §13.1.2).
func matchETag(values []string, etag string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimSpace(t)
			if t == "*" || strings.TrimPrefix(t, "W/") == etag {
				return true
			}
		}
	}
	return false
}

// eventsURL is the absolute URL of the change stream (OFREP's eventStreams url is a
// URI) at the address the connection arrived on: the listener's own, never the client's
// Host header, which a client chooses and the answer must not echo back (SPEC §4a). Served
// without net/http's server, there is no such address: the path alone then.
func eventsURL(r *http.Request) string {
	addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return PathEvents
	}
	u := url.URL{Scheme: "http", Host: addr.String(), Path: PathEvents}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	return u.String()
}

// ChangeEvent is the data of a change stream message (OFREP ADR-0008).
type ChangeEvent struct {
	Type string `json:"type"` // "refetchEvaluation"
	// ETag is the flag configuration's version (not an evaluation's ETag: those depend on
	// the context too).
	ETag         string `json:"etag"`
	LastModified int64  `json:"lastModified"` // Unix seconds
}

// events serves GET /ofrep/v1/events: a Server-Sent Events stream with one
// "refetchEvaluation" message per configuration change, local, from a file or replicated.
// A client that reconnects with a Last-Event-ID older than the configuration gets a message
// at once; changes close together may be told as one.
func (f *Flags) events(w http.ResponseWriter, r *http.Request) {
	var last uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			httpapi.WriteError(w, &httpapi.Error{Status: http.StatusBadRequest, Code: httpapi.CodeBadRequest, Message: fmt.Sprintf("Last-Event-ID %q is not an event ID; send the id: of the last event received, or omit it", v)})
			return
		}
		last = n
	}
	// The configuration before the stream is open to the client: a change after that is
	// told, even one made as soon as the client sees the stream open.
	s := f.snap.Load()
	stream := httpapi.StartSSE(w)
	stream.Comment("flag changes")
	if err := stream.Flush(); err != nil {
		return
	}
	keepAlive := time.NewTicker(f.opt.KeepAlive)
	defer keepAlive.Stop()
	send := last != 0 && last < s.version
	for {
		if send {
			data, _ := json.Marshal(ChangeEvent{Type: "refetchEvaluation", ETag: `"` + s.digest + `"`, LastModified: s.built.Unix()})
			stream.Event(strconv.FormatUint(s.version, 10), "message", data)
			if err := stream.Flush(); err != nil {
				return
			}
		}
		send = false
		select {
		case <-r.Context().Done():
			return
		case <-f.ctx.Done():
			return
		case <-keepAlive.C:
			stream.Comment("keep-alive")
			if err := stream.Flush(); err != nil {
				return
			}
		case <-s.changed:
			s, send = f.snap.Load(), true
		}
	}
}
