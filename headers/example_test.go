package headers_test

import (
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
)

// The proxy's use of the package: a request from another sidecar of the fleet goes to
// the app with its context, and the app's call to a third pod, which forwards only
// traceparent, leaves with the context's baggage again, signed for the next sidecar.
func Example() {
	// Every sidecar of the fleet has the same secret (sync.key_file).
	signer, err := headers.NewSigner([][]byte{[]byte("the fleet's 32-byte secret......")})
	if err != nil {
		panic(err)
	}
	opt := headers.Options{
		Tracing:  true,
		Signer:   signer,
		Pinnable: func(flag string) bool { return flag == "new-ui" }, // flags.pinned
	}
	corr := headers.NewCorrelator(10000, 5*time.Minute)

	// Inbound: another pod's sidecar → the app. Its ctx-sig vouches for the members.
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	received := http.Header{}
	received.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	received.Set("Baggage", "ctx.name=checkout-7,ctx.flag.new-ui=on")
	received.Set("Ctx-Sig", signer.Sign(tid, "checkout-7", []headers.Flag{{Name: "new-ui", Value: "on"}}, time.Now()))
	received.Set("Ctx-Ops", `incr;key="orders"`) // from another pod: not trusted
	in, errs := headers.ReadInbound(received, opt, headers.Source{})
	fmt.Println("name:", in.Name, "flags:", in.Flags, "errors:", errs)

	// The same members from a caller outside the fleet are removed.
	forged := received.Clone()
	forged.Del("Ctx-Sig")
	untrusted, _ := headers.ReadInbound(forged, opt, headers.Source{})
	fmt.Printf("unsigned: name %q, %d members removed\n", untrusted.Name, untrusted.Refused[headers.Unsigned])

	// The proxy starts its span from in.Parent; here is the span context it got.
	child := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: in.Parent.TraceID(), SpanID: trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
		TraceFlags: in.Parent.TraceFlags(),
	})
	toApp := received.Clone()
	in.Apply(toApp, child)
	fmt.Println("to app:", toApp.Get("Traceparent"), toApp.Get("Ctx-Flag-New-Ui"), toApp.Values("Ctx-Ops"))
	release := corr.Begin(child.TraceID(), in.Entry())
	defer release()

	// Outbound: the app calls another pod, forwarding only traceparent.
	fromApp := http.Header{}
	fromApp.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01")
	fromApp.Set("Ctx-Ops", `add;set="steps";member="paid"`)
	out, errs := headers.ReadOutbound(fromApp, opt, corr)
	fmt.Println("ops for", out.Name+":", len(out.Ops), "errors:", errs)
	toPeer := fromApp.Clone()
	out.Apply(toPeer, trace.SpanContext{}) // no span: the traceparent goes as it is
	fmt.Println("to peer:", toPeer.Get("Baggage"), toPeer.Values("Ctx-Ops"), "signed:", toPeer.Get("Ctx-Sig") != "")
	// Output:
	// name: checkout-7 flags: [{new-ui on}] errors: [ctx-ops: ctx-ops from another pod dropped: set trust_inbound_ops = true to accept ops from outside the pod]
	// unsigned: name "", 2 members removed
	// to app: 00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01 on []
	// ops for checkout-7: 1 errors: []
	// to peer: ctx.name=checkout-7,ctx.flag.new-ui=on [] signed: true
}
