package flags

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "flags", Output: tWriter{t}, Level: hclog.Debug})
}

// env is a sidecar's flag serving: a real store in a temp dir, a real admin server on
// loopback, and Flags mounted on it.
type env struct {
	store *localstore.Store
	admin *admin.Server
	flags *Flags
	base  string
}

func openStore(t testing.TB) *localstore.Store {
	t.Helper()
	return openStoreLimits(t, localstore.Limits{})
}

func openStoreLimits(t testing.TB, limits localstore.Limits) *localstore.Store {
	t.Helper()
	st := localstore.New(localstore.Options{Path: filepath.Join(t.TempDir(), "ctxprop.db"), Limits: limits, Logger: testLogger(t).Named("store")})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return st
}

func newEnv(t testing.TB, st *localstore.Store, opt Options) *env {
	t.Helper()
	return newEnvWith(t, st, opt, admin.Options{})
}

// newEnvWith is newEnv with the admin server's options (Address, Store and Logger are set
// here).
func newEnvWith(t testing.TB, st *localstore.Store, opt Options, adminOpt admin.Options) *env {
	t.Helper()
	if st == nil {
		st = openStore(t)
	}
	opt.Store = st
	if opt.Logger == nil {
		opt.Logger = testLogger(t)
	}
	if opt.PollInterval == 0 {
		opt.PollInterval = 10 * time.Millisecond
	}
	f := New(opt)
	if err := f.Open(); err != nil {
		t.Fatal(err)
	}
	adminOpt.Address, adminOpt.Store, adminOpt.Logger = "127.0.0.1:0", st, testLogger(t).Named("admin")
	srv := admin.New(adminOpt)
	f.Register(srv)
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Flags first: the admin server's shutdown waits for event streams.
		if err := f.Close(); err != nil {
			t.Error(err)
		}
		if err := srv.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return &env{store: st, admin: srv, flags: f, base: "http://" + srv.Addr().String()}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
}

