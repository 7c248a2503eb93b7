package main

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden are the imports the seam between the store, its consumers and the
// replication backends rules out (issue 15): admin, flags, sync and relay depend on small
// interfaces they own, in ctxstore's types, and meet the store and each other only here,
// in cmd/sidecar's wiring.
var forbidden = []struct {
	pkg, dep, why string
}{
	{"sync", "admin", "sync reports peers as ctxstore.PeerStatus; admin takes them through admin.Peers"},
	{"flags", "admin", "flags answers errors, bodies and event streams through httpapi"},
	{"sync", "localstore", "the engine reads and merges through sync.Store and sync.WatchStore"},
	{"flags", "localstore", "flags stores its flags through flags.Store"},
	{"admin", "localstore", "the API serves through admin.Store; the store's metrics are registered in cmd/sidecar"},
	{"httpapi", "admin", "httpapi is what admin and flags share"},
	{"ctxstore", "localstore", "ctxstore is the neutral vocabulary every store speaks"},
	{"ctxstore/replicatest", "localstore", "the contract tests run against any store"},
	{"ctxstore/replicatest", "sync", "the contract tests run against any backend"},
	{"ctxstore/replicatest", "relay", "the contract tests run against any backend"},
	{"relay", "localstore", "the relay reads, merges and follows the store through relay.Store, in ctxstore's types"},
	{"relay", "admin", "the relay reports through its Prometheus collector, which cmd/sidecar registers on admin's registry"},
}

// TestArchitecture_Seam asks the go command for the dependencies (direct and indirect, tests
// excluded) of each package and fails on a forbidden one.
func TestArchitecture_Seam(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH (%v); this test runs `go list -deps`", err)
	}
	const module = "github.com/ctxprop/ctxprop/"
	deps := map[string]map[string]bool{}
	for _, f := range forbidden {
		if deps[f.pkg] != nil {
			continue
		}
		out, err := exec.Command(goBin, "list", "-deps", module+f.pkg).Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("go list -deps %s: %v\n%s", f.pkg, err, stderr)
		}
		deps[f.pkg] = map[string]bool{}
		for _, line := range strings.Fields(string(out)) {
			deps[f.pkg][line] = true
		}
		if !deps[f.pkg][module+f.pkg] {
			t.Fatalf("go list -deps %s does not list the package itself:\n%s", f.pkg, out)
		}
	}
	for _, f := range forbidden {
		if deps[f.pkg][module+f.dep] {
			t.Errorf("package %s depends on %s: %s; find the import with `go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./%s | grep ctxprop/%s`",
				f.pkg, f.dep, f.why, f.pkg, f.dep)
		}
	}
}
