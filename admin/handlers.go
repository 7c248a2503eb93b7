package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/httpapi"
	"github.com/ctxprop/ctxprop/ops"
)

// Request and answer bodies of SPEC §3a.
type (
	listAnswer struct {
		Contexts []ctxstore.Summary `json:"contexts"`
	}
	valueAnswer[T any] struct {
		Value T `json:"value"`
	}
	entriesAnswer struct {
		Entries map[string]json.RawMessage `json:"entries"`
	}
	membersAnswer struct {
		Members []string `json:"members"`
	}
	peersAnswer struct {
		Peers []PeerStatus `json:"peers"`
	}
	statusAnswer struct {
		Status string `json:"status"`
	}

	ttlRequest struct {
		TTL   *string `json:"ttl"`
		Fixed bool    `json:"fixed"`
	}
	incrRequest struct {
		By  *int64 `json:"by"`
		TTL string `json:"ttl"`
	}
	putRequest struct {
		Value json.RawMessage `json:"value"`
		TTL   string          `json:"ttl"`
	}
	setRequest struct {
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
		TTL    string   `json:"ttl"`
	}
)

func (s *Server) listContexts(w http.ResponseWriter, r *http.Request) {
	list := s.contexts.List()
	if list == nil {
		list = []ctxstore.Summary{}
	}
	WriteJSON(w, http.StatusOK, listAnswer{list})
}

func (s *Server) getContext(w http.ResponseWriter, r *http.Request) {
	snap, err := s.contexts.Get(pathParam(r, "ctx"))
	if err != nil {
		WriteError(w, StoreError(err))
		return
	}
	WriteJSON(w, http.StatusOK, snap)
}

