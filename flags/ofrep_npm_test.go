package flags

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests drive the published OpenFeature JavaScript SDKs and OFREP providers
// (hack/ofrep-js/package.json pins them: @openfeature/server-sdk + @openfeature/ofrep-provider,
// @openfeature/web-sdk + @openfeature/ofrep-web-provider) in node against the OFREP server
// on a real loopback listener. `make tools` installs them (hack/ofrep-js.sh).

// ofrepJSDir is hack/ofrep-js with its node_modules installed, or the test fails saying how
// to install them.
func ofrepJSDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "hack", "ofrep-js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed (%v): run `make tools`, which installs it and the OpenFeature packages these tests drive", err)
	}
	for _, pkg := range []string{"@openfeature/server-sdk", "@openfeature/ofrep-provider", "@openfeature/web-sdk", "@openfeature/ofrep-web-provider", "eventsource"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("the npm package %s is not installed in %s/node_modules: run `make tools` (hack/ofrep-js.sh runs npm ci there)", pkg, dir)
		}
	}
	return dir
}

// jsDriver is a node script of hack/ofrep-js: one JSON command a line in, one JSON answer a
// line out.
type jsDriver struct {
	name   string
	in     io.WriteCloser
	lines  chan string
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startJS runs node script base; it is stopped when the test ends.
func startJS(t *testing.T, script, base string) *jsDriver {
	t.Helper()
	dir := ofrepJSDir(t)
	cmd := exec.Command("node", filepath.Join(dir, script), base)
	cmd.Dir = dir
	d := &jsDriver{name: script, lines: make(chan string, 16), stderr: &lockedBuffer{}}
	cmd.Stderr = d.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node %s: %v", script, err)
	}
	d.in = in
	go func() {
		defer close(d.lines)
		s := bufio.NewScanner(out)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			d.lines <- s.Text()
		}
	}()
	t.Cleanup(func() {
		in.Close() // the script closes its provider and exits at the end of its input
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("node %s did not exit within 10s of the end of its input; stderr:\n%s", script, d.stderr)
		}
	})
	return d
}

