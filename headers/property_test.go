package headers

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"pgregory.net/rapid"
)

// TestOutbound_BaggageBudget_Property: whatever the app sends, correlated members are
// added after the app's own, the app's valid members go on unchanged and in order,
// the limits hold, and every member of ours that is not added is reported.
func TestOutbound_BaggageBudget_Property(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, MaxBaggageMembers+8).Draw(t, "members")
		valueLen := rapid.IntRange(0, 300).Draw(t, "valueLen")
		var app []string
		for i := range n {
			app = append(app, fmt.Sprintf("k%d=%s", i, strings.Repeat("v", valueLen)))
		}
		lines := rapid.IntRange(1, 3).Draw(t, "lines")
		in := http.Header{Traceparent: {specTP}}
		for i := range lines {
			lo, hi := i*len(app)/lines, (i+1)*len(app)/lines
			in[Baggage] = append(in[Baggage], strings.Join(app[lo:hi], " , "))
		}
		entry := Entry{Name: rapid.StringMatching(`[a-z0-9.:_-]{1,40}`).Draw(t, "name")}
		for i := range rapid.IntRange(0, 3).Draw(t, "flags") {
			entry.Flags = append(entry.Flags, Flag{Name: fmt.Sprint("f", i), Value: rapid.StringMatching(`[ -~]{0,30}`).Draw(t, "value")})
		}
		c := NewCorrelator(4, 0)
		tid, _ := trace.TraceIDFromHex(specTraceID)
		defer c.Begin(tid, entry)()

		o, errs := ReadOutbound(in, Options{Pinnable: pinAll}, c)
		out := in.Clone()
		o.Apply(out, trace.SpanContext{})

		sent := strings.Join(out[Baggage], ",")
		var members []string
		if sent != "" {
			members = strings.Split(sent, ",")
		}
		if len(members) > MaxBaggageMembers || len(sent) > MaxBaggageBytes {
			t.Fatalf("sent %d members, %d bytes", len(members), len(sent))
		}
		kept := 0
		for kept < len(members) && kept < len(app) && strings.TrimSpace(members[kept]) == app[kept] {
			kept++
		}
		if appBytes := len(strings.Join(app, ",")); len(app) <= MaxBaggageMembers && appBytes <= MaxBaggageBytes && kept != len(app) {
			t.Fatalf("the app's %d members (%d bytes) fit, only %d went on in order", len(app), appBytes, kept)
		}
		for _, m := range members[kept:] {
			if !strings.HasPrefix(m, "ctx.") {
				t.Fatalf("app member %q after ours or out of order", m)
			}
		}
		full := 0
		for _, err := range errs {
			if errors.Is(err, ErrBaggageFull) {
				full++
			}
		}
		if got, want := len(members)-kept+full, 1+len(entry.Flags); got != want {
			t.Fatalf("%d of ours added and %d reported full, want %d in all", len(members)-kept, full, want)
		}
	})
}
