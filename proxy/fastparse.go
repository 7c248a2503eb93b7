package proxy

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
)

// The fast path's request head parser (issue 14; fastpath.go has the connection loop).
//
// It accepts only the plain shape almost every request has: an HTTP/1.1 request line in
// origin-form, CRLF line endings, no folded lines, one Host, at most one Content-Length
// or one "Transfer-Encoding: chunked", and none of the headers that switch protocols or
// wait for an interim answer. Everything else is not refused here but handed, bytes
// untouched, to the net/http path (parseFallback), which answers as it always did,
// framing verdicts (framing.go) included. So the parser can only ever be stricter than
// net/http, and the differential test and FuzzFastParser (fastparse_test.go) check that
// what it accepts, net/http accepts with the same method, target, version, fields and
// framing, and that what it calls malformed, net/http refuses.
//
// The deliberate exceptions, where the parser hands to net/http bytes net/http would
// accept (fallbackReason names each; the differential test lists them):
//   - HTTP/1.0 and other versions than HTTP/1.1 (keep-alive rules differ);
//   - CONNECT, PRI (the h2c preface), absolute-form and asterisk-form targets;
//   - request-targets with bytes outside a conservative set (so the target the app
//     gets is byte for byte what url.URL.RequestURI would have made of it);
//   - bare LF, obs-fold, duplicate Content-Length, Content-Length with
//     Transfer-Encoding, a Transfer-Encoding other than a single "chunked";
//   - Upgrade, Expect, Trailer, HTTP2-Settings, or "upgrade" in Connection;
//   - an empty Host or one with bytes outside the host grammar.

// parseVerdict is what parseHead decided.
type parseVerdict uint8

const (
	parseOK        parseVerdict = iota // the fast path serves it
	parseFallback                      // valid or not, the net/http path gets it as it is
	parseMalformed                     // net/http refuses it too (it still gets it, and answers)
)

// fastHead is a parsed request head. Its strings share one copy of the head's bytes.
type fastHead struct {
	method, target string
	host           string
	header         http.Header // canonical keys; Host removed, as net/http's server does
	contentLength  int64       // -1: none
	chunked        bool
	close          bool // Connection: close
}

// headEnd returns the length of the head in b (request line, fields and the empty line
// that ends them), or -1 while b holds no complete head. Any line that ends in LF counts,
// so a bare-LF head is found (and then refused by parseHead) rather than waited for.
func headEnd(b []byte) int {
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		i += j + 1
		// An empty line ends the head; an empty first line is a malformed request line
		// for net/http, which parseHead hands over as it is.
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return i
		}
	}
}

