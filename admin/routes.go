package admin

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// routes registers the table of SPEC §3a.
func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /v1/contexts", s.listContexts)
	m.HandleFunc("GET /v1/contexts/{ctx}", s.getContext)
	m.HandleFunc("DELETE /v1/contexts/{ctx}", s.deleteContext)
	m.HandleFunc("PUT /v1/contexts/{ctx}/ttl", s.setTTL)
	m.HandleFunc("GET /v1/contexts/{ctx}/counters/{key}", s.getCounter)
	m.HandleFunc("POST /v1/contexts/{ctx}/counters/{key}", s.incrCounter)
	m.HandleFunc("GET /v1/contexts/{ctx}/maps/{map}", s.getMap)
	m.HandleFunc("GET /v1/contexts/{ctx}/maps/{map}/{key}", s.getMapEntry)
	m.HandleFunc("PUT /v1/contexts/{ctx}/maps/{map}/{key}", s.putMapEntry)
	m.HandleFunc("DELETE /v1/contexts/{ctx}/maps/{map}/{key}", s.delMapEntry)
	m.HandleFunc("GET /v1/contexts/{ctx}/sets/{set}", s.getSet)
	m.HandleFunc("POST /v1/contexts/{ctx}/sets/{set}", s.updateSet)
	m.HandleFunc("POST /v1/contexts/{ctx}/ops", s.applyOps)
	m.HandleFunc("GET /v1/watch", s.watch)
	m.HandleFunc("GET /v1/peers", s.peers)
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	m.Handle("GET /metrics", s.metricsHandler())
}

// unmatchedRoute labels the metrics of requests no route took.
const unmatchedRoute = "unmatched"

// ServeHTTP-level work shared by every route: body read timeout, browser guard, draining,
// path checks, JSON 404/405, metrics.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	sw := w.(*statusWriter)
	s.timeBodyReads(w, r)
	if e := s.guard(r); e != nil {
		WriteError(w, e)
		return
	}
	if s.draining.Load() && r.URL.Path != "/healthz" {
		w.Header().Set("Connection", "close")
		WriteError(w, shuttingDown())
		return
	}
	r, perr := normalizePath(r)
	if perr != nil {
		WriteError(w, perr)
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// No route: the mux would answer 404 or 405 in plain text; answer in JSON instead.
		probe := &headerProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.status == http.StatusMethodNotAllowed {
			allow := probe.header.Get("Allow")
			w.Header().Set("Allow", allow)
			WriteError(w, &Error{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed,
				Message: r.Method + " is not allowed on " + r.URL.EscapedPath() + "; use " + allow})
			return
		}
		WriteError(w, &Error{Status: http.StatusNotFound, Code: CodeNotFound,
			Message: "no API route " + r.Method + " " + r.URL.EscapedPath() + "; see SPEC §3a for the routes (names in paths are percent-encoded)"})
		return
	}
	sw.route = pattern
	if e := s.writeGuard(r, pattern); e != nil {
		WriteError(w, e)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// headerProbe records what the mux's own 404/405 handler would answer.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(status int)      { p.status = status }

// segmentsKey holds, in a request's context, the decoded path segments of a request whose
// path normalizePath rewrote.
type segmentsKey struct{}

// slashPlaceholder stands for a segment that is exactly an encoded slash while the mux
// routes: ServeMux takes a segment that decodes to "/" for a trailing slash and matches no
// wildcard with it, yet "/" is a valid map key or set name. Handlers read the real value
// back with pathParam.
const slashPlaceholder = "_"

// normalizePath refuses dot segments and empty segments, which ServeMux would answer with
// a redirect to another resource (a PUT to .../maps/m/.. must not land on .../maps), and
// rewrites segments that are an encoded slash (see slashPlaceholder).
func normalizePath(r *http.Request) (*http.Request, *Error) {
	escaped := r.URL.EscapedPath()
	// The segments are checked in place: the split is made only for a rewrite, rare,
	// and not for every request.
	rewrite := false
	for i, rest := 0, escaped; ; i++ {
		seg, after, more := strings.Cut(rest, "/")
		switch {
		case i == 0:
		case seg == "." || seg == "..":
			return r, badRequest("path segment %q is not allowed; percent-encode a name of dots (%q is %%2E%%2E)", seg, "..")
		case seg == "" && more:
			return r, badRequest("path %q has an empty segment; names are at least 1 byte", escaped)
		case strings.EqualFold(seg, "%2F"):
			rewrite = true
		}
		if !more {
			break
		}
		rest = after
	}
	if !rewrite {
		return r, nil
	}
	segs := strings.Split(escaped, "/")
	decoded := make([]string, len(segs))
	for i, seg := range segs {
		d, err := url.PathUnescape(seg)
		if err != nil {
			return r, badRequest("path segment %q is not valid percent-encoding", seg)
		}
		decoded[i] = d
		if d == "/" {
			segs[i] = slashPlaceholder
		}
	}
	u := *r.URL
	u.RawPath = strings.Join(segs, "/")
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return r, badRequest("path %q is not valid percent-encoding", escaped)
	}
	u.Path = p
	r2 := r.WithContext(context.WithValue(r.Context(), segmentsKey{}, decoded))
	r2.URL = &u
	return r2, nil
}

// pathParam returns the decoded path wildcard name of r's route.
func pathParam(r *http.Request, name string) string {
	decoded, ok := r.Context().Value(segmentsKey{}).([]string)
	if !ok {
		return r.PathValue(name)
	}
	pattern := r.Pattern
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = pattern[i+1:]
	}
	for i, seg := range strings.Split(pattern, "/") {
		if seg == "{"+name+"}" && i < len(decoded) {
			return decoded[i]
		}
	}
	return r.PathValue(name)
}

// instrument counts requests by method, route and status and times them.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		sw := &statusWriter{ResponseWriter: w, route: unmatchedRoute}
		next.ServeHTTP(sw, r)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		s.metrics.observe(sw.route, r.Method, status, time.Since(start))
	})
}

// statusWriter records the status of an answer and the route that made it.
type statusWriter struct {
	http.ResponseWriter
	status int
	route  string
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush of the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
