package flags

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ctxprop/ctxprop/httpapi"
)

// Routes of Register.
const (
	PathFlags      = "/v1/flags"
	PathOFREPFlags = "/ofrep/v1/evaluate/flags"
	// PathEvents is the OFREP change stream (Server-Sent Events, OFREP ADR-0008): one
	// {"type":"refetchEvaluation"} message each time the flag configuration changes.
	PathEvents = "/ofrep/v1/events"
)

// Register mounts the flag routes on mux (the admin server's Handle):
//
//	GET    /v1/flags                        every flag serving, its source, refused definitions
//	GET    /v1/flags/{key}                  one flag
//	PUT    /v1/flags/{key}                  set an API-managed flag (body: one flagd definition)
//	DELETE /v1/flags/{key}                  delete an API-managed flag
//	POST   /ofrep/v1/evaluate/flags/{key}   OFREP single evaluation
//	POST   /ofrep/v1/evaluate/flags         OFREP bulk evaluation
//	GET    /ofrep/v1/events                 OFREP change notifications (SSE)
//
// The /v1 routes answer errors with the admin API's own writer (httpapi.WriteError, which the admin API uses: one
// shape, "limit" included), the OFREP routes as OFREP does. Bodies are read with
// httpapi.ReadBody, and the admin server's browser guard covers every route: writes to
// /v1/flags need a JSON Content-Type or X-Requested-By, OFREP evaluations do not.
func (f *Flags) Register(mux interface{ Handle(string, http.Handler) }) {
	mux.Handle("GET "+PathFlags, http.HandlerFunc(f.list))
	mux.Handle("GET "+PathFlags+"/{key}", http.HandlerFunc(f.get))
	mux.Handle("PUT "+PathFlags+"/{key}", http.HandlerFunc(f.putHandler))
	mux.Handle("DELETE "+PathFlags+"/{key}", http.HandlerFunc(f.deleteHandler))
	mux.Handle("POST "+PathOFREPFlags+"/{key}", http.HandlerFunc(f.evaluateOne))
	mux.Handle("POST "+PathOFREPFlags, http.HandlerFunc(f.evaluateAll))
	mux.Handle("GET "+PathEvents, http.HandlerFunc(f.events))
}

// ListAnswer is the body of GET /v1/flags. Flags is a flagd "flags" object, so that the
// answer's flags can be saved as a flag file.
type ListAnswer struct {
	Flags    map[string]json.RawMessage `json:"flags"`
	Sources  map[string]string          `json:"sources"` // "api" or "file:<path>"
	Problems []Problem                  `json:"problems"`
	// All is every definition serving, in every flag set: Flags has, per key, the one that
	// serves without a Flagd-Selector; the others serve only under a selector.
	All []FlagAnswer `json:"all"`
}

// FlagAnswer is the body of GET /v1/flags/{key}.
type FlagAnswer struct {
	Key        string          `json:"key"`
	Source     string          `json:"source"`
	FlagSetID  string          `json:"flagSetId,omitempty"` // the flag set, "" for none
	Definition json.RawMessage `json:"definition"`
}

func (f *Flags) list(w http.ResponseWriter, r *http.Request) {
	s := f.snap.Load()
	a := ListAnswer{Flags: make(map[string]json.RawMessage, len(s.keys)), Sources: make(map[string]string, len(s.keys)), Problems: f.Problems()}
	for _, k := range s.keys {
		a.Flags[k] = s.flags[k].definition
		a.Sources[k] = s.flags[k].Source
	}
	if a.Problems == nil {
		a.Problems = []Problem{}
	}
	a.All = make([]FlagAnswer, 0, len(s.all))
	for _, r := range s.all {
		a.All = append(a.All, FlagAnswer{Key: r.Key, Source: r.Source, FlagSetID: r.FlagSetID, Definition: r.definition})
	}
	httpapi.WriteJSON(w, http.StatusOK, a)
}

func (f *Flags) get(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	fl := f.Flag(key)
	if fl == nil {
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusNotFound, Code: httpapi.CodeNotFound, Message: fmt.Sprintf("no flag %q; GET /v1/flags lists them", key)})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, FlagAnswer{Key: key, Source: fl.Source, FlagSetID: fl.FlagSetID, Definition: fl.definition})
}

func (f *Flags) putHandler(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if f.opt.Store == nil {
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeNotReady, Message: "this sidecar has no store for API-managed flags; define flags in flags.files"})
		return
	}
	body, e := httpapi.ReadBody(w, r, f.opt.MaxBodyBytes)
	if e != nil {
		httpapi.WriteError(w, e)
		return
	}
	fl, err := ParseFlag(key, body)
	if err != nil {
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusBadRequest, Code: httpapi.CodeBadRequest, Message: err.Error() + "; the flag was not changed"})
		return
	}
	if err := f.put(r.Context(), key, fl); err != nil {
		httpapi.WriteError(w, httpapi.StoreError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *Flags) deleteHandler(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if f.opt.Store == nil {
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeNotReady, Message: "this sidecar has no store for API-managed flags; define flags in flags.files"})
		return
	}
	entries, err := f.opt.Store.Map(Context, Map)
	if err != nil {
		httpapi.WriteError(w, httpapi.StoreError(err))
		return
	}
	if _, ok := entries[key]; !ok {
		msg := fmt.Sprintf("no API-managed flag %q", key)
		if fl := f.Flag(key); fl != nil {
			msg += fmt.Sprintf("; it is defined in %s: remove it there", fl.Source)
		}
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusNotFound, Code: httpapi.CodeNotFound, Message: msg})
		return
	}
	if err := f.del(r.Context(), key); err != nil {
		httpapi.WriteError(w, httpapi.StoreError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