func (s *Server) deleteContext(w http.ResponseWriter, r *http.Request) {
	if err := s.writer.Delete(r.Context(), pathParam(r, "ctx")); err != nil {
		WriteError(w, StoreError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) setTTL(w http.ResponseWriter, r *http.Request) {
	var req ttlRequest
	if e := s.decode(w, r, &req, false); e != nil {
		WriteError(w, e)
		return
	}
	if req.TTL == nil {
		WriteError(w, badRequest(`field "ttl" is missing; send {"ttl":"1h"}, or {"ttl":"0"} for no expiry`))
		return
	}
	ttl, e := parseTTL(*req.TTL)
	if e != nil {
		WriteError(w, e)
		return
	}
	if err := s.writer.SetTTL(r.Context(), pathParam(r, "ctx"), ttl, req.Fixed); err != nil {
		WriteError(w, StoreError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getCounter(w http.ResponseWriter, r *http.Request) {
	key := pathParam(r, "key")
	if e := checkName(ops.Op{Kind: ops.Incr, Key: key, By: 1}); e != nil {
		WriteError(w, e)
		return
	}
	v, err := s.values.Counter(pathParam(r, "ctx"), key)
	if err != nil {
		WriteError(w, StoreError(err))
		return
	}
	WriteJSON(w, http.StatusOK, valueAnswer[int64]{v})
}

func (s *Server) incrCounter(w http.ResponseWriter, r *http.Request) {
	body, e := ReadBody(w, r, s.opt.MaxBodyBytes)
	if e != nil {
		WriteError(w, e)
		return
	}
	in, ok := fastIncr(body)
	if !ok {
		// Declared here, not above: its pointer goes to encoding/json, which puts it on
		// the heap, and the fast path needs none of it.
		var req incrRequest
		if e := decodeJSON(body, &req, true); e != nil {
			WriteError(w, e)
			return
		}
		in = plainIncr{hasBy: req.By != nil, ttl: req.TTL}
		if in.hasBy {
			in.by = *req.By
		}
	}
	op := ops.Op{Kind: ops.Incr, Key: pathParam(r, "key"), By: 1}
	if in.hasBy {
		op.By = in.by
	}
	if op.TTL, e = parseTTL(in.ttl); e != nil {
		WriteError(w, e)
		return
	}
	res, e := s.apply(r, []ops.Op{op})
	if e != nil {
		WriteError(w, e)
		return
	}
	writeCounter(w, res.Counters[op.Key])
}

// writeCounter answers a counter's value as WriteJSON answers valueAnswer[int64]{v}, byte
// for byte (TestWriteCounter_SameAsWriteJSON), without encoding/json: the increment is the
// API's hot write (issue 14).
func writeCounter(w http.ResponseWriter, v int64) {
	line := make([]byte, 0, len(`{"value":-9223372036854775808}`)+1)
	line = append(line, `{"value":`...)
	line = strconv.AppendInt(line, v, 10)
	line = append(line, "}\n"...)
	httpapi.WriteJSONLine(w, http.StatusOK, line)
}

func (s *Server) getMap(w http.ResponseWriter, r *http.Request) {
	m := pathParam(r, "map")
	if e := checkName(ops.Op{Kind: ops.Del, Map: m, Key: "k"}); e != nil {
		WriteError(w, e)
		return
	}
	entries, err := s.contexts.Map(pathParam(r, "ctx"), m)
	if err != nil {
		WriteError(w, StoreError(err))
		return
	}
	WriteJSON(w, http.StatusOK, entriesAnswer{entries})
}

func (s *Server) getMapEntry(w http.ResponseWriter, r *http.Request) {
	m, key := pathParam(r, "map"), pathParam(r, "key")
	if e := checkName(ops.Op{Kind: ops.Del, Map: m, Key: key}); e != nil {
		WriteError(w, e)
		return
	}
	v, err := s.values.MapGet(pathParam(r, "ctx"), m, key)
	if err != nil {
		WriteError(w, StoreError(err))
		return
	}
	WriteJSON(w, http.StatusOK, valueAnswer[json.RawMessage]{v})
}

func (s *Server) putMapEntry(w http.ResponseWriter, r *http.Request) {
	var req putRequest
	if e := s.decode(w, r, &req, false); e != nil {
		WriteError(w, e)
		return
	}
	if len(req.Value) == 0 {
		WriteError(w, badRequest(`field "value" is missing; send {"value":<any JSON>,"ttl":"1h"?}`))
		return
	}
	op := ops.Op{Kind: ops.Put, Map: pathParam(r, "map"), Key: pathParam(r, "key")}
	var buf bytes.Buffer
	if err := json.Compact(&buf, req.Value); err != nil {
		WriteError(w, badRequest(`field "value" is not valid JSON: %v`, err))
		return
	}
	op.Value = buf.Bytes()
	var e *Error
	if op.TTL, e = parseTTL(req.TTL); e != nil {
		WriteError(w, e)
		return
	}
	if _, e := s.apply(r, []ops.Op{op}); e != nil {
		WriteError(w, e)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) delMapEntry(w http.ResponseWriter, r *http.Request) {
	op := ops.Op{Kind: ops.Del, Map: pathParam(r, "map"), Key: pathParam(r, "key")}
	if _, e := s.apply(r, []ops.Op{op}); e != nil {
		WriteError(w, e)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getSet(w http.ResponseWriter, r *http.Request) {
	set := pathParam(r, "set")
	if e := checkName(ops.Op{Kind: ops.Rem, Set: set, Member: "x"}); e != nil {
		WriteError(w, e)
		return
	}
	members, err := s.values.Set(pathParam(r, "ctx"), set)
	if err != nil {
		WriteError(w, StoreError(err))
		return
	}
	WriteJSON(w, http.StatusOK, membersAnswer{members})
}

// updateSet applies the additions, then the removals, in one atomic write: a member in
// both lists ends up removed.
func (s *Server) updateSet(w http.ResponseWriter, r *http.Request) {
	var req setRequest
	if e := s.decode(w, r, &req, false); e != nil {
		WriteError(w, e)
		return
	}
	set := pathParam(r, "set")
	ttl, e := parseTTL(req.TTL)
	if e != nil {
		WriteError(w, e)
		return
	}
	if ttl != 0 && len(req.Add) == 0 {
		WriteError(w, badRequest(`field "ttl" applies to the members in "add", and there are none; send {"add":["x"],"ttl":"1h"}`))
		return
	}
	list := make([]ops.Op, 0, len(req.Add)+len(req.Remove))
	for _, m := range req.Add {
		list = append(list, ops.Op{Kind: ops.Add, Set: set, Member: m, TTL: ttl})
	}
	for _, m := range req.Remove {
		list = append(list, ops.Op{Kind: ops.Rem, Set: set, Member: m})
	}
	if len(list) == 0 {
		WriteError(w, badRequest(`nothing to do; send {"add":["x"],"remove":["y"]}`))
		return
	}
	res, e := s.apply(r, list)
	if e != nil {
		WriteError(w, e)
		return
	}
	members := res.Sets[set]
	if members == nil {
		members = []string{}
	}
	WriteJSON(w, http.StatusOK, membersAnswer{members})
}

func (s *Server) applyOps(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	media, _, err := mime.ParseMediaType(ct)
	if err != nil || (media != "text/plain" && media != "application/json") {
		WriteError(w, &Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedType,
			Message: fmt.Sprintf("Content-Type %q is not accepted; send a ctx-ops header value as text/plain or a JSON list of ops as application/json", ct)})
		return
	}
	body, e := ReadBody(w, r, s.opt.MaxBodyBytes)
	if e != nil {
		WriteError(w, e)
		return
	}
	var list []ops.Op
	if media == "text/plain" {
		list, err = ops.ParseHeader(strings.TrimSpace(string(body)))
	} else {
		list, err = ops.ParseJSON(body)
	}
	if err != nil {
		WriteError(w, badRequest("%v", err))
		return
	}
	if len(list) == 0 {
		WriteError(w, badRequest(`the body holds no ops; send e.g. incr;key="orders";by=2 as text/plain`))
		return
	}
	if _, e := s.apply(r, list); e != nil {
		WriteError(w, e)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) peers(w http.ResponseWriter, r *http.Request) {
	var list []PeerStatus
	if s.opt.Peers != nil {
		list = s.opt.Peers.Peers()
	}
	if list == nil {
		list = []PeerStatus{}
	}
	WriteJSON(w, http.StatusOK, peersAnswer{list})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, statusAnswer{"ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var reasons []string
	if err := s.checker.Ready(); err != nil {
		reasons = append(reasons, "store: "+err.Error())
	}
	s.mu.Lock()
	checks := s.checks
	s.mu.Unlock()
	for _, c := range checks {
		if err := c.check(); err != nil {
			reasons = append(reasons, c.name+": "+err.Error())
		}
	}
	if len(reasons) > 0 {
		WriteError(w, &Error{Status: http.StatusServiceUnavailable, Code: CodeNotReady, Message: strings.Join(reasons, "; ")})
		return
	}
	WriteJSON(w, http.StatusOK, statusAnswer{"ready"})
}

// apply writes list durably (SPEC §3: an acknowledged admin write is on disk).
func (s *Server) apply(r *http.Request, list []ops.Op) (ctxstore.Result, *Error) {
	res, err := s.writer.Apply(r.Context(), pathParam(r, "ctx"), list, ctxstore.Durable)
	if err != nil {
		return res, StoreError(err)
	}
	return res, nil
}

// decode reads a JSON object into v, refusing unknown fields and trailing data. An empty
// body is an empty object if allowEmpty, else an error.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) *Error {
	body, e := ReadBody(w, r, s.opt.MaxBodyBytes)
	if e != nil {
		return e
	}
	return decodeJSON(body, v, allowEmpty)
}

// decodeJSON is decode's work on a body already read.
func decodeJSON(body []byte, v any, allowEmpty bool) *Error {
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("the body is empty; send a JSON object (see SPEC §3a)")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("the body is not the expected JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("the body has data after its JSON object; send one object")
	}
	return nil
}

// parseTTL parses a Go duration ("90s", "1h"); "" and "0" mean zero.
func parseTTL(s string) (time.Duration, *Error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, badRequest(`"ttl" %q is not a Go duration; send e.g. "90s", "1h" or "0"`, s)
	}
	if d < 0 {
		return 0, badRequest(`"ttl" %q is negative; send a positive duration, or "0"`, s)
	}
	if d > ops.MaxTTL {
		return 0, badRequest(`"ttl" %q is over the maximum %s`, s, ops.MaxTTL)
	}
	return d, nil
}

// checkName validates the names a read route takes by the rules of ops.Validate, so a
// bad name gets the same 400 on a read as on a write.
func checkName(op ops.Op) *Error {
	if err := ops.Validate(op); err != nil {
		return badRequest("%v", err)
	}
	return nil
}
