package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The request path arms no timer it does not need (issue 3): no response-header
// timeout unless one is configured, and no idle timeout on the pool to the local app.
func TestNew_TransportTimers(t *testing.T) {
	cases := []struct {
		name        string
		opt         Options
		wantHeader  time.Duration
		wantInIdle  time.Duration
		wantOutIdle time.Duration
	}{
		{"defaults", Options{App: "127.0.0.1:8080"}, 0, 0, DefaultIdleTimeout},
		{"configured", Options{App: "127.0.0.1:8080", ResponseHeaderTimeout: 3 * time.Second, IdleTimeout: time.Minute}, 3 * time.Second, 0, time.Minute},
		{"negative", Options{App: "127.0.0.1:8080", ResponseHeaderTimeout: -1, IdleTimeout: -1}, 0, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := New(c.opt)
			if err != nil {
				t.Fatal(err)
			}
			for _, tr := range []*http.Transport{p.inT.h1, p.inT.h2c, p.outT.h1, p.outT.h2c} {
				if got, want := tr.ResponseHeaderTimeout, c.wantHeader; got != want {
					t.Errorf("ResponseHeaderTimeout = %s, want %s", got, want)
				}
			}
			for _, tr := range []*http.Transport{p.inT.h1, p.inT.h2c} {
				if got, want := tr.IdleConnTimeout, c.wantInIdle; got != want {
					t.Errorf("inbound IdleConnTimeout = %s, want %s", got, want)
				}
			}
			for _, tr := range []*http.Transport{p.outT.h1, p.outT.h2c} {
				if got, want := tr.IdleConnTimeout, c.wantOutIdle; got != want {
					t.Errorf("outbound IdleConnTimeout = %s, want %s", got, want)
				}
			}
		})
	}
}

// Without a response-header limit, a 504 does not name one.
func TestDescribeUpstreamError_Timeout(t *testing.T) {
	err := fmt.Errorf("round trip: %w", context.DeadlineExceeded)
	for _, c := range []struct {
		limit time.Duration
		want  string
	}{
		{0, "did not answer in time"},
		{2 * time.Second, "did not answer within 2s"},
	} {
		status, msg := describeUpstreamError(err, "127.0.0.1:8080", true, Options{ResponseHeaderTimeout: c.limit})
		if got, want := status, http.StatusGatewayTimeout; got != want {
			t.Errorf("limit %s: status %d, want %d", c.limit, got, want)
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("limit %s: message %q, want it to say %q", c.limit, msg, c.want)
		}
	}
}
