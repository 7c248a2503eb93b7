package httpapi

import (
	"bytes"
	"io"
	"net/http"
	"strings"
)

// SSE writes a Server-Sent Events stream (WHATWG HTML, "Server-sent events"): the admin
// API's GET /v1/watch and OFREP's change stream. It is not safe for concurrent use: the
// handler's goroutine writes it.
type SSE struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// StartSSE answers 200 with the headers of an event stream: text/event-stream, no caching,
// and no buffering in a reverse proxy in front (X-Accel-Buffering, as nginx reads it).
// Nothing is flushed yet: write the first event or comment, then Flush, so that the client
// knows the stream is in place.
func StartSSE(w http.ResponseWriter) *SSE {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &SSE{w: w, rc: http.NewResponseController(w)}
}

// Comment writes a comment (": text"), which clients ignore: it opens a stream, or keeps
// it open through idle timeouts. A text of several lines is written as several comments.
func (s *SSE) Comment(text string) error {
	var b strings.Builder
	for line := range strings.Lines(text) {
		b.WriteString(": ")
		b.WriteString(strings.TrimSuffix(line, "\n"))
		b.WriteByte('\n')
	}
	if text == "" {
		b.WriteString(":\n")
	}
	b.WriteByte('\n')
	_, err := io.WriteString(s.w, b.String())
	return err
}

// Event writes one event. An empty id writes no id field (the client keeps the last ID it
// saw); an empty typ writes no event field (the default type, "message", which a browser's
// EventSource hands to onmessage). Data of several lines (split at CR, LF or CRLF, as the
// client parses) is written as one data field per line, which the client joins back with
// LF. id and typ are the caller's own names, never outside input: they must not hold a
// line break.
func (s *SSE) Event(id, typ string, data []byte) error {
	if bytes.IndexByte(data, '\r') >= 0 {
		data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n"))
	}
	var b bytes.Buffer
	if id != "" {
		b.WriteString("id: " + id + "\n")
	}
	if typ != "" {
		b.WriteString("event: " + typ + "\n")
	}
	for line := range bytes.Lines(data) {
		b.WriteString("data: ")
		b.Write(bytes.TrimSuffix(line, []byte("\n")))
		b.WriteByte('\n')
	}
	if len(data) == 0 {
		b.WriteString("data: \n")
	}
	b.WriteByte('\n')
	_, err := s.w.Write(b.Bytes())
	return err
}

// Flush sends what was written. An error means the client is gone: end the stream.
func (s *SSE) Flush() error { return s.rc.Flush() }