// parseHead parses the head b (as headEnd delimits it) into h. reason says why a head
// is not parseOK, for tests and logs.
func parseHead(b []byte, h *fastHead) (v parseVerdict, reason string) {
	*h = fastHead{contentLength: -1}
	s := string(b) // the one copy every string of h shares
	eol := strings.IndexByte(s, '\n')
	if eol < 1 || s[eol-1] != '\r' {
		return parseFallback, "bare LF or empty request line"
	}
	line := s[:eol-1]
	rest := s[eol+1:]
	sp1 := strings.IndexByte(line, ' ')
	if sp1 <= 0 {
		return parseFallback, "request line without method"
	}
	h.method = line[:sp1]
	sp2 := strings.IndexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		return parseFallback, "request line without version"
	}
	h.target = line[sp1+1 : sp1+1+sp2]
	proto := line[sp1+1+sp2+1:]
	if proto != "HTTP/1.1" {
		return parseFallback, "not HTTP/1.1"
	}
	for i := 0; i < len(h.method); i++ {
		if !isTokenChar(h.method[i]) {
			return parseMalformed, "invalid method"
		}
	}
	switch h.method {
	case http.MethodConnect, "PRI":
		return parseFallback, "CONNECT or PRI"
	}
	if !plainTarget(h.target) {
		return parseFallback, "request-target not plain origin-form"
	}

	// The fields. One backing array for the values, as textproto does.
	n := strings.Count(rest, "\n")
	vals := make([]string, 0, n)
	h.header = make(http.Header, n)
	hosts := 0
	teCount := 0
	for {
		eol := strings.IndexByte(rest, '\n')
		if eol < 0 {
			return parseFallback, "head without end" // headEnd said otherwise; be safe
		}
		if eol == 0 || rest[eol-1] != '\r' {
			return parseFallback, "bare LF"
		}
		line := rest[:eol-1]
		rest = rest[eol+1:]
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return parseFallback, "obs-fold"
		}
		colon := strings.IndexByte(line, ':')
		if colon < 0 {
			return parseMalformed, "field without colon"
		}
		name := line[:colon]
		if name == "" {
			return parseMalformed, "empty field name"
		}
		for i := 0; i < len(name); i++ {
			if !isTokenChar(name[i]) {
				return parseMalformed, "invalid field name"
			}
		}
		value := strings.Trim(line[colon+1:], " \t")
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
				return parseMalformed, "control byte in field value"
			}
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			hosts++
			if hosts > 1 {
				return parseMalformed, "more than one Host"
			}
			if !plainHost(value) {
				return parseFallback, "empty or unusual Host"
			}
			h.host = value
			continue // net/http's server takes Host out of the header map
		case "Content-Length":
			if h.contentLength >= 0 {
				return parseFallback, "more than one Content-Length"
			}
			if value == "" {
				return parseFallback, "empty Content-Length"
			}
			n, ok := parseLength([]byte(value))
			if !ok {
				return parseMalformed, "invalid Content-Length"
			}
			h.contentLength = n
		case "Transfer-Encoding":
			teCount++
			if teCount > 1 || !strings.EqualFold(value, "chunked") {
				return parseFallback, "Transfer-Encoding other than one chunked"
			}
			h.chunked = true
			continue // net/http moves it out of the header map (Request.TransferEncoding)
		case "Upgrade", "Expect", "Trailer", "Http2-Settings":
			return parseFallback, key + " header"
		case "Connection":
			for tok := range strings.SplitSeq(value, ",") {
				tok = strings.Trim(tok, " \t")
				switch {
				case strings.EqualFold(tok, "close"):
					h.close = true
				case strings.EqualFold(tok, "upgrade"):
					return parseFallback, "Connection: upgrade"
				}
			}
		}
		if prev, ok := h.header[key]; ok {
			h.header[key] = append(prev, value)
			continue
		}
		vals = append(vals, value)
		h.header[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if rest != "" {
		return parseFallback, "bytes after the head" // headEnd said otherwise; be safe
	}
	if hosts == 0 {
		return parseMalformed, "no Host"
	}
	if h.chunked && h.contentLength >= 0 {
		return parseFallback, "Content-Length and Transfer-Encoding"
	}
	// As net/http's fixPragmaCacheControl (RFC 7234 §5.4).
	if p, ok := h.header["Pragma"]; ok && len(p) > 0 && p[0] == "no-cache" {
		if _, ok := h.header["Cache-Control"]; !ok {
			h.header["Cache-Control"] = []string{"no-cache"}
		}
	}
	return parseOK, ""
}

// plainTarget reports whether t is an origin-form request-target of RFC 3986 path and
// query characters and valid percent-escapes only (no ';' in the query): url.ParseRequestURI
// accepts it, ReverseProxy's query cleaning leaves it and RequestURI gives it back
// unchanged, so the app gets what the client sent, as before.
func plainTarget(t string) bool {
	if t == "" || t[0] != '/' {
		return false
	}
	query := false
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c == '?':
			query = true
		case c == ';' && query:
			// url.ParseQuery refuses it, and ReverseProxy drops such parameters.
			return false
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0:
		case c == '%':
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// plainHost reports whether h is a non-empty host[:port] of letters, digits, '.', '-',
// '_', ':' and IPv6 brackets: a subset of what httpguts.ValidHostHeader allows, which
// the Transport sends unchanged.
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']':
		default:
			return false
		}
	}
	return true
}
