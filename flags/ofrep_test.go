package flags

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func ofrepEnv(t *testing.T) *env {
	e := newEnv(t, nil, Options{})
	for key, d := range map[string]string{
		"banner":   def("on"),
		"disabled": `{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`,
		"rollout":  `{"state":"ENABLED","variants":{"a":"A","b":"B"},"defaultVariant":"a","targeting":{"fractional":[["a",50],["b",50]]}}`,
		"tiered":   `{"state":"ENABLED","variants":{"gold":{"limit":100},"basic":{"limit":10}},"defaultVariant":"basic","metadata":{"owner":"billing"},"targeting":{"if":[{"==":[{"var":"tier"},"gold"]},"gold",null]}}`,
	} {
		if r := e.do(t, "PUT", "/v1/flags/"+key, d); r.status != http.StatusNoContent {
			t.Fatalf("PUT %s: %d %s", key, r.status, r.body)
		}
	}
	return e
}

// OFREP single evaluation: status codes, bodies and error codes of the OFREP OpenAPI
// definition (service/openapi.yaml).
func TestOFREP_Single(t *testing.T) {
	e := ofrepEnv(t)
	tests := []struct {
		name, key, body string
		status          int
		want            Result
	}{
		{"static", "banner", `{"context":{}}`, 200, Result{Key: "banner", Value: []byte("true"), Variant: "on", Reason: ReasonStatic}},
		{"empty body", "banner", ``, 200, Result{Key: "banner", Value: []byte("true"), Variant: "on", Reason: ReasonStatic}},
		{"targeting match with metadata", "tiered", `{"context":{"tier":"gold"}}`, 200, Result{Key: "tiered", Value: []byte(`{"limit":100}`), Variant: "gold", Reason: ReasonTargetingMatch, Metadata: map[string]any{"owner": "billing"}}},
		{"default", "tiered", `{"context":{"tier":"silver"}}`, 200, Result{Key: "tiered", Value: []byte(`{"limit":10}`), Variant: "basic", Reason: ReasonDefault, Metadata: map[string]any{"owner": "billing"}}},
		{"split", "rollout", `{"context":{"targetingKey":"user-1"}}`, 200, Result{Key: "rollout", Reason: ReasonSplit}},
		// As flagd answers it: the published server provider refuses a 200 without a value.
		{"disabled", "disabled", `{"context":{}}`, 404, Result{Key: "disabled", ErrorCode: CodeFlagNotFound}},
		{"not found", "nope", `{"context":{}}`, 404, Result{Key: "nope", ErrorCode: CodeFlagNotFound}},
		{"parse error", "banner", `{"context":`, 400, Result{Key: "banner", ErrorCode: CodeParseError}},
		{"context not an object", "banner", `{"context":[1]}`, 400, Result{Key: "banner", ErrorCode: CodeInvalidContext}},
		{"targetingKey not a string", "banner", `{"context":{"targetingKey":7}}`, 400, Result{Key: "banner", ErrorCode: CodeInvalidContext}},
		{"targeting key missing", "rollout", `{"context":{}}`, 400, Result{Key: "rollout", ErrorCode: CodeTargetingKeyMissing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.do(t, "POST", PathOFREPFlags+"/"+tt.key, tt.body)
			if a.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", a.status, tt.status, a.body)
			}
			var got Result
			a.json(t, &got)
			if got.Key != tt.want.Key || got.Reason != tt.want.Reason || got.ErrorCode != tt.want.ErrorCode ||
				(tt.want.Variant != "" && got.Variant != tt.want.Variant) ||
				(tt.want.Value != nil && string(got.Value) != string(tt.want.Value)) ||
				len(got.Metadata) != len(tt.want.Metadata) {
				t.Errorf("answer %s, want %+v", a.body, tt.want)
			}
			if tt.want.ErrorCode != "" && got.ErrorDetails == "" {
				t.Errorf("error without errorDetails: %s", a.body)
			}
			if tt.status == 200 && a.header.Get("ETag") == "" {
				t.Error("a success without an ETag")
			}
			if tt.key == "disabled" && (strings.Contains(string(a.body), `"value"`) || !strings.Contains(got.ErrorDetails, "DISABLED")) {
				t.Errorf("a disabled flag answers %s; want no value, so the caller uses its code default, and details that say why", a.body)
			}
			var streams struct{ EventStreams []EventStream }
			a.json(t, &streams)
			if ok := len(streams.EventStreams) == 1 && streams.EventStreams[0] == (EventStream{Type: "sse", URL: e.base + PathEvents}); ok != (tt.status == 200) {
				t.Errorf("eventStreams in %s; want the sse stream %s in a success (OFREP ADR-0008), none in a failure", a.body, e.base+PathEvents)
			}
		})
	}
}

