package admin

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// HeaderRequestedBy marks a write as sent by a program rather than by a web page: a page
// cannot set it on a cross-origin request without a CORS preflight, which the admin API
// never grants. Any non-empty value will do. A write with a Content-Type other than the
// three a form can send (application/json, as the Client sends) needs no such header.
const HeaderRequestedBy = "X-Requested-By"

// Reasons of ctxprop_admin_refused_total.
const (
	refusedHost   = "host"
	refusedOrigin = "origin"
	refusedSimple = "simple_request"
)

// The browser guard of SPEC §4a. The admin API has no authentication and listens on
// loopback, where a browser on the same machine (an operator's workstation running
// `kubectl port-forward`) reaches it too. Three checks keep web pages out:
//
//   - Host: a page served from a name the attacker controls, then rebound to 127.0.0.1
//     (DNS rebinding), sends its own name as Host. Only loopback IP literals, localhost,
//     the connection's own local IP and the names of admin.allowed_hosts are answered.
//   - Origin: a browser names the page that makes a request. A write from a page of another
//     origin is refused; a page at a loopback address, localhost or an allowed name on the
//     port the request came to is the admin API's own page, whatever name it was reached by.
//   - Simple requests: a page may POST text/plain, a form or multipart data anywhere
//     without asking (no CORS preflight). A write must carry another Content-Type (JSON)
//     or HeaderRequestedBy, which no page can send to another origin without a preflight.
//     Should a browser omit both Origin and Sec-Fetch-Site, this still holds.
//
// OFREP evaluations are POSTs that read: they pass the first two checks only.

// guard refuses a request that fails the Host or Origin checks, before any route runs.
func (s *Server) guard(r *http.Request) *Error {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if r.Host != "" {
		if host, _ := splitHostPort(r.Host); !s.hostAllowed(host, local) {
			s.metrics.refused.WithLabelValues(refusedHost).Inc()
			return &Error{Status: http.StatusForbidden, Code: CodeHostNotAllowed, Message: fmt.Sprintf(
				"Host %q is refused: the admin API answers only requests addressed to a loopback address or localhost, "+
					"so that no web page reaches it through DNS rebinding; call it at 127.0.0.1 (kubectl port-forward listens there), "+
					"or list the name in admin.allowed_hosts", r.Host)}
		}
	}
	if safeMethod(r.Method) {
		return nil
	}
	site := r.Header.Get("Sec-Fetch-Site")
	if site == "same-origin" || site == "none" {
		return nil
	}
	origin := r.Header.Get("Origin")
	if origin == "" && site == "" {
		return nil // not a browser, or one that sends neither: the simple-request rule still holds
	}
	if origin != "" && s.ownOrigin(origin, r, local) {
		return nil
	}
	s.metrics.refused.WithLabelValues(refusedOrigin).Inc()
	from := fmt.Sprintf("of origin %q", origin)
	if origin == "" {
		from = fmt.Sprintf("(Sec-Fetch-Site %q)", site)
	}
	return &Error{Status: http.StatusForbidden, Code: CodeCrossOrigin, Message: fmt.Sprintf(
		"a %s from a web page %s is refused: only pages served by the admin API itself may write to it; "+
			"call the API from a program, which sends no Origin; nothing was changed", r.Method, from)}
}

// writeGuard refuses a write to a /v1 route that a web page could have sent without a
// CORS preflight. pattern is the route's ServeMux pattern.
func (s *Server) writeGuard(r *http.Request, pattern string) *Error {
	if safeMethod(r.Method) {
		return nil
	}
	if _, path, _ := strings.Cut(pattern, " "); !strings.HasPrefix(path, "/v1/") {
		return nil // OFREP evaluations read; the other routes are GETs
	}
	if r.Header.Get(HeaderRequestedBy) != "" || !simpleContentType(r.Header.Get("Content-Type")) {
		return nil
	}
	s.metrics.refused.WithLabelValues(refusedSimple).Inc()
	what := "no Content-Type"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		what = fmt.Sprintf("Content-Type %q", ct)
	}
	return &Error{Status: http.StatusForbidden, Code: CodeSimpleRequest, Message: fmt.Sprintf(
		"a %s with %s and no %s header is refused, as any web page could send it: "+
			"send Content-Type: application/json, or the header %q (any value) with a text/plain ctx-ops body or with no body; nothing was changed",
		r.Method, what, HeaderRequestedBy, HeaderRequestedBy+": curl")}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// simpleContentType reports whether a web page may send ct to any origin without a CORS
// preflight (the Fetch standard's CORS-safelisted Content-Type), or whether it is absent or
// malformed: such a type proves nothing. Anything Go parses into another media type, a
// browser would have sent only after a preflight.
func simpleContentType(ct string) bool {
	switch ct {
	case "":
		return true
	case "application/json":
		// What every client of the API sends: the answer mime.ParseMediaType gives,
		// without the map of parameters it makes for each call.
		return false
	}
	media, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return true
	}
	switch media {
	case "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
		return true
	}
	return false
}

// hostAllowed reports whether host (no port, no brackets) names this server: a loopback IP
// literal, localhost, an entry of Options.AllowedHosts, or the IP literal of the local
// address the connection arrived on. An IP literal cannot be rebound, and a page whose
// origin is the listener's own address is the admin API's own page: this keeps a
// Prometheus scrape of a non-loopback listener (admin.allow_non_loopback) working.
func (s *Server) hostAllowed(host string, local net.Addr) bool {
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || s.allowed[name] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() {
		return true
	}
	if ta, ok := local.(*net.TCPAddr); ok {
		if lip, ok := netip.AddrFromSlice(ta.IP); ok && lip.Unmap() == ip {
			return true
		}
	}
	return false
}

// ownOrigin reports whether origin is a page of this server: http, an allowed host, and the
// port the request came to (which with kubectl port-forward is the workstation's port, not
// the listener's).
func (s *Server) ownOrigin(origin string, r *http.Request, local net.Addr) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if u.Scheme != scheme {
		return false
	}
	host, port := splitHostPort(u.Host)
	if !s.hostAllowed(host, local) {
		return false
	}
	if port == "" {
		port = defaultPort(scheme)
	}
	var want string
	switch {
	case r.Host != "":
		_, want = splitHostPort(r.Host)
		if want == "" {
			want = defaultPort(scheme)
		}
	case local != nil:
		_, want = splitHostPort(local.String())
	}
	return port == want
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// splitHostPort splits a Host header or URL host into host and port; port is "" if there
// is none, and IPv6 brackets are removed.
func splitHostPort(hostport string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
}

// allowedHosts is the set of Options.AllowedHosts, lower-case, without a trailing dot.
func allowedHosts(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		if n = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), ".")); n != "" {
			m[n] = true
		}
	}
	return m
}
