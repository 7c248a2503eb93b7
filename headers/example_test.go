package headers_test

import (
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
)

// The proxy's use of the package: a request from another pod goes to the app with
// its context, and the app's call to a third pod, which forwards only traceparent,
// leaves with the context's baggage again.
func Example() {
	opt := headers.Options{Tracing: true}
	corr := headers.NewCorrelator(10000, 5*time.Minute)

	// Inbound: another pod → the app.
	received := http.Header{}
	received.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	received.Set("Baggage", "ctx.name=checkout-7,ctx.flag.new-ui=on")
	received.Set("Ctx-Ops", `incr;key="orders"`) // from another pod: not trusted
	in, errs := headers.ReadInbound(received, opt)
	fmt.Println("name:", in.Name, "flags:", in.Flags, "errors:", errs)

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
	fmt.Println("to peer:", toPeer.Get("Baggage"), toPeer.Values("Ctx-Ops"))
	// Output:
	// name: checkout-7 flags: [{new-ui on}] errors: [ctx-ops: ctx-ops from another pod dropped: set trust_inbound_ops = true to accept ops from outside the pod]
	// to app: 00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01 on []
	// ops for checkout-7: 1 errors: []
	// to peer: ctx.name=checkout-7,ctx.flag.new-ui=on []
}
