package admin

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ctxprop/ctxprop/localstore"
)

// apiError decodes a JSON error answer.
func apiError(t *testing.T, a answer) (code, message, limit string) {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal([]byte(a.body), &b); err != nil || b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("answer %d %q is not a JSON error with code and message", a.status, a.body)
	}
	return b.Error.Code, b.Error.Message, b.Error.Limit
}

// TestServer_CounterRange reproduces issue 10 item 8 through the API: three increments
// of MaxInt64 answered …807, −2, −2, and later increments were acknowledged and lost.
// Now the second and third are refused with 422 naming the problem, nothing changes,
// later increments count, and an ops list with one such increment is refused whole.
func TestServer_CounterRange(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	const j, txt = "application/json", "text/plain"
	const path = "/v1/contexts/c/counters/k"
	if a := e.call(t, "POST", path, j, `{"by":9223372036854775807}`); a.status != 200 || a.body != `{"value":9223372036854775807}` {
		t.Fatalf("first increment: %d %s", a.status, a.body)
	}
	for i := range 2 {
		a := e.call(t, "POST", path, j, `{"by":9223372036854775807}`)
		if a.status != 422 {
			t.Fatalf("increment %d past the range: %d %s, want 422", i+2, a.status, a.body)
		}
		code, msg, limit := apiError(t, a)
		if code != "out_of_range" || limit != "counter_range" {
			t.Errorf("error code %q limit %q, want out_of_range and counter_range", code, limit)
		}
		for _, want := range []string{`"k"`, "is 9223372036854775807", "adding 9223372036854775807", "int64"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q does not say %q", msg, want)
			}
		}
	}
	steps := []struct {
		name, method, path, ctype, body string
		status                          int
		want                            string // the exact body, or the error code
	}{
		{"unchanged", "GET", path, "", "", 200, `{"value":9223372036854775807}`},
		{"by 1 refused", "POST", path, j, `{}`, 422, "out_of_range"},
		{"decrement taken", "POST", path, j, `{"by":-1}`, 200, `{"value":9223372036854775806}`},
		{"increment after it counts", "POST", path, j, `{"by":1}`, 200, `{"value":9223372036854775807}`},
		{"most negative taken", "POST", path, j, `{"by":-9223372036854775808}`, 200, `{"value":-1}`},
		{"and refused once more", "POST", path, j, `{"by":-9223372036854775808}`, 422, "out_of_range"},
		{"back near the top", "POST", path, j, `{"by":9223372036854775806}`, 200, `{"value":9223372036854775805}`},
		{"json ops: the list is atomic", "POST", "/v1/contexts/c/ops", j,
			`[{"op":"incr","key":"other","by":1},{"op":"put","map":"m","key":"x","value":1},{"op":"incr","key":"k","by":3}]`, 422, "out_of_range"},
		{"ctx-ops: counters only", "POST", "/v1/contexts/c/ops", txt, `incr;key="other", incr;key="k";by=3`, 422, "out_of_range"},
		{"ctx-ops: with a put", "POST", "/v1/contexts/c/ops", txt, `put;map="m";key="x";value="1", incr;key="k";by=3`, 422, "out_of_range"},
		{"ctx-ops within range", "POST", "/v1/contexts/c/ops", txt, `incr;key="k";by=1, incr;key="other"`, 204, ``},
		// This sidecar's increments of k now total 2^64−1, the most its slot holds: one
		// more would wrap it, although the value would fit.
		{"slot total full", "POST", path, j, `{"by":1}`, 422, "out_of_range"},
		{"the refused lists left nothing", "GET", "/v1/contexts/c", "", "", 200,
			`{"name":"c","expires_at":null,"counters":{"k":9223372036854775806,"other":1},"maps":{},"sets":{},"replicas":1}`},
	}
	for _, st := range steps {
		a := e.call(t, st.method, st.path, st.ctype, st.body)
		if a.status != st.status {
			t.Fatalf("%s: %s %s: status %d, want %d; body %s", st.name, st.method, st.path, a.status, st.status, a.body)
		}
		if st.status >= 400 {
			if code, _, limit := apiError(t, a); code != st.want || limit != "counter_range" {
				t.Errorf("%s: code %q limit %q, want %q and counter_range (%s)", st.name, code, limit, st.want, a.body)
			}
			continue
		}
		if a.body != st.want {
			t.Errorf("%s: body\n got %s\nwant %s", st.name, a.body, st.want)
		}
	}
}

// TestServer_DeleteAbsent reproduces issue 10 item 7 through the API: 19 deletes of
// contexts that never existed made a store with max_contexts = 20 refuse every new
// context. Now each is a 404 saying nothing was stored, and the store still takes 20.
func TestServer_DeleteAbsent(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{MaxContexts: 20})
	if a := e.call(t, "POST", "/v1/contexts/c/counters/k", "", ""); a.status != 200 {
		t.Fatalf("first context: %d %s", a.status, a.body)
	}
	for i := range 19 {
		a := e.call(t, "DELETE", fmt.Sprintf("/v1/contexts/ghost-%d", i), "", "")
		if a.status != 404 {
			t.Fatalf("DELETE ghost-%d: %d %s, want 404", i, a.status, a.body)
		}
		code, msg, _ := apiError(t, a)
		if code != "not_found" || !strings.Contains(msg, "no such context exists here") || !strings.Contains(msg, "nothing was stored") {
			t.Errorf("DELETE ghost-%d: code %q message %q", i, code, msg)
		}
	}
	for i := range 19 {
		if a := e.call(t, "POST", fmt.Sprintf("/v1/contexts/new-%d/counters/k", i), "", ""); a.status != 200 {
			t.Fatalf("context %d of 20: %d %s", i+2, a.status, a.body)
		}
	}
	if a := e.call(t, "POST", "/v1/contexts/one-too-many/counters/k", "", ""); a.status != 422 {
		t.Fatalf("context 21: %d %s, want 422", a.status, a.body)
	}
	// Deleting a context that exists is a 204; its marker frees its place, and a second
	// delete is a 404.
	steps := []struct {
		method, path string
		status       int
	}{
		{"DELETE", "/v1/contexts/new-0", 204},
		{"DELETE", "/v1/contexts/new-0", 404},
		{"GET", "/v1/contexts/new-0", 404},
		{"POST", "/v1/contexts/in-its-place/counters/k", 200},
		{"POST", "/v1/contexts/one-too-many/counters/k", 422},
	}
	for _, st := range steps {
		if a := e.call(t, st.method, st.path, "", ""); a.status != st.status {
			t.Fatalf("%s %s: %d %s, want %d", st.method, st.path, a.status, a.body, st.status)
		}
	}
}
