package k8s

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestKubeToolsBuildSaysWhatItDoes runs hack/kube/build.sh (make kube-tools) into a new folder
// holding a copy of the built kube-apiserver and no etcd, so that it skips one binary and
// builds the other, and wants every step announced with what it does and roughly how long
// it takes cold, and closed with how long it took: a cold build runs for up to 20 minutes,
// in which go itself prints only "go: downloading" lines. etcd is the step rebuilt because
// it is the short one (seconds with a warm build cache, 1-3 minutes cold).
func TestKubeToolsBuildSaysWhatItDoes(t *testing.T) {
	src, err := assetsDir()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	copyFile(t, filepath.Join(src, "kube-apiserver"), filepath.Join(out, "kube-apiserver"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("..", "hack", "kube", "build.sh"), out)
	b, err := cmd.CombinedOutput()
	got := string(b)
	if err != nil {
		t.Fatalf("hack/kube/build.sh: %v\n%s", err, got)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`step 1/3: downloading the modules .*\n.*\(cold: \d+ modules, \d+ MB .*minutes`),
		regexp.MustCompile(`step 1/3: modules ready in \d+s`),
		regexp.MustCompile(`step 2/3: kube-apiserver v[0-9.]+ already in .*, skipping`),
		regexp.MustCompile(`step 3/3: building etcd [0-9.]+ into .*\n.*\(cold: .*minutes`),
		regexp.MustCompile(`compiling etcd: \d{3,} packages`),
		regexp.MustCompile(`step 3/3: etcd built in \d+s`),
	} {
		if !want.MatchString(got) {
			t.Errorf("output lacks %s:\n%s", want, got)
		}
	}
	v, err := exec.CommandContext(ctx, filepath.Join(out, "etcd"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(v), "etcd Version: ") {
		t.Errorf("the built etcd --version: %v\n%s", err, v)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatalf("%v: run make kube-tools (hack/kube/build.sh) first, or set KUBEBUILDER_ASSETS", err)
	}
	defer in.Close()
	o, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(o, in); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
}