func (e *env) do(t testing.TB, method, path, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(admin.HeaderRequestedBy, "flags-test") // as admin.Client sends it
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
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

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const boolFlag = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"%s"}`

func def(variant string) string { return strings.Replace(boolFlag, "%s", variant, 1) }

func TestAPI_PutGetDelete(t *testing.T) {
	e := newEnv(t, nil, Options{})

	if a := e.do(t, "PUT", "/v1/flags/new-checkout", def("on")); a.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", a.status, a.body)
	}
	var fa FlagAnswer
	a := e.do(t, "GET", "/v1/flags/new-checkout", "")
	a.json(t, &fa)
	if got, want := fa.Source, SourceAPI; got != want {
		t.Errorf("source = %q, want %q", got, want)
	}
	if got, want := string(fa.Definition), `{"defaultVariant":"on","state":"ENABLED","variants":{"on":true,"off":false}}`; got != want {
		t.Errorf("definition = %s, want %s", got, want)
	}
	// The definition is an entry of the flags context, where replication picks it up.
	if raw, err := e.store.MapGet(Context, Map, "new-checkout"); err != nil || !strings.Contains(string(raw), `"defaultVariant":"on"`) {
		t.Errorf("store entry = %s, %v", raw, err)
	}

	// An invalid definition is refused with its field named; the last good one serves on.
	a = e.do(t, "PUT", "/v1/flags/new-checkout", `{"state":"ENABLED","variants":{"on":true},"defaultVariant":"of"}`)
	var ae struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	a.json(t, &ae)
	if a.status != http.StatusBadRequest || ae.Error.Code != admin.CodeBadRequest || !strings.Contains(ae.Error.Message, `defaultVariant: "of" is not one of the variants`) {
		t.Errorf("invalid PUT: %d %s", a.status, a.body)
	}
	if got := e.flags.Evaluate("new-checkout", nil); string(got.Value) != "true" {
		t.Errorf("after a refused PUT the flag evaluates to %+v, want the last good value true", got)
	}

	var list ListAnswer
	e.do(t, "GET", "/v1/flags", "").json(t, &list)
	if got, want := list.Sources["new-checkout"], SourceAPI; got != want || len(list.Flags) != 1 {
		t.Errorf("list = %+v", list)
	}

	if a := e.do(t, "DELETE", "/v1/flags/new-checkout", ""); a.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", a.status, a.body)
	}
	if a := e.do(t, "GET", "/v1/flags/new-checkout", ""); a.status != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d %s", a.status, a.body)
	}
	if a := e.do(t, "DELETE", "/v1/flags/new-checkout", ""); a.status != http.StatusNotFound {
		t.Errorf("second DELETE: %d %s", a.status, a.body)
	}
	if a := e.do(t, "PUT", "/v1/flags/x", strings.Repeat(" ", 2<<20)); a.status != http.StatusRequestEntityTooLarge {
		t.Errorf("huge PUT: %d %s", a.status, a.body)
	}
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	// Write then rename, as a ConfigMap update does, so the poller never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFiles_ReloadPrecedenceLastGood(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	writeFile(t, a, `{"flags":{"banner":`+def("off")+`,"theme":{"state":"ENABLED","variants":{"dark":"d","light":"l"},"defaultVariant":"light"}}}`)
	writeFile(t, b, `{"flags":{"theme":{"state":"ENABLED","variants":{"dark":"d","light":"l"},"defaultVariant":"dark"}}}`)
	e := newEnv(t, nil, Options{Files: []string{a, b}})
	value := func(key string) string { return string(e.flags.Evaluate(key, nil).Value) }

	if got, want := value("banner"), "false"; got != want {
		t.Errorf("banner = %s, want %s", got, want)
	}
	if got, want := value("theme"), `"d"`; got != want {
		t.Errorf("theme = %s, want %s: the later file wins", got, want)
	}

	writeFile(t, a, `{"flags":{"banner":`+def("on")+`}}`)
	eventually(t, "banner reloaded to on", func() bool { return value("banner") == "true" })

	// An invalid flag: refused, named, and the last good one keeps serving.
	writeFile(t, a, `{"flags":{"banner":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"maybe"}}}`)
	eventually(t, "the refused banner reported", func() bool {
		p := e.flags.Problems()
		return len(p) == 1 && p[0].Flag == "banner" && strings.Contains(p[0].Message, "defaultVariant")
	})
	if got, want := value("banner"), "true"; got != want {
		t.Errorf("banner = %s, want the last good %s", got, want)
	}
	// A file that is not JSON at all keeps its last good flags.
	writeFile(t, a, `{"flags":`)
	eventually(t, "the broken file reported", func() bool {
		p := e.flags.Problems()
		return len(p) == 1 && p[0].Flag == "" && p[0].Source == "file:"+a
	})
	if got, want := value("banner"), "true"; got != want {
		t.Errorf("banner = %s, want the last good %s", got, want)
	}

	// The API overrides files; deleting the API flag brings the file's back.
	if r := e.do(t, "PUT", "/v1/flags/theme", `{"state":"ENABLED","variants":{"dark":"d","light":"l"},"defaultVariant":"light"}`); r.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	if got, want := value("theme"), `"l"`; got != want {
		t.Errorf("theme = %s, want the API's %s", got, want)
	}
	if r := e.do(t, "DELETE", "/v1/flags/banner", ""); r.status != http.StatusNotFound || !strings.Contains(string(r.body), "file:"+a) {
		t.Errorf("DELETE of a file flag: %d %s, want 404 naming the file", r.status, r.body)
	}
	e.do(t, "DELETE", "/v1/flags/theme", "")
	if got, want := value("theme"), `"d"`; got != want {
		t.Errorf("theme = %s, want the file's %s back", got, want)
	}
}

func TestOpen_RefusesBadConfig(t *testing.T) {
	st := openStore(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `[1]`)
	tests := []struct {
		name string
		opt  Options
		want string
	}{
		{"missing file", Options{Files: []string{filepath.Join(dir, "none.json")}}, "no such file"},
		{"not a flag file", Options{Files: []string{bad}}, "not a JSON object"},
		{"pinned name", Options{Pinned: []string{"a b"}}, `flags.pinned: "a b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opt.Store = st
			f := New(tt.opt)
			err := f.Open()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want an error with %q", err, tt.want)
			}
			f.Close()
		})
	}
}

// A flag written on another replica reaches this one through the store (the sync layer's
// Merge), with no API call here.
func TestReplicatedChange(t *testing.T) {
	here := newEnv(t, nil, Options{})
	there := newEnv(t, nil, Options{})
	if r := there.do(t, "PUT", "/v1/flags/remote", def("on")); r.status != http.StatusNoContent {
		t.Fatalf("PUT there: %d %s", r.status, r.body)
	}
	delta, ok := there.store.State(Context)
	if !ok {
		t.Fatal("no flags context on the writing replica")
	}
	if err := here.store.Merge(context.Background(), Context, delta, there.store.Replica()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the replicated flag served here", func() bool {
		return string(here.flags.Evaluate("remote", nil).Value) == "true"
	})
}

