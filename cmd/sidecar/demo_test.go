package main

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `sidecar demo` as a newcomer would and checks what it claims: replicated
// state, fleet-wide telemetry, checkpoints read everywhere, and a pinned flag that holds
// across a flip.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := Run(ctx, []string{"demo", "-requests", "5"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"deploys = 3 on every sidecar",
		"http.requests = 15 on every sidecar",
		"frontend's and orders' apps forwarded only traceparent",
		`steps = {"frontend":"done","orders":"done","payments":"done"}`,
		"no context forged-ctx exists",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("demo output lacks %q\n%s", want, got)
		}
	}
	// The admin APIs are on the random ports of the table; 7400 is named only as the port of
	// `sidecar run`.
	admins := regexp.MustCompile(`(?m)^  (frontend|orders|payments)\s+\S+\s+\S+\s+\S+\s+(127\.0\.0\.1:\d+)\s`).FindAllStringSubmatch(got, -1)
	if len(admins) != 3 {
		t.Fatalf("found %d admin API addresses in the table, want 3\n%s", len(admins), got)
	}
	closing := got[strings.LastIndex(got, "\nDone."):]
	for _, m := range admins {
		if want := m[1] + " http://" + m[2]; !strings.Contains(closing, want) {
			t.Errorf("closing lines lack %q:\n%s", want, closing)
		}
	}
	for _, line := range strings.Split(got, "\n") {
		if strings.Contains(line, "7400") && !strings.Contains(line, "`sidecar run`") {
			t.Errorf("line names 7400 although the demo's admin APIs are elsewhere: %q", line)
		}
	}
	for _, row := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s+A\s+payments\s+false\s`),
		regexp.MustCompile(`(?m)^\s+B\s+payments\s+true\s`),
	} {
		if !row.MatchString(got) {
			t.Errorf("demo output lacks a row matching %s\n%s", row, got)
		}
	}
}

// TestDemo_Clusters runs `sidecar demo -clusters 2`: two clusters of sidecars, not peered
// with each other, share a context through the embedded NATS, and the demo says so only
// once every sidecar reads every write.
func TestDemo_Clusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := Run(ctx, []string{"demo", "-clusters", "2"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	got := out.String()
	rows := regexp.MustCompile(`(?m)^  cluster-[ab]-[01]\s+20\s+cluster-a,cluster-b\s+2 done\s+(59m|1h0m)\S*\s+on$`).FindAllString(got, -1)
	if len(rows) != 4 {
		t.Errorf("found %d sidecars reading everything, want 4\n%s", len(rows), got)
	}
	if !strings.Contains(got, "Done: orders = 20 on every sidecar of every cluster.") {
		t.Errorf("no closing line\n%s", got)
	}
	for _, bad := range [][]string{{"demo", "-clusters", "1"}, {"demo", "-clusters", "9"}} {
		if err := Run(ctx, bad, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "want 2 to 8 clusters") {
			t.Errorf("%v: err %v, want one asking for 2 to 8 clusters", bad, err)
		}
	}
}
