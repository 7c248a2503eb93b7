package main

import (
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
)

// TestRun_TraceModes runs `sidecar run` as a user would, with tracing.mode from the
// environment, and sends requests through its inbound proxy to an app that records
// what it gets. The default takes part in W3C Trace Context with no collector: a
// request without a traceparent gets one, a valid one continues with a new parent-id
// and its tracestate read by Level 2's grammar. Passthrough adds nothing.
func TestRun_TraceModes(t *testing.T) {
	bin := buildSidecar(t)
	const callerTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	valid := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]$`)
	for _, tc := range []struct {
		name string
		env  map[string]string
		// want: the traceparent starts a trace for a request without one, and a
		// valid one gets a new parent-id.
		participates bool
	}{
		{"default", map[string]string{}, true},
		{"participate", map[string]string{"CTXPROP_TRACING_MODE": "participate"}, true},
		{"passthrough", map[string]string{"CTXPROP_TRACING_MODE": "passthrough"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan http.Header, 1)
			app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Clone() }))
			in := freePort(t)
			env := map[string]string{
				"CTXPROP_NODE_NAME": "n", "CTXPROP_STORE_PATH": filepath.Join(t.TempDir(), "n.db"),
				"CTXPROP_INBOUND_ADDRESS": in, "CTXPROP_INBOUND_APP": app, "CTXPROP_SYNC_ADDRESS": freePort(t),
			}
			for k, v := range tc.env {
				env[k] = v
			}
			startSidecar(t, bin, env)

			send(t, http.DefaultClient, "http://"+in+"/none", nil)
			h := <-seen
			if got := h.Get("Traceparent"); tc.participates != valid.MatchString(got) {
				t.Errorf("request without traceparent reached the app with %q; want a new trace = %v", got, tc.participates)
			}

			send(t, http.DefaultClient, "http://"+in+"/some", map[string]string{"Traceparent": callerTP, "Tracestate": "foo@=1,bar=2"})
			h = <-seen
			got := h.Get("Traceparent")
			switch {
			case !tc.participates:
				if got != callerTP || h.Get("Tracestate") != "foo@=1,bar=2" {
					t.Errorf("passthrough changed %q, %q to %q, %q", callerTP, "foo@=1,bar=2", got, h.Get("Tracestate"))
				}
			case !valid.MatchString(got) || got[3:35] != callerTP[3:35] || got[36:52] == callerTP[36:52]:
				t.Errorf("app got traceparent %q; want trace %s with a new parent-id", got, callerTP[3:35])
			case h.Get("Tracestate") != "foo@=1,bar=2":
				t.Errorf("app got tracestate %q, want the Level 2 list %q kept", h.Get("Tracestate"), "foo@=1,bar=2")
			}
		})
	}
}
