package discovery_test

import (
	"os/exec"
	"strings"
	"testing"
)

// Peer discovery uses plain DNS and xDS so the sidecar needs no Kubernetes API access
// (and no RBAC) to find its peers; this keeps client libraries from creeping in.
func TestDeps_NoKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "github.com/ctxprop/ctxprop/sync/discovery").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/") || strings.HasPrefix(pkg, "sigs.k8s.io/") {
			t.Errorf("sync/discovery depends on %s", pkg)
		}
	}
}