// next is the script's next line of output, decoded into v.
func (d *jsDriver) next(t *testing.T, v any) {
	t.Helper()
	select {
	case line, ok := <-d.lines:
		if !ok {
			t.Fatalf("node %s exited; stderr:\n%s", d.name, d.stderr)
		}
		if err := json.Unmarshal([]byte(line), v); err != nil {
			t.Fatalf("node %s wrote %q: %v", d.name, line, err)
		}
		var thrown struct{ Thrown string }
		if json.Unmarshal([]byte(line), &thrown) == nil && thrown.Thrown != "" {
			t.Fatalf("node %s threw: %s", d.name, thrown.Thrown)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s gave no answer in 30s; stderr:\n%s", d.name, d.stderr)
	}
}

// call sends cmd and decodes the answer into v.
func (d *jsDriver) call(t *testing.T, cmd, v any) {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.in.Write(append(b, '\n')); err != nil {
		t.Fatalf("node %s: %v; stderr:\n%s", d.name, err, d.stderr)
	}
	d.next(t, v)
}

// jsDetails are an SDK's evaluation details, as the scripts write them.
type jsDetails struct {
	Value        json.RawMessage
	Variant      string
	Reason       string
	ErrorCode    string
	ErrorMessage string
	FlagMetadata map[string]any
}

// jsCase is one evaluation through an SDK and what the application must get.
type jsCase struct {
	name, typ, key string
	def            any
	ctx            map[string]any // server SDK only: the web SDK evaluates for its init context
	value          []string       // the value's JSON, one of these
	reason         string
	variant        string
	errorCode      string
}

func (c jsCase) check(t *testing.T, d jsDetails) {
	t.Helper()
	var v any
	if err := json.Unmarshal(d.Value, &v); err != nil {
		t.Fatalf("value %s: %v", d.Value, err)
	}
	got, _ := json.Marshal(v)
	match := false
	for _, w := range c.value {
		match = match || string(got) == w
	}
	if !match || d.Reason != c.reason || d.ErrorCode != c.errorCode || (c.variant != "" && d.Variant != c.variant) {
		t.Errorf("%s %s(%q, %v) = %+v (value %s); want value %s, reason %s, variant %q, error code %q",
			c.name, c.typ, c.key, c.def, d, got, strings.Join(c.value, " or "), c.reason, c.variant, c.errorCode)
	}
}

// jsFlags are the flags the SDK tests evaluate: one of each OFREP value type, targeting,
// a fractional split and a disabled flag.
var jsFlags = map[string]string{
	"banner":   def("on"),
	"color":    `{"state":"ENABLED","variants":{"red":"red","blue":"blue"},"defaultVariant":"red","targeting":{"if":[{"ends_with":[{"var":"email"},"@example.com"]},"blue",null]}}`,
	"limit":    `{"state":"ENABLED","variants":{"few":10,"many":100},"defaultVariant":"few","targeting":{"if":[{"sem_ver":[{"var":"appVersion"},">=","2.0.0"]},"many",null]}}`,
	"ratio":    `{"state":"ENABLED","variants":{"low":0.25,"high":0.75},"defaultVariant":"low"}`,
	"tiered":   `{"state":"ENABLED","variants":{"gold":{"limit":100,"tags":["a"]},"basic":{"limit":10}},"defaultVariant":"basic","metadata":{"owner":"billing"},"targeting":{"if":[{"==":[{"var":"tier"},"gold"]},"gold",null]}}`,
	"rollout":  `{"state":"ENABLED","variants":{"a":"A","b":"B"},"defaultVariant":"a","targeting":{"fractional":[["a",50],["b",50]]}}`,
	"disabled": `{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}`,
	// No defaultVariant (flagd's "code default"): the caller's default where no rule matches.
	"nodefault": `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":null,"targeting":{"if":[{"==":[{"var":"tier"},"gold"]},"on",null]}}`,
}

func jsEnv(t *testing.T) *env {
	e := newEnv(t, nil, Options{})
	for key, d := range jsFlags {
		if a := e.do(t, "PUT", "/v1/flags/"+key, d); a.status != http.StatusNoContent {
			t.Fatalf("PUT %s: %d %s", key, a.status, a.body)
		}
	}
	return e
}

var (
	staff = map[string]any{"targetingKey": "user-1", "email": "ann@example.com", "appVersion": "2.1.0", "tier": "gold"}
	guest = map[string]any{"targetingKey": "user-2", "email": "bob@else.org", "appVersion": "1.9.0", "tier": "free"}
)

// jsCommonCases hold for both SDKs, for the context staff.
var jsCommonCases = []jsCase{
	{name: "boolean", typ: "boolean", key: "banner", def: false, value: []string{"true"}, reason: ReasonStatic, variant: "on"},
	{name: "string, targeting", typ: "string", key: "color", def: "none", value: []string{`"blue"`}, reason: ReasonTargetingMatch, variant: "blue"},
	{name: "integer, targeting", typ: "number", key: "limit", def: 0, value: []string{"100"}, reason: ReasonTargetingMatch, variant: "many"},
	{name: "float", typ: "number", key: "ratio", def: 0, value: []string{"0.25"}, reason: ReasonStatic, variant: "low"},
	{name: "object, targeting", typ: "object", key: "tiered", def: map[string]any{}, value: []string{`{"limit":100,"tags":["a"]}`}, reason: ReasonTargetingMatch, variant: "gold"},
	{name: "fractional", typ: "string", key: "rollout", def: "none", value: []string{`"A"`, `"B"`}, reason: ReasonSplit},
	{name: "missing", typ: "boolean", key: "no-such-flag", def: true, value: []string{"true"}, reason: "ERROR", errorCode: CodeFlagNotFound},
	{name: "type mismatch", typ: "boolean", key: "color", def: false, value: []string{"false"}, reason: "ERROR", errorCode: "TYPE_MISMATCH"},
	{name: "type mismatch, object asked as number", typ: "number", key: "tiered", def: 7, value: []string{"7"}, reason: "ERROR", errorCode: "TYPE_MISMATCH"},
}

// TestOFREP_JSServerSDK: @openfeature/server-sdk with @openfeature/ofrep-provider (single
// evaluations) gets every value type, targeting, the errors as OpenFeature error codes with
// the caller's default, the caller's default for a disabled flag, and a change at the next
// evaluation.
func TestOFREP_JSServerSDK(t *testing.T) {
	e := jsEnv(t)
	js := startJS(t, "server.cjs", e.base)
	var ready struct{ Ready bool }
	js.next(t, &ready)

	eval := func(t *testing.T, c jsCase, ctx map[string]any) {
		t.Helper()
		var d jsDetails
		js.call(t, map[string]any{"type": c.typ, "key": c.key, "default": c.def, "context": ctx}, &d)
		c.check(t, d)
	}
	for _, c := range jsCommonCases {
		t.Run(c.name, func(t *testing.T) { eval(t, c, staff) })
	}
	t.Run("default", func(t *testing.T) {
		eval(t, jsCase{name: "no rule matches", typ: "string", key: "color", def: "none", value: []string{`"red"`}, reason: ReasonDefault, variant: "red"}, guest)
	})
	t.Run("targeting key missing", func(t *testing.T) {
		eval(t, jsCase{typ: "string", key: "rollout", def: "none", value: []string{`"none"`}, reason: "ERROR", errorCode: CodeTargetingKeyMissing}, map[string]any{})
	})
	t.Run("metadata", func(t *testing.T) {
		var d jsDetails
		js.call(t, map[string]any{"type": "object", "key": "tiered", "default": map[string]any{}, "context": staff}, &d)
		if got := d.FlagMetadata["owner"]; got != "billing" {
			t.Errorf("flagMetadata = %v, want owner billing", d.FlagMetadata)
		}
	})
	// The caller's default, as flagd answers a disabled flag: the provider cannot be told
	// DISABLED without a value (it refuses that answer as malformed), so the SDK reports
	// FLAG_NOT_FOUND, with a message saying the flag is disabled.
	t.Run("disabled", func(t *testing.T) {
		for _, def := range []bool{true, false} {
			var d jsDetails
			js.call(t, map[string]any{"type": "boolean", "key": "disabled", "default": def, "context": staff}, &d)
			if got := string(d.Value); got != fmt.Sprint(def) || d.ErrorCode != CodeFlagNotFound || !strings.Contains(d.ErrorMessage, "DISABLED") {
				t.Errorf("disabled with default %v = %+v; want the default, FLAG_NOT_FOUND, a message saying it is DISABLED", def, d)
			}
		}
	})
	// No defaultVariant and no rule matching: flagd answers reason DEFAULT without a value
	// (its code-default ADR), and so do we; the published provider refuses a success
	// without a value as malformed, so the SDK gives the caller's default with a GENERAL
	// error, as it does against flagd.
	t.Run("no default variant", func(t *testing.T) {
		for _, def := range []bool{true, false} {
			var d jsDetails
			js.call(t, map[string]any{"type": "boolean", "key": "nodefault", "default": def, "context": guest}, &d)
			if got := string(d.Value); got != fmt.Sprint(def) || d.Reason != "ERROR" {
				t.Errorf("nodefault with default %v = %+v; want the caller's default", def, d)
			}
		}
		eval(t, jsCase{typ: "boolean", key: "nodefault", def: false, value: []string{"true"}, reason: ReasonTargetingMatch, variant: "on"}, staff)
	})
	t.Run("change at the next evaluation", func(t *testing.T) {
		if a := e.do(t, "PUT", "/v1/flags/banner", def("off")); a.status != http.StatusNoContent {
			t.Fatalf("PUT: %d %s", a.status, a.body)
		}
		eval(t, jsCase{name: "after the change", typ: "boolean", key: "banner", def: true, value: []string{"false"}, reason: ReasonStatic, variant: "off"}, staff)
	})
}

// jsWire is what the web script saw go over the wire.
type jsWire struct {
	Requests []struct {
		Method, URL, IfNoneMatch, ETag string
		Status                         int
	}
	Streams []struct {
		URL  string
		Open bool
	}
}

func startWeb(t *testing.T, e *env, options map[string]any) *jsDriver {
	t.Helper()
	js := startJS(t, "web.cjs", e.base)
	var ready struct{ Ready bool }
	js.call(t, map[string]any{"op": "init", "context": staff, "options": options}, &ready)
	if !ready.Ready {
		t.Fatal("the web provider did not become ready")
	}
	return js
}

func (d *jsDriver) webEval(t *testing.T, c jsCase) {
	t.Helper()
	var det jsDetails
	d.call(t, map[string]any{"op": "eval", "type": c.typ, "key": c.key, "default": c.def}, &det)
	c.check(t, det)
}

// waitChange waits for the provider's ConfigurationChanged event naming key.
func (d *jsDriver) waitChange(t *testing.T, key string) {
	t.Helper()
	var w struct {
		Event   map[string]any
		Timeout bool
		Events  []any
	}
	d.call(t, map[string]any{"op": "wait", "key": key, "timeoutMs": 10000}, &w)
	if w.Timeout {
		t.Fatalf("no ConfigurationChanged event for %q within 10s (events seen: %v); stderr:\n%s", key, w.Events, d.stderr)
	}
}

// TestOFREP_JSWebSDK: @openfeature/web-sdk with @openfeature/ofrep-web-provider (bulk
// evaluation) with its default options: every value type, targeting, the errors, the
// caller's default with reason DISABLED, and a change told by the event stream the bulk
// answer names in eventStreams (the provider does not poll by default).
func TestOFREP_JSWebSDK(t *testing.T) {
	e := jsEnv(t)
	js := startWeb(t, e, map[string]any{})
	for _, c := range jsCommonCases {
		t.Run(c.name, func(t *testing.T) { js.webEval(t, c) })
	}
	t.Run("metadata", func(t *testing.T) {
		var d jsDetails
		js.call(t, map[string]any{"op": "eval", "type": "object", "key": "tiered", "default": map[string]any{}}, &d)
		if got := d.FlagMetadata["owner"]; got != "billing" {
			t.Errorf("flagMetadata = %v, want owner billing", d.FlagMetadata)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		for _, def := range []bool{true, false} {
			js.webEval(t, jsCase{name: "disabled", typ: "boolean", key: "disabled", def: def, value: []string{fmt.Sprint(def)}, reason: ReasonDisabled})
		}
	})
	t.Run("no default variant, a rule matches", func(t *testing.T) {
		js.webEval(t, jsCase{typ: "boolean", key: "nodefault", def: false, value: []string{"true"}, reason: ReasonTargetingMatch, variant: "on"})
	})
	t.Run("change told by the event stream", func(t *testing.T) {
		var w jsWire
		js.call(t, map[string]any{"op": "wire"}, &w)
		if len(w.Streams) != 1 || w.Streams[0].URL != e.base+PathEvents {
			t.Fatalf("event streams opened: %+v; want %s, named in the bulk answer's eventStreams", w.Streams, e.base+PathEvents)
		}
		// A change is told to the streams open when it happens.
		eventually(t, "the web provider's event stream to open", func() bool {
			js.call(t, map[string]any{"op": "wire"}, &w)
			return len(w.Streams) == 1 && w.Streams[0].Open
		})
		if a := e.do(t, "PUT", "/v1/flags/banner", def("off")); a.status != http.StatusNoContent {
			t.Fatalf("PUT: %d %s", a.status, a.body)
		}
		js.waitChange(t, "banner")
		js.webEval(t, jsCase{name: "after the change", typ: "boolean", key: "banner", def: true, value: []string{"false"}, reason: ReasonStatic, variant: "off"})
		js.call(t, map[string]any{"op": "wire"}, &w)
		refetched := false
		for _, r := range w.Requests {
			u, err := url.Parse(r.URL)
			if err != nil {
				t.Fatal(err)
			}
			// ADR-0008: a re-fetch an event caused carries the event's etag as flagConfigEtag.
			refetched = refetched || (r.Status == http.StatusOK && u.Path == PathOFREPFlags && u.Query().Get("flagConfigEtag") != "")
		}
		if !refetched {
			t.Errorf("requests after the change %+v; want a bulk re-fetch with flagConfigEtag answered 200", w.Requests)
		}
	})
}

// TestOFREP_JSWebSDKContext: a new evaluation context is evaluated anew: a rule that no
// longer matches gives the default variant, and a split without a targeting key is
// TARGETING_KEY_MISSING with the caller's default.
func TestOFREP_JSWebSDKContext(t *testing.T) {
	e := jsEnv(t)
	js := startWeb(t, e, map[string]any{})
	var ok struct{ OK bool }
	js.call(t, map[string]any{"op": "context", "context": guest}, &ok)
	js.webEval(t, jsCase{name: "guest", typ: "string", key: "color", def: "none", value: []string{`"red"`}, reason: ReasonDefault, variant: "red"})
	js.webEval(t, jsCase{name: "guest", typ: "number", key: "limit", def: 0, value: []string{"10"}, reason: ReasonDefault, variant: "few"})
	for _, def := range []bool{true, false} { // no defaultVariant: the caller's default
		js.webEval(t, jsCase{name: "guest, no default variant", typ: "boolean", key: "nodefault", def: def, value: []string{fmt.Sprint(def)}, reason: ReasonDefault})
	}
	js.call(t, map[string]any{"op": "context", "context": map[string]any{"email": "ann@example.com"}}, &ok)
	js.webEval(t, jsCase{name: "no targeting key", typ: "string", key: "rollout", def: "none", value: []string{`"none"`}, reason: "ERROR", errorCode: CodeTargetingKeyMissing})
	js.webEval(t, jsCase{name: "no targeting key", typ: "string", key: "color", def: "none", value: []string{`"blue"`}, reason: ReasonTargetingMatch, variant: "blue"})
}

// TestOFREP_JSWebSDKPolling: the web provider set to poll sends If-None-Match with the
// ETag it holds and gets 304 while nothing changed, then 200 and a ConfigurationChanged
// event after a change.
func TestOFREP_JSWebSDKPolling(t *testing.T) {
	e := jsEnv(t)
	js := startWeb(t, e, map[string]any{"changeDetection": "polling", "pollInterval": 50})
	var w jsWire
	js.call(t, map[string]any{"op": "wire"}, &w)
	if len(w.Requests) != 1 || w.Requests[0].Status != http.StatusOK || w.Requests[0].ETag == "" {
		t.Fatalf("first requests %+v; want one bulk evaluation answered 200 with an ETag", w.Requests)
	}
	if len(w.Streams) != 0 {
		t.Errorf("event streams opened while polling: %+v", w.Streams)
	}
	etag := w.Requests[0].ETag
	notModified := 0
	eventually(t, "three polls answered 304", func() bool {
		js.call(t, map[string]any{"op": "wire"}, &w)
		for _, r := range w.Requests {
			if r.IfNoneMatch != etag || r.Status != http.StatusNotModified {
				t.Fatalf("a poll before any change: %+v; want If-None-Match %s answered 304", r, etag)
			}
			notModified++
		}
		return notModified >= 3
	})
	if a := e.do(t, "PUT", "/v1/flags/ratio", strings.Replace(jsFlags["ratio"], `"defaultVariant":"low"`, `"defaultVariant":"high"`, 1)); a.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", a.status, a.body)
	}
	js.waitChange(t, "ratio")
	js.webEval(t, jsCase{name: "after the change", typ: "number", key: "ratio", def: 0, value: []string{"0.75"}, reason: ReasonStatic, variant: "high"})
	js.call(t, map[string]any{"op": "wire"}, &w)
	changed := false
	for _, r := range w.Requests {
		changed = changed || (r.IfNoneMatch == etag && r.Status == http.StatusOK && r.ETag != "" && r.ETag != etag)
	}
	if !changed {
		t.Errorf("requests after the change %+v; want a poll with the old ETag answered 200 with a new one", w.Requests)
	}
}
