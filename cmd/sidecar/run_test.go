package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
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
	t.Setenv("CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS", "127.0.0.1:0")
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

// TestRun_RefusesEnvironment: a variable that is not a setting, or a setting that cannot
// work, stops `sidecar run` before it opens anything, with the variable named.
func TestRun_RefusesEnvironment(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"CTXPROP_STORE_PAHT", "/var/lib/ctxprop/ctx.db", "CTXPROP_STORE_PAHT is not a ctxprop setting; did you mean CTXPROP_STORE_PATH? (config attributes are CTXPROP_<BLOCK>_<ATTRIBUTE>)"},
		{"CTXPROP_FLAGS_POLL_INTERVAL", "-1s", "CTXPROP_FLAGS_POLL_INTERVAL: flags.poll_interval is -1s; want more than 0"},
		{"CTXPROP_FLAGS_POLL_INTERVAL", "0", "CTXPROP_FLAGS_POLL_INTERVAL: flags.poll_interval is 0s; want more than 0"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			isolate(t)
			t.Setenv(tc.name, tc.value)
			// The old code started and ran until cancelled: the deadline ends that.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var stderr syncBuffer
			err := Run(ctx, []string{"run", "-config", "-"}, &stderr, &stderr)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error starting %q\n%s", err, tc.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "sidecar ready") {
				t.Errorf("the sidecar started before refusing its environment:\n%s", stderr.String())
			}
		})
	}
}

// isolatedEnv is the environment of a child `sidecar run` on loopback ports of its own
// and a temporary store, the admin API on adminAddr.
func isolatedEnv(t *testing.T, adminAddr string) []string {
	return append(os.Environ(),
		"CTXPROP_ADMIN_ADDRESS="+adminAddr,
		"CTXPROP_INBOUND_ADDRESS=127.0.0.1:0",
		"CTXPROP_OUTBOUND_ADDRESS=127.0.0.1:0",
		"CTXPROP_OUTBOUND_TRANSPARENT_ADDRESS=127.0.0.1:0",
		"CTXPROP_SYNC_ADDRESS=127.0.0.1:0",
		"CTXPROP_STORE_PATH="+filepath.Join(t.TempDir(), "ctx.db"),
	)
}

// TestRun_Binary_UnknownVariable runs the real binary as a container would: a misspelt
// override ends it with exit status 1 and the message on stderr.
func TestRun_Binary_UnknownVariable(t *testing.T) {
	bin := buildSidecar(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "-config", "-")
	cmd.Env = append(isolatedEnv(t, "127.0.0.1:0"), "CTXPROP_STORE_PAHT=/var/lib/ctxprop/ctx.db")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("sidecar run = %v, want exit status 1\n%s", err, out.String())
	}
	want := "sidecar: CTXPROP_STORE_PAHT is not a ctxprop setting; did you mean CTXPROP_STORE_PATH? (config attributes are CTXPROP_<BLOCK>_<ATTRIBUTE>)\n"
	if got := out.String(); got != want {
		t.Errorf("output\n%q\nwant\n%q", got, want)
	}
}

// TestRun_Binary_CtlVariableAccepted runs `sidecar run` and `sidecar ctl` from one
// environment, as in the sidecar's container: CTXPROP_ADMIN_ADDR, which ctl reads, is not
// taken for a misspelt setting, and ctl reaches the sidecar through it.
func TestRun_Binary_CtlVariableAccepted(t *testing.T) {
	bin := buildSidecar(t)
	adminAddr := freePort(t)
	env := append(isolatedEnv(t, adminAddr), "CTXPROP_ADMIN_ADDR=http://"+adminAddr)
	run := exec.Command(bin, "run", "-config", "-")
	run.Env = env
	logs := &logTail{}
	run.Stdout, run.Stderr = logs, logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	t.Cleanup(func() {
		_ = run.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctl := exec.Command(bin, "ctl", "list")
		ctl.Env = env
		out, err := ctl.CombinedOutput()
		if err == nil {
			break
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("sidecar run exited: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar ctl list still fails after 30s: %v\n%s\nsidecar:\n%s", err, out, logs)
		}
		time.Sleep(50 * time.Millisecond)
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
