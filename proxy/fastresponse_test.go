package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestFastResponse_Differential reads the same response bytes with the fast path's
// readResponse and with http.ReadResponse: the status, fields, framing, body and
// trailers must be the same, whichever of the two parsed them.
func TestFastResponse_Differential(t *testing.T) {
	for _, c := range []struct {
		method, raw string
		plain       bool // readPlainResponse takes it itself
	}{
		{"GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello", true},
		{"GET", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", true},
		{"GET", "HTTP/1.1 404 Not Found\r\ncontent-type:  text/plain \r\nContent-Length: 3\r\n\r\nabc", true},
		{"GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true},
		{"GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n", true},
		{"GET", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end", true},
		{"GET", "HTTP/1.1 200 OK\r\n\r\nto the end", true},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", true},
		{"GET", "HTTP/1.1 204 No Content\r\nX: y\r\n\r\n", true},
		{"GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", true},
		{"GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false},
		{"GET", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true},
		{"GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"GET", "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Sum: 1\r\n\r\n", false},
		{"GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", false},
		{"GET", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok", false},
		{"GET", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false},
		{"GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false},
		{"GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false},
	} {
		t.Run(strings.ReplaceAll(c.raw[:min(len(c.raw), 40)], "\r\n", " "), func(t *testing.T) {
			if _, ok := readPlainResponse(bufio.NewReader(strings.NewReader(c.raw)), c.method); ok != c.plain {
				t.Errorf("readPlainResponse took it: %v, want %v", ok, c.plain)
			}
			compareResponse(t, c.method, []byte(c.raw))
		})
	}
}

type responseRead struct {
	Status           string
	Code             int
	Header, Trailer  http.Header
	CL               int64
	TE               []string
	Close            bool
	Body             string
	BodyErr, HeadErr bool
}

// compareResponse reads raw with readResponse and with http.ReadResponse and requires
// the same result.
func compareResponse(t *testing.T, method string, raw []byte) {
	t.Helper()
	read := func(get func(*bufio.Reader) (*http.Response, error)) responseRead {
		res, err := get(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return responseRead{HeadErr: true}
		}
		body, berr := io.ReadAll(res.Body)
		return responseRead{res.Status, res.StatusCode, res.Header, res.Trailer, res.ContentLength, res.TransferEncoding, res.Close, string(body), berr != nil, false}
	}
	got := read(func(br *bufio.Reader) (*http.Response, error) { return readResponse(br, method) })
	want := read(func(br *bufio.Reader) (*http.Response, error) {
		return http.ReadResponse(br, &http.Request{Method: method})
	})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%q: fast path read\n%+v\nhttp.ReadResponse read\n%+v", raw, got, want)
	}
}

// FuzzFastResponse: whatever bytes an app sends, the fast path reads the same response
// as http.ReadResponse.
func FuzzFastResponse(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nto the end",
	} {
		f.Add(false, []byte(seed))
		f.Add(true, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, head bool, raw []byte) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		compareResponse(t, method, raw)
	})
}
