package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// isolate points every listener and the store of a sidecar started by Run at loopback
// ports of its own and a temporary file.
func isolate(t *testing.T) {
	t.Setenv("CTXPROP_ADMIN_ADDRESS", "127.0.0.1:0")
	t.Setenv("CTXPROP_INBOUND_ADDRESS", "127.0.0.1:0")
	t.Setenv("CTXPROP_OUTBOUND_ADDRESS", "127.0.0.1:0")
	t.Setenv("CTXPROP_SYNC_ADDRESS", "127.0.0.1:0")
	t.Setenv("CTXPROP_STORE_PATH", filepath.Join(t.TempDir(), "ctx.db"))
}

func TestRun_MissingConfig(t *testing.T) {
	isolate(t)
	missing := filepath.Join(t.TempDir(), "absent.hcl")
	var stderr bytes.Buffer
	err := Run(context.Background(), []string{"run", "-config", missing}, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), "absent.hcl") {
		t.Fatalf("Run with a missing config = %v; want an error naming the file", err)
	}
}

func TestRun_ConfigOptional_StartsAndStops(t *testing.T) {
	isolate(t)
	missing := filepath.Join(t.TempDir(), "absent.hcl")
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"run", "-config", missing, "-config-optional"}, &stderr, &stderr) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "sidecar ready") {
		select {
		case err := <-done:
			t.Fatalf("Run ended before ready: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after SIGTERM-like cancel = %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "config file absent") {
		t.Errorf("no log line about the absent config:\n%s", stderr.String())
	}
}

// TestRun_AdminAllowedHosts: admin.allowed_hosts reaches the admin listener: a Host it
// lists is answered, any other name is refused.
func TestRun_AdminAllowedHosts(t *testing.T) {
	isolate(t)
	t.Setenv("CTXPROP_ADMIN_ALLOWED_HOSTS", "admin.test")
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"run", "-config", filepath.Join(t.TempDir(), "absent.hcl"), "-config-optional"}, &stderr, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	addr := regexp.MustCompile(`sidecar ready: admin=(127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(20 * time.Second)
	var m []string
	for m = addr.FindStringSubmatch(stderr.String()); m == nil; m = addr.FindStringSubmatch(stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	for host, want := range map[string]int{"admin.test": http.StatusOK, "other.test": http.StatusForbidden, "localhost": http.StatusOK} {
		req, err := http.NewRequest("GET", "http://"+m[1]+"/v1/contexts", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d %s, want %d", host, resp.StatusCode, body, want)
		}
	}
}
