package httpapi

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSSE_Framing: what StartSSE, Comment and Event write reaches a real client as the
// bytes the admin API's watch stream and OFREP's change stream always sent, with each
// Flush delivered before the stream ends.
func TestSSE_Framing(t *testing.T) {
	next := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := StartSSE(w)
		s.Comment("watching")
		if err := s.Flush(); err != nil {
			t.Error(err)
		}
		<-next // the client has read the opening comment: Flush sent it
		s.Event("42", "", []byte(`{"context":"c"}`))
		s.Event("", "reset", []byte(`{"reason":"missed"}`))
		s.Event("7", "message", []byte("two\r\nlines\rand\nmore"))
		s.Event("", "", nil)
		s.Comment("keep-alive\nagain")
		s.Flush()
	}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	for h, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := res.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	if got, want := res.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
	rd := bufio.NewReader(res.Body)
	first := make([]byte, len(": watching\n\n"))
	if _, err := io.ReadFull(rd, first); err != nil {
		t.Fatalf("reading the opening comment before any event: %v", err)
	}
	if got, want := string(first), ": watching\n\n"; got != want {
		t.Errorf("opening %q, want %q", got, want)
	}
	close(next)
	rest, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"id: 42\ndata: {\"context\":\"c\"}\n\n",
		"event: reset\ndata: {\"reason\":\"missed\"}\n\n",
		"id: 7\nevent: message\ndata: two\ndata: lines\ndata: and\ndata: more\n\n",
		"data: \n\n",
		": keep-alive\n: again\n\n",
	}, "")
	if got := string(rest); got != want {
		t.Errorf("stream:\n%q\nwant\n%q", got, want)
	}
}