func TestOFREP_Bulk(t *testing.T) {
	e := ofrepEnv(t)
	a := e.do(t, "POST", PathOFREPFlags, `{"context":{"tier":"gold"}}`)
	if a.status != 200 {
		t.Fatalf("bulk: %d %s", a.status, a.body)
	}
	var bulk BulkAnswer
	a.json(t, &bulk)
	byKey := map[string]Result{}
	for _, r := range bulk.Flags {
		byKey[r.Key] = r
	}
	if got, want := len(bulk.Flags), 4; got != want {
		t.Fatalf("%d flags, want %d: %s", got, want, a.body)
	}
	if r := byKey["tiered"]; r.Variant != "gold" || r.Reason != ReasonTargetingMatch {
		t.Errorf("tiered = %+v", r)
	}
	if r := byKey["rollout"]; r.ErrorCode != CodeTargetingKeyMissing {
		t.Errorf("rollout without a targetingKey = %+v, want its error in the list", r)
	}
	if r := byKey["disabled"]; r.Reason != ReasonDisabled || r.Value != nil {
		t.Errorf("disabled = %+v", r)
	}
	if len(bulk.EventStreams) != 1 || bulk.EventStreams[0].Type != "sse" || bulk.EventStreams[0].URL != e.base+PathEvents {
		t.Errorf("eventStreams = %+v, want the sse stream %s (OFREP ADR-0008)", bulk.EventStreams, e.base+PathEvents)
	}

	for _, body := range []string{`nope`, `{"context":"x"}`} {
		a := e.do(t, "POST", PathOFREPFlags, body)
		var f struct{ ErrorCode, ErrorDetails string }
		a.json(t, &f)
		if a.status != 400 || f.ErrorCode == "" || f.ErrorDetails == "" {
			t.Errorf("bulk %s: %d %s, want 400 with errorCode and errorDetails", body, a.status, a.body)
		}
	}
}

// The ETag covers the configuration and the context: If-None-Match gives 304 until either
// changes.
func TestOFREP_ETag(t *testing.T) {
	e := ofrepEnv(t)
	for _, path := range []string{PathOFREPFlags, PathOFREPFlags + "/tiered"} {
		t.Run(path, func(t *testing.T) {
			first := e.do(t, "POST", path, `{"context":{"tier":"gold","targetingKey":"u1"}}`)
			etag := first.header.Get("ETag")
			if first.status != 200 || !strings.HasPrefix(etag, `"`) {
				t.Fatalf("%d, ETag %q", first.status, etag)
			}
			// The same context in another key order is the same context.
			same := e.do(t, "POST", path, `{"context":{"targetingKey":"u1","tier":"gold"}}`, "If-None-Match", etag)
			if same.status != http.StatusNotModified || len(same.body) != 0 || same.header.Get("ETag") != etag {
				t.Errorf("unchanged: %d %q ETag %q, want 304 with the ETag and no body", same.status, same.body, same.header.Get("ETag"))
			}
			if a := e.do(t, "POST", path, `{"context":{"tier":"gold","targetingKey":"u1"}}`, "If-None-Match", `"other", W/`+etag); a.status != http.StatusNotModified {
				t.Errorf("a list with the weak ETag: %d, want 304", a.status)
			}
			other := e.do(t, "POST", path, `{"context":{"tier":"gold","targetingKey":"u2"}}`, "If-None-Match", etag)
			if other.status != 200 || other.header.Get("ETag") == etag {
				t.Errorf("another context: %d ETag %q, want 200 and a new ETag", other.status, other.header.Get("ETag"))
			}
		})
	}
	before := e.do(t, "POST", PathOFREPFlags, `{"context":{}}`).header.Get("ETag")
	single := e.do(t, "POST", PathOFREPFlags+"/tiered", `{"context":{}}`).header.Get("ETag")
	// A change of another flag's metadata-free definition changes the bulk ETag only.
	e.do(t, "PUT", "/v1/flags/banner", def("off"))
	if a := e.do(t, "POST", PathOFREPFlags, `{"context":{}}`, "If-None-Match", before); a.status != 200 {
		t.Errorf("bulk after a change: %d, want 200", a.status)
	}
	if a := e.do(t, "POST", PathOFREPFlags+"/tiered", `{"context":{}}`, "If-None-Match", single); a.status != http.StatusNotModified {
		t.Errorf("single flag after another flag changed: %d, want 304", a.status)
	}
}

// A rule on $flagd.timestamp changes its answer with time alone; the ETag follows.
func TestOFREP_ETagFollowsTime(t *testing.T) {
	var now atomic.Int64
	now.Store(1_800_000_000)
	clock := func() time.Time { return time.Unix(now.Load(), 0) }
	e := newEnv(t, nil, Options{Now: clock})
	e.do(t, "PUT", "/v1/flags/launch", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{">=":[{"var":"$flagd.timestamp"},1800000100]},"on","off"]}}`)
	a := e.do(t, "POST", PathOFREPFlags+"/launch", `{}`)
	if string(mustResult(t, a).Value) != "false" {
		t.Fatalf("before launch: %s", a.body)
	}
	now.Add(200)
	b := e.do(t, "POST", PathOFREPFlags+"/launch", `{}`, "If-None-Match", a.header.Get("ETag"))
	if b.status != 200 || string(mustResult(t, b).Value) != "true" {
		t.Errorf("after launch: %d %s, want 200 and true", b.status, b.body)
	}
}

func mustResult(t *testing.T, a answer) Result {
	t.Helper()
	var r Result
	a.json(t, &r)
	return r
}
