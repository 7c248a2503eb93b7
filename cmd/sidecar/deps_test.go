package main

import (
	"os/exec"
	"strings"
	"testing"
)

// testOnly are the modules and packages that tests use and the sidecar binary must not
// carry: linked in by a stray import of a non-test file, they grow the binary and put test
// servers and browsers in production (go.mod cannot tell test requirements apart).
var testOnly = []struct {
	path   string
	module bool // a module path; else a package import path or prefix
}{
	{"github.com/diegoholiveira/jsonlogic/v3", true}, // flags' differential against flagd
	{"pgregory.net/rapid", true},                     // property tests
	{"sigs.k8s.io/controller-runtime", true},         // envtest for the webhook tests
	{"k8s.io/client-go", true},                       // the webhook tests' API client
	{"github.com/chromedp/chromedp", true},           // headless Chromium for the web page
	{"github.com/chromedp/cdproto", true},
	{"github.com/open-feature/go-sdk", true},                      // the OFREP conformance tests
	{"github.com/envoyproxy/go-control-plane/pkg/server/", false}, // xDS test server
	{"github.com/envoyproxy/go-control-plane/pkg/cache/", false},
	{"testing", false},
	{"net/http/httptest", false},
}

// TestBinaryHasNoTestOnlyModules asks the go command what the sidecar binary links and
// fails if any test-only module or package is among it.
func TestBinaryHasNoTestOnlyModules(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH (%v); this test runs `go list -deps ./cmd/sidecar`", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}} {{with .Module}}{{.Path}}{{end}}", ".").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 100 {
		t.Fatalf("go list -deps listed %d packages; want the sidecar's hundreds:\n%s", len(lines), out)
	}
	for _, line := range lines {
		pkg, mod, _ := strings.Cut(line, " ")
		for _, bad := range testOnly {
			hit := mod == bad.path
			if !bad.module {
				hit = pkg == bad.path || (strings.HasSuffix(bad.path, "/") && strings.HasPrefix(pkg, bad.path))
			}
			if hit {
				t.Errorf("the sidecar binary links %s (module %q), which only tests need; "+
					"find the non-test import with `go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/sidecar | grep %s`",
					pkg, mod, bad.path)
			}
		}
	}
}
