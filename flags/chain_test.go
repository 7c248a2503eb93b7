package flags

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
)

// A request chain through two sidecars, with the headers package doing what the proxy
// does: the edge pins the flag for the chain; the flag changes mid-chain; the next hop
// still sees the value the edge saw (SPEC §6).
func TestPin_ChainKeepsEdgeValue(t *testing.T) {
	e := newEnv(t, nil, Options{Pinned: []string{"checkout"}, TargetingKeyHeader: "X-User-Id"})
	if r := e.do(t, "PUT", "/v1/flags/checkout", `{"state":"ENABLED","variants":{"new":"v2","old":"v1"},"defaultVariant":"old"}`); r.status != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	// Both sidecars belong to one fleet: the second trusts what the first signed.
	signer, err := headers.NewSigner([][]byte{[]byte("chain-test-fleet-secret-32-bytes")})
	if err != nil {
		t.Fatal(err)
	}
	hopt := headers.Options{Signer: signer, Pinnable: e.flags.Pinnable}

	// Hop 1, the edge: the request carries no pinned flag.
	edge := httptest.NewRequest("GET", "http://shop/", nil)
	edge.Header.Set("Traceparent", traceparent)
	edge.Header.Set("X-User-Id", "u-1")
	in, _ := headers.ReadInbound(edge.Header, hopt, headers.Source{})
	in.Flags = e.flags.Pin(edge, in.Flags) // the line the inbound proxy adds
	toApp := edge.Header.Clone()
	in.Apply(toApp, trace.SpanContext{})
	if got, want := toApp.Get("Ctx-Flag-Checkout"), "v1"; got != want {
		t.Fatalf("the edge app sees Ctx-Flag-Checkout %q, want %q", got, want)
	}
	corr := headers.NewCorrelator(16, time.Minute)
	release := corr.Begin(in.Parent.TraceID(), in.Entry())
	defer release()

	// The flag flips while the request is in flight.
	e.do(t, "PUT", "/v1/flags/checkout", `{"state":"ENABLED","variants":{"new":"v2","old":"v1"},"defaultVariant":"new"}`)
	if got, want := string(e.flags.Evaluate("checkout", nil).Value), `"v2"`; got != want {
		t.Fatalf("flag after the change = %s, want %s", got, want)
	}

	// The edge app calls the next service forwarding only traceparent.
	appOut := http.Header{"Traceparent": {traceparent}}
	out, _ := headers.ReadOutbound(appOut, hopt, corr)
	wire := appOut.Clone()
	out.Apply(wire, trace.SpanContext{})

	// Hop 2: the pinned value arrives in baggage and wins over the changed flag.
	next := httptest.NewRequest("GET", "http://cart/", nil)
	next.Header = wire
	next.Header.Set("X-User-Id", "u-1")
	in2, _ := headers.ReadInbound(next.Header, hopt, headers.Source{})
	in2.Flags = e.flags.Pin(next, in2.Flags)
	toApp2 := next.Header.Clone()
	in2.Apply(toApp2, trace.SpanContext{})
	if got, want := toApp2.Get("Ctx-Flag-Checkout"), "v1"; got != want {
		t.Errorf("the second hop sees Ctx-Flag-Checkout %q, want the edge's %q (baggage %q)", got, want, wire.Get("Baggage"))
	}

	// A new chain gets the new value.
	fresh := httptest.NewRequest("GET", "http://shop/", nil)
	fresh.Header.Set("X-User-Id", "u-1")
	if got := e.flags.Pin(fresh, nil); len(got) != 1 || got[0].Value != "v2" {
		t.Errorf("a new chain pins %v, want checkout=v2", got)
	}
}
