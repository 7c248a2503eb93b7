package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// ReadBody reads the whole body of r, at most limit bytes, for any handler on the admin
// listener, and returns the *Error to answer (with WriteError) when it cannot:
//
//   - 413 as soon as the body passes limit, whether it declared its length or is chunked.
//     No more of it is read, and the connection closes after the answer: left to itself,
//     net/http would read up to 256 KiB more of the body before sending any answer.
//   - 408 when the body stalls longer than the timeout given to TimeBodyReads between two
//     reads; the connection closes after the answer.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *Error) {
	// http.MaxBytesReader tells net/http that the limit was hit, so that it answers at once
	// and then closes the connection gracefully (a FIN, a pause for the client to read the
	// answer, then close) instead of draining the body first, but only when it is handed
	// net/http's own ResponseWriter: an interface check that no wrapper can pass.
	raw := unwrapWriter(w)
	if r.ContentLength > limit {
		// Refused unread, but for one byte: reading it with no room left is what calls
		// that hook. A client waiting for 100 Continue has sent nothing, and asking for the
		// byte would invite the body: net/http closes that connection anyway.
		if !strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
			io.ReadFull(http.MaxBytesReader(raw, r.Body, 0), make([]byte, 1))
		}
		abandonBody(w)
		return nil, tooLarge(limit)
	}
	body, err := readAll(http.MaxBytesReader(raw, r.Body, limit), r.ContentLength)
	if err == nil {
		return body, nil
	}
	var mbe *http.MaxBytesError
	var stall *stallError
	switch {
	case errors.As(err, &mbe):
		abandonBody(w)
		return nil, tooLarge(limit)
	case errors.As(err, &stall):
		abandonBody(w)
		return nil, &Error{Status: http.StatusRequestTimeout, Code: CodeBodyTimeout,
			Message: stall.Error() + "; the connection is closed — send the body without pauses"}
	}
	return nil, BadRequest("reading the body: %v", err)
}

// readAll is io.ReadAll into a buffer of the body's declared length, size (-1: unknown),
// and a byte more for the read that meets the end: io.ReadAll starts at 512 bytes, most
// of it garbage for the small bodies of the API's writes (issue 14).
func readAll(rd io.Reader, size int64) ([]byte, error) {
	if size < 0 || size >= 512 {
		return io.ReadAll(rd)
	}
	b := make([]byte, 0, size+1)
	for {
		n, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than declared: grow as io.ReadAll does
		}
	}
}

func tooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeBodyTooLarge,
		Message: fmt.Sprintf("the body is over %d bytes; send less, or raise admin.max_body_bytes", limit)}
}

// abandonBody makes the connection close after the answer, with no further read of the
// body: net/http reads up to 256 KiB of an unread body after the answer, to reuse the
// connection, and an expired read deadline ends that read at once.
func abandonBody(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// unwrapWriter returns the ResponseWriter of net/http under the server's wrappers.
func unwrapWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// TimeBodyReads bounds the wait for each read of r's body by timeout: a client that sends
// its headers, then stalls or trickles its body, would otherwise hold a handler forever. The deadline is set at once, so that it also bounds net/http's drain
// of a body no handler read (a refused request's). http.Server.ReadTimeout cannot do this:
// it bounds the whole request, and would cut the watch and event streams.
func TimeBodyReads(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	// The controller lives in the body, one allocation for both.
	b := &timedBody{ReadCloser: r.Body, rc: *http.NewResponseController(w), timeout: timeout}
	if err := b.rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return // not served by net/http's server: nothing to bound
	}
	r.Body = b
}

// timedBody moves the connection's read deadline after each read of the body that brought
// bytes (the deadline of the first read was set by TimeBodyReads), and clears it at the
// end of the body: from then on net/http reads the connection in the background to notice
// a client that goes away, and a deadline there would cancel the request. Moving it after
// a read rather than before the next spares a system call per request (issue 14: a small
// body comes whole in its first read, which also reports its end).
type timedBody struct {
	io.ReadCloser
	rc      http.ResponseController
	timeout time.Duration
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = &stallError{after: b.timeout, err: err}
	case n > 0:
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	}
	return n, err
}

// stallError is the error of a body read that waited longer than the body read timeout.
type stallError struct {
	after time.Duration
	err   error
}

func (e *stallError) Error() string {
	return fmt.Sprintf("no byte of the request body came for %s (the admin API's body read timeout)", e.after)
}

func (e *stallError) Unwrap() error { return e.err }
