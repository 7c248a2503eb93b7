package proxy

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/ctxprop/ctxprop/headers"
)

// appRecorder is an app that records the headers of every request it receives.
func appRecorder(t *testing.T) (*httptest.Server, chan http.Header) {
	seen := make(chan http.Header, 16)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	t.Cleanup(app.Close)
	return app, seen
}

func newSigner(t *testing.T, secret []byte) *headers.Signer {
	t.Helper()
	s, err := headers.NewSigner([][]byte{secret})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randomSecret(t *testing.T) []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// ctxMembers returns the ctx.* members of the baggage lines of h.
func ctxMembers(h http.Header) []string {
	var out []string
	for _, line := range h.Values("Baggage") {
		for m := range strings.SplitSeq(line, ",") {
			if m = strings.TrimSpace(m); strings.HasPrefix(m, "ctx.") {
				out = append(out, m)
			}
		}
	}
	return out
}

// TestInbound_UntrustedContext_CreatesNothing is issue 10 item 2: a caller outside the
// fleet names a context in baggage. Before, the inbound proxy created it (telemetry)
// and handed it to the app; now the members are removed, nothing is written, the
// request goes through, and the removal is counted.
func TestInbound_UntrustedContext_CreatesNothing(t *testing.T) {
	app, seen := appRecorder(t)
	store := newMemStore()
	p := startProxy(t, Options{App: hostOf(app.URL), Store: store, Signer: newSigner(t, randomSecret(t))})

	res, _ := get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{
		"Traceparent": testTraceparent,
		"Baggage":     "user=alice,ctx.name=random-7f3a9c",
	})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want the request to go through", res.StatusCode)
	}
	h := <-seen
	if m := ctxMembers(h); len(m) > 0 {
		t.Errorf("the app saw context members %q from outside the fleet", m)
	}
	if got, want := h.Get("Baggage"), "user=alice"; got != want {
		t.Errorf("the app saw baggage %q, want the caller's other members %q", got, want)
	}
	// The proxy applies telemetry as its handler returns: a request with a context
	// after it shows that the first one's turn has passed.
	get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{"Baggage": "x=1"})
	<-seen
	if n := store.callCount(); n != 0 {
		t.Errorf("%d store writes for requests from outside the fleet, want none: %+v", n, store.calls)
	}
	if got, want := p.Stats().RefusedMembers[sideInbound][headers.Unsigned], uint64(1); got != want {
		t.Errorf("refused members (unsigned) = %d, want %d", got, want)
	}
}

// TestInbound_FlagsFromOutside_NeverPinned is issue 10 item 3: ctx.flag.* members from
// outside the fleet never reach the app as ctx-flag-* headers, and a flag that is not
// in flags.pinned is never pinned, even by a trusted caller.
func TestInbound_FlagsFromOutside_NeverPinned(t *testing.T) {
	app, seen := appRecorder(t)
	flags := pinAll{"new-ui", "off"} // flags.pinned = ["new-ui"]; the edge evaluates it to "off"
	untrusted := startProxy(t, Options{App: hostOf(app.URL), Flags: flags})
	trusted := startProxy(t, Options{App: hostOf(app.URL), Flags: flags, TrustedSources: loopback})

	for _, tc := range []struct {
		name       string
		p          *Proxy
		wantNewUI  string
		wantReason headers.Refusal
	}{
		{"from outside: removed, the edge pins its own value", untrusted, "off", headers.Unsigned},
		{"from a trusted source: the pinned flag kept, the other removed", trusted, "on", headers.NotPinnable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.p.Stats().RefusedMembers[sideInbound][tc.wantReason]
			get(t, http.DefaultClient, "http://"+tc.p.InboundAddr().String()+"/", map[string]string{
				"Baggage": "ctx.flag.admin=true,ctx.flag.new-ui=on",
			})
			h := <-seen
			if got := h.Get("Ctx-Flag-Admin"); got != "" {
				t.Errorf("the app got Ctx-Flag-Admin: %s, a flag that is not in flags.pinned", got)
			}
			if got, want := h.Get("Ctx-Flag-New-Ui"), tc.wantNewUI; got != want {
				t.Errorf("the app got Ctx-Flag-New-Ui %q, want %q", got, want)
			}
			if strings.Contains(h.Get("Baggage"), "ctx.flag.admin") {
				t.Errorf("the app's baggage %q still has ctx.flag.admin", h.Get("Baggage"))
			}
			if got := tc.p.Stats().RefusedMembers[sideInbound][tc.wantReason]; got <= before {
				t.Errorf("refused members (%s) = %d, not counted", headers.RefusalNames[tc.wantReason], got)
			}
		})
	}
}

