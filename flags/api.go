package flags

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
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
// The /v1 routes answer errors as the admin API does ({"error":{"code","message"}}), the
// OFREP routes as OFREP does.
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
}

// FlagAnswer is the body of GET /v1/flags/{key}.
type FlagAnswer struct {
	Key        string          `json:"key"`
	Source     string          `json:"source"`
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
	writeJSON(w, http.StatusOK, a)
}

func (f *Flags) get(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	fl := f.Flag(key)
	if fl == nil {
		writeAdminError(w, http.StatusNotFound, admin.CodeNotFound, fmt.Sprintf("no flag %q; GET /v1/flags lists them", key))
		return
	}
	writeJSON(w, http.StatusOK, FlagAnswer{Key: key, Source: fl.Source, Definition: fl.definition})
}

func (f *Flags) putHandler(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if f.opt.Store == nil {
		writeAdminError(w, http.StatusServiceUnavailable, admin.CodeNotReady, "this sidecar has no store for API-managed flags; define flags in flags.files")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, f.opt.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeAdminError(w, http.StatusRequestEntityTooLarge, admin.CodeBodyTooLarge, fmt.Sprintf("the body is over %d bytes; a flag definition must be smaller", f.opt.MaxBodyBytes))
			return
		}
		writeAdminError(w, http.StatusBadRequest, admin.CodeBadRequest, "reading the body: "+err.Error())
		return
	}
	fl, err := ParseFlag(key, body)
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, admin.CodeBadRequest, err.Error()+"; the flag was not changed")
		return
	}
	if err := f.put(r.Context(), key, fl); err != nil {
		writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *Flags) deleteHandler(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if f.opt.Store == nil {
		writeAdminError(w, http.StatusServiceUnavailable, admin.CodeNotReady, "this sidecar has no store for API-managed flags; define flags in flags.files")
		return
	}
	entries, err := f.opt.Store.Map(Context, Map)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if _, ok := entries[key]; !ok {
		msg := fmt.Sprintf("no API-managed flag %q", key)
		if fl := f.Flag(key); fl != nil {
			msg += fmt.Sprintf("; it is defined in %s: remove it there", fl.Source)
		}
		writeAdminError(w, http.StatusNotFound, admin.CodeNotFound, msg)
		return
	}
	if err := f.del(r.Context(), key); err != nil {
		writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeStoreError answers a store error as the admin API does.
func writeStoreError(w http.ResponseWriter, err error) {
	var lim *localstore.LimitError
	switch {
	case errors.As(err, &lim):
		if lim.Limit == "max_value_bytes" {
			writeAdminError(w, http.StatusRequestEntityTooLarge, admin.CodeValueTooLarge, err.Error())
			return
		}
		writeAdminError(w, http.StatusUnprocessableEntity, admin.CodeLimitExceeded, err.Error())
	case errors.Is(err, localstore.ErrInvalid):
		writeAdminError(w, http.StatusBadRequest, admin.CodeBadRequest, err.Error())
	case errors.Is(err, localstore.ErrClosed):
		writeAdminError(w, http.StatusServiceUnavailable, admin.CodeShuttingDown, "the sidecar is shutting down; retry on another sidecar or once it has restarted")
	case errors.Is(err, localstore.ErrFailed):
		writeAdminError(w, http.StatusServiceUnavailable, admin.CodeStoreFailed, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeAdminError(w, http.StatusServiceUnavailable, admin.CodeShuttingDown, "the request ended before the write was confirmed on disk; it was applied and will be committed — read it back to check")
	default:
		writeAdminError(w, http.StatusInternalServerError, admin.CodeInternal, err.Error())
	}
}

func writeAdminError(w http.ResponseWriter, status int, code, msg string) {
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"error":{"code":"internal","message":"encoding the answer failed; report this bug"}}`)
	}
	data = append(data, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(status)
	w.Write(data)
}
