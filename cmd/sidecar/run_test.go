package main

import (
	"bytes"
	"context"
	"path/filepath"
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