func TestEvents_SSE(t *testing.T) {
	e := newEnv(t, nil, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+PathEvents, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if got, want := res.Header.Get("Content-Type"), "text/event-stream"; got != want {
		t.Fatalf("Content-Type = %q, want %q", got, want)
	}
	events := make(chan map[string]string, 4)
	go func() {
		sc := bufio.NewScanner(res.Body)
		ev := map[string]string{}
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if len(ev) > 0 {
					events <- ev
				}
				ev = map[string]string{}
				continue
			}
			if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, ":") {
				ev[k] = v
			}
		}
		close(events)
	}()

	if r := e.do(t, "PUT", "/v1/flags/live", def("on")); r.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	var ev map[string]string
	select {
	case ev = <-events:
	case <-time.After(5 * time.Second):
		t.Fatal("no event after a change")
	}
	var data ChangeEvent
	if err := json.Unmarshal([]byte(ev["data"]), &data); err != nil {
		t.Fatalf("event %v: %v", ev, err)
	}
	if got, want := ev["event"], "message"; got != want {
		t.Errorf("event type = %q, want %q (OFREP ADR-0008)", got, want)
	}
	if data.Type != "refetchEvaluation" || data.ETag == "" || data.LastModified == 0 || ev["id"] == "" {
		t.Errorf("event = %v", ev)
	}

	// A client reconnecting with an older Last-Event-ID hears of the change at once.
	e.do(t, "PUT", "/v1/flags/live", def("off"))
	req2, _ := http.NewRequestWithContext(ctx, "GET", e.base+PathEvents, nil)
	req2.Header.Set("Last-Event-ID", ev["id"])
	res2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	defer res2.Body.Close()
	sc := bufio.NewScanner(res2.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			if !strings.Contains(sc.Text(), "refetchEvaluation") {
				t.Errorf("replayed event %q", sc.Text())
			}
			break
		}
	}
}

// A definition that reaches the store without the API's checks (from a peer running other
// rules) is refused with its field named, and the last good one keeps serving.
func TestStoredInvalidDefinition_LastGoodServes(t *testing.T) {
	e := newEnv(t, nil, Options{})
	if r := e.do(t, "PUT", "/v1/flags/f", def("on")); r.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	bad := []ops.Op{{Kind: ops.Put, Map: Map, Key: "f", Value: []byte(`{"state":"MAYBE","variants":{"on":true},"defaultVariant":"on"}`)}}
	if _, err := e.store.Apply(context.Background(), Context, bad, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stored definition refused", func() bool {
		p := e.flags.Problems()
		return len(p) == 1 && p[0].Source == SourceAPI && p[0].Flag == "f" && strings.Contains(p[0].Message, "state:")
	})
	if got, want := string(e.flags.Evaluate("f", nil).Value), "true"; got != want {
		t.Errorf("f = %s, want the last good %s", got, want)
	}
	var list ListAnswer
	e.do(t, "GET", "/v1/flags", "").json(t, &list)
	if len(list.Problems) != 1 {
		t.Errorf("GET /v1/flags problems = %+v, want the refused definition", list.Problems)
	}
}

// A store that gives new contexts a TTL must not expire the flags.
func TestPut_ClearsContextTTL(t *testing.T) {
	st := localstore.New(localstore.Options{Path: filepath.Join(t.TempDir(), "ctxprop.db"), ContextTTL: time.Hour, Logger: testLogger(t)})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := newEnv(t, st, Options{})
	if r := e.do(t, "PUT", "/v1/flags/f", def("on")); r.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	snap, err := st.Get(Context)
	if err != nil {
		t.Fatal(err)
	}
	if snap.ExpiresAt != nil {
		t.Errorf("the flags context expires at %v; it must not expire", snap.ExpiresAt)
	}
}

// Close ends the event streams, so the admin server's shutdown does not wait on them.
func TestClose_EndsEventStreams(t *testing.T) {
	e := newEnv(t, nil, Options{})
	res, err := http.Get(e.base + PathEvents)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, res.Body)
		done <- err
	}()
	e.flags.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open after Close")
	}
}