// TestFleet_SignedContext runs a hop between two sidecars of one fleet over real
// sockets: app A calls service B through A's outbound proxy, which signs the context;
// B's inbound proxy keeps it and records telemetry. A sidecar with another key, a
// replay of A's signed headers onto another trace, and a tampered member are refused.
func TestFleet_SignedContext(t *testing.T) {
	secret := randomSecret(t)
	appB, seenB := appRecorder(t)
	storeB := newMemStore()
	b := startProxy(t, Options{App: hostOf(appB.URL), Store: storeB, Signer: newSigner(t, secret), Flags: pinAll{"new-ui", "x"}})
	a := startProxy(t, Options{Signer: newSigner(t, secret), Flags: pinAll{"new-ui", "x"}})
	stranger := startProxy(t, Options{Signer: newSigner(t, randomSecret(t)), Flags: pinAll{"new-ui", "x"}})

	// wire captures what A's outbound proxy sends, on its way to B.
	wire := make(chan http.Header, 4)
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wire <- r.Header.Clone()
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+b.InboundAddr().String()+r.URL.Path, nil)
		req.Header = r.Header.Clone()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		res.Body.Close()
	}))
	defer relay.Close()

	send := func(p *Proxy) http.Header {
		t.Helper()
		get(t, proxiedClient(t, p), relay.URL+"/pay", map[string]string{
			"Traceparent": testTraceparent,
			"Baggage":     "ctx.name=order-1001,ctx.flag.new-ui=on",
		})
		sent := <-wire
		return sent
	}

	t.Run("signed by the fleet: kept", func(t *testing.T) {
		sent := send(a)
		if sent.Get("Ctx-Sig") == "" {
			t.Fatalf("A's outbound proxy sent no ctx-sig: %v", sent)
		}
		h := <-seenB
		if got, want := ctxMembers(h), []string{"ctx.name=order-1001", "ctx.flag.new-ui=on"}; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("B's app saw context members %q, want %q", got, want)
		}
		if got := h.Get("Ctx-Flag-New-Ui"); got != "on" {
			t.Errorf("B's app got Ctx-Flag-New-Ui %q, want the pinned on", got)
		}
		if h.Get("Ctx-Sig") != "" {
			t.Error("the ctx-sig reached B's app")
		}
		storeB.waitCounter(t, "order-1001", "http.requests", 1)
	})
	t.Run("another fleet's key: removed", func(t *testing.T) {
		send(stranger)
		if m := ctxMembers(<-seenB); len(m) > 0 {
			t.Errorf("B's app saw %q signed with another key", m)
		}
	})
	t.Run("replayed onto another trace: removed", func(t *testing.T) {
		sent := send(a)
		<-seenB
		sent.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01")
		before := b.Stats().RefusedMembers[sideInbound][headers.BadSignature]
		get(t, http.DefaultClient, "http://"+b.InboundAddr().String()+"/", flatten(sent))
		if m := ctxMembers(<-seenB); len(m) > 0 {
			t.Errorf("B's app saw %q replayed onto another trace", m)
		}
		if got := b.Stats().RefusedMembers[sideInbound][headers.BadSignature]; got != before+2 {
			t.Errorf("bad signatures counted %d → %d, want 2 more members", before, got)
		}
	})
	t.Run("a member changed: removed", func(t *testing.T) {
		sent := send(a)
		<-seenB
		sent.Set("Baggage", "ctx.name=order-1002,ctx.flag.new-ui=on")
		get(t, http.DefaultClient, "http://"+b.InboundAddr().String()+"/", flatten(sent))
		if m := ctxMembers(<-seenB); len(m) > 0 {
			t.Errorf("B's app saw %q with a changed member", m)
		}
	})
	if got := storeB.counter("order-1002", "http.requests"); got != 0 {
		t.Errorf("a forged context was counted %d times", got)
	}
}

func flatten(h http.Header) map[string]string {
	m := map[string]string{}
	for k := range h {
		m[k] = h.Get(k)
	}
	return m
}

// TestInbound_Edge: an edge sidecar takes the context of requests from outside from the
// header or baggage member it is told to, and gives it to the app as ctx.name.
func TestInbound_Edge(t *testing.T) {
	app, seen := appRecorder(t)
	store := newMemStore()
	byHeader := startProxy(t, Options{App: hostOf(app.URL), Store: store, ContextHeader: "x-workflow-id"})
	byBaggage := startProxy(t, Options{App: hostOf(app.URL), Store: store, ContextBaggage: "ctx.name"})

	get(t, http.DefaultClient, "http://"+byHeader.InboundAddr().String()+"/", map[string]string{"X-Workflow-Id": "wf-1"})
	if got, want := ctxMembers(<-seen), []string{"ctx.name=wf-1"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("app saw %q, want %q", got, want)
	}
	store.waitCounter(t, "wf-1", "http.requests", 1)

	get(t, http.DefaultClient, "http://"+byBaggage.InboundAddr().String()+"/", map[string]string{"Baggage": "ctx.name=wf-2,ctx.flag.admin=true"})
	if got, want := ctxMembers(<-seen), []string{"ctx.name=wf-2"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("app saw %q, want %q (the name, never the caller's flags)", got, want)
	}
	store.waitCounter(t, "wf-2", "http.requests", 1)
}

func TestOptions_TrustValidation(t *testing.T) {
	for _, opt := range []Options{
		{ContextHeader: "X Bad"},
		{ContextBaggage: "ctx.flag.beta"},
	} {
		if _, err := New(opt); err == nil {
			t.Errorf("New(%+v) accepted", opt)
		}
	}
	if _, err := New(Options{ContextHeader: "X-Workflow-Id", ContextBaggage: "workflow.id", TrustedSources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}); err != nil {
		t.Errorf("valid trust options refused: %v", err)
	}
}
