package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
)

// The fast path's reader of the app's response heads (issue 14). http.ReadResponse was
// the largest single cost of the fast path after the syscalls (its textproto reader, its
// transfer parsing, a dozen allocations a response). readResponse parses the plain shape
// almost every app sends, an HTTP/1.1 status line and CRLF fields with at most one
// Content-Length or one "Transfer-Encoding: chunked", and leaves everything else
// (HTTP/1.0, a Trailer declaration, folded or bare-LF lines, odd framing, a head larger
// than the buffer) to http.ReadResponse on the same bytes, which it has only peeked at.
// TestFastPath_ResponseFramings and TestFastPath_SameBytesAsNetHTTP compare what clients
// get with the net/http path.

// readResponse reads a response head from br and sets up its body; the request's method
// says whether it has one (HEAD).
func readResponse(br *bufio.Reader, method string) (*http.Response, error) {
	if res, ok := readPlainResponse(br, method); ok {
		return res, nil
	}
	return http.ReadResponse(br, &http.Request{Method: method})
}

// readPlainResponse parses the head buffered in br when it has the plain shape; ok false
// leaves br untouched.
func readPlainResponse(br *bufio.Reader, method string) (*http.Response, bool) {
	b, _ := br.Peek(br.Buffered())
	n := headEnd(b)
	if n < 0 {
		// Not all there yet: wait for more, within the buffer.
		for n < 0 && len(b) < br.Size() {
			if _, err := br.Peek(len(b) + 1); err != nil {
				return nil, false
			}
			b, _ = br.Peek(br.Buffered())
			n = headEnd(b)
		}
		if n < 0 {
			return nil, false
		}
	}
	s := string(b[:n])
	eol := strings.IndexByte(s, '\n')
	if eol < 1 || s[eol-1] != '\r' {
		return nil, false
	}
	line := s[:eol-1]
	// "HTTP/1.1 " three digits, then SP and a reason or nothing.
	if len(line) < 12 || line[:9] != "HTTP/1.1 " || len(line) > 12 && line[12] != ' ' {
		return nil, false
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 {
		return nil, false // interim answers are rare: http.ReadResponse reads them
	}
	for i := 12; i < len(line); i++ {
		if c := line[i]; c < ' ' && c != '\t' || c == 0x7f {
			return nil, false
		}
	}
	res := &http.Response{
		Status: line[9:], StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		ContentLength: -1,
	}
	if len(line) == 12 {
		res.Status = line[9:12]
	}
	rest := s[eol+1:]
	res.Header = make(http.Header, strings.Count(rest, "\n"))
	var vals []string
	te := false
	for {
		eol := strings.IndexByte(rest, '\n')
		if eol < 1 || rest[eol-1] != '\r' {
			return nil, false
		}
		line := rest[:eol-1]
		rest = rest[eol+1:]
		if line == "" {
			break
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			return nil, false
		}
		name := line[:colon]
		for i := 0; i < len(name); i++ {
			if !isTokenChar(name[i]) {
				return nil, false
			}
		}
		value := strings.Trim(line[colon+1:], " \t")
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, false
			}
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Content-Length":
			if res.ContentLength >= 0 {
				return nil, false
			}
			n, ok := parseLength([]byte(value))
			if !ok {
				return nil, false
			}
			res.ContentLength = n
		case "Transfer-Encoding":
			if te || !strings.EqualFold(value, "chunked") {
				return nil, false
			}
			te = true
			continue // http.ReadResponse moves it to TransferEncoding
		case "Trailer":
			return nil, false
		case "Connection":
			for tok := range strings.SplitSeq(value, ",") {
				if strings.EqualFold(strings.Trim(tok, " \t"), "close") {
					res.Close = true
				}
			}
		}
		if prev, ok := res.Header[key]; ok {
			res.Header[key] = append(prev, value)
			continue
		}
		vals = append(vals, value)
		res.Header[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if te && res.ContentLength >= 0 {
		return nil, false
	}
	if res.Close {
		delete(res.Header, "Connection") // as http.ReadResponse does once it has read "close"
	}
	br.Discard(n)
	if te {
		res.TransferEncoding = []string{"chunked"}
	}
	switch {
	case method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified:
		// No body on the wire, whatever the fields say (as http.ReadResponse reads
		// it); the Content-Length of a HEAD answer stays for the client.
		if method != http.MethodHead {
			res.ContentLength = 0
		}
		res.Body = http.NoBody
	case te:
		res.Body = &respBody{br: br, chunked: true, cr: httputil.NewChunkedReader(br), res: res}
	case res.ContentLength >= 0:
		res.Body = &respBody{br: br, remain: res.ContentLength}
	default:
		// Ended by the close of the connection (RFC 9112 §6.3 item 8).
		res.Close = true
		res.Body = &respBody{br: br, remain: -1}
	}
	return res, true
}

// seeDoubleCRLF reports whether the trailer section's end (CRLF CRLF) comes within
// br's buffer, as net/http's body reader demands before it reads trailers.
func seeDoubleCRLF(br *bufio.Reader) bool {
	for n := 4; ; n++ {
		buf, err := br.Peek(n)
		if strings.HasSuffix(string(buf), "\r\n\r\n") {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// respBody is the body of a response read by readPlainResponse.
type respBody struct {
	br      *bufio.Reader
	remain  int64 // Content-Length bytes left; -1: until EOF
	chunked bool
	cr      io.Reader
	res     *http.Response // gets the trailers of a chunked body
	err     error
}

func (b *respBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	var n int
	var err error
	switch {
	case b.chunked:
		n, err = b.cr.Read(p)
		if err == io.EOF {
			if terr := b.trailers(); terr != nil {
				err = terr
			}
		}
	case b.remain < 0:
		n, err = b.br.Read(p)
	default:
		n, err = readFixed(b.br, p, &b.remain)
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *respBody) Close() error { return nil }

// trailers reads what follows the last chunk: CRLF, or trailer fields, which go to the
// response's Trailer as http.ReadResponse's body puts them there.
func (b *respBody) trailers() error {
	hdr, err := readChunkedEnd(b.br)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
		return errors.Join(errors.New("reading the trailers of the app's chunked answer"), err)
	}
	if hdr == nil {
		return nil
	}
	if b.res.Trailer == nil {
		b.res.Trailer = http.Header(hdr)
	} else {
		for k, v := range hdr {
			b.res.Trailer[k] = v
		}
	}
	return nil
}
