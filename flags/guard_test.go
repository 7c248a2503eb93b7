package flags

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

// rawDo sends a request with exactly the headers given (e.do adds a Content-Type and
// X-Requested-By as admin.Client would); host, when set, is the Host header.
func (e *env) rawDo(t testing.TB, method, path, host, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.send(t, req)
}

func (e *env) send(t testing.TB, req *http.Request) answer {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, data}
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Limit   string `json:"limit"`
	} `json:"error"`
}

// TestAPI_LimitErrors: a flag write refused by a store limit answers as /v1/contexts does,
// 422 (413 for a value too large) with the limit named in "limit", and the flags already
// stored keep serving.
func TestAPI_LimitErrors(t *testing.T) {
	tests := []struct {
		name   string
		limits localstore.Limits
		before func(t *testing.T, st *localstore.Store) // fills the store up to the limit
		limit  string
		status int
		code   string
	}{
		{"max_values_per_context", localstore.Limits{MaxValuesPerContext: 1}, nil, "max_values_per_context", http.StatusUnprocessableEntity, admin.CodeLimitExceeded},
		{"max_contexts", localstore.Limits{MaxContexts: 1}, func(t *testing.T, st *localstore.Store) {
			t.Helper()
			if _, err := st.Apply(context.Background(), "other", []ops.Op{{Kind: ops.Incr, Key: "k", By: 1}}, localstore.Durable); err != nil {
				t.Fatal(err)
			}
		}, "max_contexts", http.StatusUnprocessableEntity, admin.CodeLimitExceeded},
		// The first flag's definition fits in 100 bytes, the second's does not.
		{"max_value_bytes", localstore.Limits{MaxValueBytes: 100}, nil, "max_value_bytes", http.StatusRequestEntityTooLarge, admin.CodeValueTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStoreLimits(t, tt.limits)
			e := newEnv(t, st, Options{})
			if tt.before == nil {
				if a := e.do(t, "PUT", "/v1/flags/first", def("on")); a.status != http.StatusNoContent {
					t.Fatalf("first flag: %d %s", a.status, a.body)
				}
			} else {
				tt.before(t, st)
			}
			second := def("on")
			if tt.limit == "max_value_bytes" {
				second = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","metadata":{"owner":"a-team-with-a-long-name"}}`
			}
			a := e.do(t, "PUT", "/v1/flags/second", second)
			if got, want := a.status, tt.status; got != want {
				t.Fatalf("status %d, want %d: %s", got, want, a.body)
			}
			var b apiError
			a.json(t, &b)
			if b.Error.Code != tt.code || b.Error.Limit != tt.limit || !strings.Contains(b.Error.Message, tt.limit) {
				t.Errorf("error %s; want code %s with limit %q named", a.body, tt.code, tt.limit)
			}
			if e.flags.Flag("second") != nil {
				t.Error("the refused flag serves")
			}
			if tt.before == nil && e.flags.Flag("first") == nil {
				t.Error("the flag stored before the refusal was lost")
			}
		})
	}
}

// TestAPI_BrowserGuard: the flag routes sit behind the admin server's guard. Writes a web
// page could send are refused; OFREP evaluations, which read, pass without anything more.
func TestAPI_BrowserGuard(t *testing.T) {
	e := newEnv(t, nil, Options{})
	defn := def("on")
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		code                     string
	}{
		{"put as text/plain", "PUT", "/v1/flags/x", defn, []string{"Content-Type", "text/plain"}, 403, admin.CodeSimpleRequest},
		{"put without type", "PUT", "/v1/flags/x", defn, nil, 403, admin.CodeSimpleRequest},
		{"put from another origin", "PUT", "/v1/flags/x", defn, []string{"Content-Type", "application/json", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, 403, admin.CodeCrossOrigin},
		{"evaluation without type", "POST", PathOFREPFlags + "/x", `{"context":{}}`, nil, 404, ""},
		{"evaluation as text/plain", "POST", PathOFREPFlags, `{"context":{}}`, []string{"Content-Type", "text/plain"}, 200, ""},
		{"evaluation from another origin", "POST", PathOFREPFlags, `{"context":{}}`, []string{"Content-Type", "application/json", "Origin", "http://evil.example"}, 403, admin.CodeCrossOrigin},
		{"put as JSON", "PUT", "/v1/flags/x", defn, []string{"Content-Type", "application/json"}, 204, ""},
		{"delete without header", "DELETE", "/v1/flags/x", "", nil, 403, admin.CodeSimpleRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored := e.flags.Flag("x") != nil
			a := e.rawDo(t, tt.method, tt.path, "", tt.body, tt.hdr...)
			if a.status != tt.status {
				t.Fatalf("status %d, want %d: %s", a.status, tt.status, a.body)
			}
			if tt.code == "" {
				return
			}
			var b apiError
			a.json(t, &b)
			if b.Error.Code != tt.code {
				t.Errorf("code %q, want %q: %s", b.Error.Code, tt.code, a.body)
			}
			if got := e.flags.Flag("x") != nil; got != stored {
				t.Errorf("flag x stored = %v after a refused request, was %v", got, stored)
			}
		})
	}
}

// TestOFREP_EventsURL: the change stream's URL is the listener's address, whatever Host
// the client sent, even a name the operator allowed.
func TestOFREP_EventsURL(t *testing.T) {
	e := newEnvWith(t, nil, Options{}, admin.Options{AllowedHosts: []string{"evil.example"}})
	e.do(t, "PUT", "/v1/flags/banner", def("on"))
	for _, host := range []string{"evil.example", "localhost", "127.0.0.1"} {
		t.Run(host, func(t *testing.T) {
			a := e.rawDo(t, "POST", PathOFREPFlags, host, `{"context":{}}`, "Content-Type", "application/json")
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			if host != "127.0.0.1" && strings.Contains(string(a.body)+strings.Join(a.header.Values("Location"), ""), host) {
				t.Errorf("the answer echoes the Host %q: %s", host, a.body)
			}
			var bulk BulkAnswer
			a.json(t, &bulk)
			if want := e.base + PathEvents; len(bulk.EventStreams) != 1 || bulk.EventStreams[0].URL != want {
				t.Errorf("eventStreams %+v, want the stream at %s", bulk.EventStreams, want)
			}
		})
	}
}
