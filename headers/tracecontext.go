package headers

import (
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// W3C Trace Context Level 2, §3.2: the version 00 traceparent is exactly this long, and
// a future version is at least this long (its first four fields are version 00's).
const traceparentLen = 2 + 1 + 32 + 1 + 16 + 1 + 2

// knownFlags are the trace-flags defined by Level 2. Other bits are reserved: they are
// not interpreted on receipt and must be written as zero (§3.2.2.5.3).
const knownFlags = trace.FlagsSampled | trace.FlagsRandom

// parseTraceparent parses the traceparent lines of a request. Absent (no lines) is
// not an error and yields the zero config. The config's TraceFlags keep only the
// flags Level 2 defines.
//
// It is stricter than otel's propagation.TraceContext, which reads only the first line:
// more than one line is invalid (§3.2, the header is not a list), and reserved flag bits
// are ignored rather than invalidating version 00 (the spec defines no such rule).
func parseTraceparent(values []string) (trace.SpanContextConfig, error) {
	var scc trace.SpanContextConfig
	switch len(values) {
	case 0:
		return scc, nil
	case 1:
	default:
		return scc, fmt.Errorf("%w: %d header lines, exactly one is allowed", ErrTraceparent, len(values))
	}
	// Go's HTTP server already trims OWS; headers built by hand may still carry it.
	v := strings.Trim(values[0], " \t")
	if len(v) < traceparentLen {
		return scc, fmt.Errorf("%w: %q is %d characters, want %d (version-traceid-parentid-flags)", ErrTraceparent, v, len(v), traceparentLen)
	}
	version, ok := hexByte(v[0:2])
	if !ok {
		return scc, fmt.Errorf("%w: version %q is not two lowercase hex digits", ErrTraceparent, v[0:2])
	}
	if version == 0xff {
		return scc, fmt.Errorf("%w: version ff is forbidden", ErrTraceparent)
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return scc, fmt.Errorf("%w: %q: fields must be separated by '-' at offsets 2, 35 and 52", ErrTraceparent, v)
	}
	if !decodeHex(scc.TraceID[:], v[3:35]) {
		return scc, fmt.Errorf("%w: trace-id %q is not 32 lowercase hex digits", ErrTraceparent, v[3:35])
	}
	if !decodeHex(scc.SpanID[:], v[36:52]) {
		return scc, fmt.Errorf("%w: parent-id %q is not 16 lowercase hex digits", ErrTraceparent, v[36:52])
	}
	flags, ok := hexByte(v[53:55])
	if !ok {
		return scc, fmt.Errorf("%w: trace-flags %q is not two lowercase hex digits", ErrTraceparent, v[53:55])
	}
	if len(v) > traceparentLen {
		// §4.3: version 00 has exactly four fields; a future version may add
		// fields after a '-', which a version 00 parser ignores.
		if version == 0 {
			return scc, fmt.Errorf("%w: version 00 has exactly 4 fields, got %d extra characters", ErrTraceparent, len(v)-traceparentLen)
		}
		if v[traceparentLen] != '-' {
			return scc, fmt.Errorf("%w: version %02x: trace-flags must be followed by '-' or the end", ErrTraceparent, version)
		}
	}
	if !scc.TraceID.IsValid() {
		return scc, fmt.Errorf("%w: trace-id is all zeros", ErrTraceparent)
	}
	if !scc.SpanID.IsValid() {
		return scc, fmt.Errorf("%w: parent-id is all zeros", ErrTraceparent)
	}
	scc.TraceFlags = trace.TraceFlags(flags) & knownFlags
	scc.Remote = true
	return scc, nil
}

// WriteTraceparent sets h's traceparent (version 00) from sc and its tracestate to ts.
// When sc is not valid it removes both; when ts is empty it removes tracestate. Only
// the flags defined by W3C Trace Context Level 2 (sampled, random) are written.
func WriteTraceparent(h http.Header, sc trace.SpanContext, ts TraceState) {
	if !sc.IsValid() {
		h.Del(Traceparent)
		h.Del(Tracestate)
		return
	}
	setOne(h, Traceparent, formatTraceparent(sc))
	if ts.Len() > 0 {
		setOne(h, Tracestate, ts.String())
	} else {
		h.Del(Tracestate)
	}
}

// formatTraceparent writes sc as a version 00 traceparent.
func formatTraceparent(sc trace.SpanContext) string {
	var b [traceparentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	encodeHex(b[3:35], tid[:])
	b[35] = '-'
	encodeHex(b[36:52], sid[:])
	b[52] = '-'
	encodeHex(b[53:55], []byte{byte(sc.TraceFlags() & knownFlags)})
	return string(b[:])
}

// setOne sets h[key] to the single value v, reusing the slice when it already holds
// exactly one value (the common case of rewriting a cloned header).
func setOne(h http.Header, key, v string) {
	if cur, ok := h[key]; ok && len(cur) == 1 {
		cur[0] = v
		return
	}
	h[key] = []string{v}
}

const hexDigits = "0123456789abcdef"

func encodeHex(dst, src []byte) {
	for i, c := range src {
		dst[2*i] = hexDigits[c>>4]
		dst[2*i+1] = hexDigits[c&0x0f]
	}
}

// unhex decodes one lowercase hex digit; uppercase is invalid in Trace Context
// (HEXDIGLC, §3.2.2).
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func hexByte(s string) (byte, bool) {
	hi, ok1 := unhex(s[0])
	lo, ok2 := unhex(s[1])
	return hi<<4 | lo, ok1 && ok2
}

// decodeHex decodes len(dst)*2 lowercase hex digits of s into dst.
func decodeHex(dst []byte, s string) bool {
	for i := range dst {
		b, ok := hexByte(s[2*i : 2*i+2])
		if !ok {
			return false
		}
		dst[i] = b
	}
	return true
}
