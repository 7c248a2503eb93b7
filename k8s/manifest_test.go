package k8s

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func offlineConfig() Config {
	cfg := DefaultConfig()
	cfg.Image = "example.com/ctxprop/sidecar:1.0.0"
	cfg.InjectUnannotated = true
	return cfg
}

func TestInjectManifests_Golden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "workloads.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	results, err := offlineConfig().InjectManifests(bytes.NewReader(in), &out)
	if err != nil {
		t.Fatalf("InjectManifests: %v", err)
	}
	golden := filepath.Join("testdata", "workloads.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./k8s -run Golden -update to create it)", err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("output differs from %s (rerun with -update and review the diff):\n%s", golden, got)
	}

	wantResults := []struct {
		kind, name string
		doc        int
		outcome    Outcome
	}{
		{"Deployment", "orders", 1, Injected},
		{"StatefulSet", "ledger", 2, Injected},
		{"DaemonSet", "agent", 3, Injected},
		{"DaemonSet", "node-exporter", 4, Skipped},
		{"Job", "reindex", 5, Injected},
		{"CronJob", "nightly", 6, Injected},
		{"Pod", "debug", 7, Skipped},
		{"Pod", "scratch", 8, Injected},
		{"ReplicaSet", "legacy", 10, Injected},
	}
	if got, want := len(results), len(wantResults); got != want {
		t.Fatalf("got %d results, want %d: %+v", got, want, results)
	}
	for i, w := range wantResults {
		r := results[i]
		if r.Kind != w.kind || r.Name != w.name || r.Doc != w.doc || r.Outcome != w.outcome {
			t.Errorf("result %d = %s %q doc %d %v, want %s %q doc %d %v", i, r.Kind, r.Name, r.Doc, r.Outcome, w.kind, w.name, w.doc, w.outcome)
		}
	}
}

// TestInjectManifests_Unchanged checks the byte-for-byte pass-through of the documents the
// injector leaves alone, and that the injected ones keep fields k8s.io/api does not know.
func TestInjectManifests_Unchanged(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "workloads.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := offlineConfig().InjectManifests(bytes.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	inDocs, outDocs := strings.Split(string(in), "\n---\n"), strings.Split(out.String(), "---\n")
	if got, want := len(outDocs), len(inDocs); got != want {
		t.Fatalf("%d documents out, %d in", got, want)
	}
	for _, i := range []int{0, 9} { // the Namespace with its comments, the Service
		if got, want := strings.TrimSpace(outDocs[i]), strings.TrimSpace(inDocs[i]); got != want {
			t.Errorf("document %d changed:\n%s\nwant:\n%s", i, got, want)
		}
	}
	if !strings.Contains(outDocs[8], "someFutureField: kept as is") {
		t.Errorf("unknown container field dropped from the injected Pod:\n%s", outDocs[8])
	}
}

func TestInjectManifests_Idempotent(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "workloads.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := offlineConfig()
	var once, twice bytes.Buffer
	if _, err := cfg.InjectManifests(bytes.NewReader(in), &once); err != nil {
		t.Fatal(err)
	}
	results, err := cfg.InjectManifests(bytes.NewReader(once.Bytes()), &twice)
	if err != nil {
		t.Fatal(err)
	}
	if once.String() != twice.String() {
		t.Errorf("second run changed the output:\n%s", twice.String())
	}
	for _, r := range results {
		if r.Outcome == Injected {
			t.Errorf("second run injected %s %q again", r.Kind, r.Name)
		}
	}
}

// TestInjectManifests_LineBreaks: CR LF and lone CR are line breaks to YAML, so they are to the
// injector too. It used to drop one CR before an LF and add an LF after a final CR, so a second
// run changed the output again (found by FuzzInjectManifests), and it did not split documents
// at a "---" between lone CRs, so injecting the first lost the others.
func TestInjectManifests_LineBreaks(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: [{name: a, image: b}]\n"
	svc := "apiVersion: v1\nkind: Service\nmetadata:\n  name: s  # kept\n"
	crlf := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	cr := func(s string) string { return strings.ReplaceAll(s, "\n", "\r") }
	tests := []struct {
		name, in string
		want     []string // in the output, in this order
		injected int
	}{
		{name: "CR CR LF", in: "0\r\r\n", want: []string{"0\n\n"}},
		{name: "CR at the end", in: "0\r", want: []string{"0\n"}},
		{name: "CR LF file", in: crlf(svc + "---\n" + pod), want: []string{svc + "---\n", "ctxprop.io/status: injected"}, injected: 1},
		{name: "CR file", in: cr(pod + "---\n" + svc), want: []string{"ctxprop.io/status: injected", "---\n" + svc}, injected: 1},
		{name: "mixed", in: "kind: A\r\n---\rkind: B\r\r---\n" + crlf(pod), want: []string{"kind: A\n---\nkind: B\n\n---\n", "name: p"}, injected: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := offlineConfig()
			var once, twice bytes.Buffer
			results, err := cfg.InjectManifests(strings.NewReader(tt.in), &once)
			if err != nil {
				t.Fatal(err)
			}
			out := once.String()
			if strings.Contains(out, "\r") {
				t.Errorf("output has a CR: %q", out)
			}
			rest := out
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output %q lacks %q (or not in order)", out, w)
				}
				rest = rest[i+len(w):]
			}
			n := 0
			for _, r := range results {
				if r.Outcome == Injected {
					n++
				}
			}
			if got, want := n, tt.injected; got != want {
				t.Errorf("%d workloads injected, want %d: %+v", got, want, results)
			}
			if _, err := cfg.InjectManifests(bytes.NewReader(once.Bytes()), &twice); err != nil {
				t.Fatal(err)
			}
			if got, want := twice.String(), out; got != want {
				t.Errorf("second run = %q, want the first output %q", got, want)
			}
		})
	}
}

func TestInjectManifests_Errors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"bad yaml", "kind: [Pod\n", "document 0"},
		{"bad annotation", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    ctxprop.io/app-port: http\nspec:\n  containers: [{name: a, image: b}]\n", `annotation ctxprop.io/app-port="http"`},
		{"no template", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec: {}\n", `Deployment "d" has no spec.template`},
		{"template of wrong type", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\nspec:\n  template:\n    spec:\n      containers: 3\n", `Job "j": pod template`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := offlineConfig().InjectManifests(strings.NewReader(tt.in), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestInjectManifests_PodShape decodes the injected Pod of the golden input and checks the
// pieces the kubelet relies on.
func TestInjectManifests_PodShape(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - {name: app, image: app}\n"
	var out bytes.Buffer
	if _, err := offlineConfig().InjectManifests(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(out.Bytes(), &pod); err != nil {
		t.Fatalf("output is not a valid Pod: %v\n%s", err, out.String())
	}
	checkInjected(t, &pod.ObjectMeta, &pod.Spec)
}

// FuzzInjectManifests feeds arbitrary YAML streams to the offline injector: it must never
// panic, and whatever it accepts it must leave alone on a second pass.
func FuzzInjectManifests(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "workloads.yaml")); err == nil {
		f.Add(string(b))
	}
	f.Add("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}]}\n")
	f.Add("apiVersion: batch/v1\nkind: CronJob\nspec: {jobTemplate: {spec: {template: {}}}}\n")
	f.Add("apiVersion: v1\nkind: List\nitems: [1, {kind: Pod, apiVersion: v1, spec: {}}]\n")
	f.Add("---\n---\n# only a comment\n")
	f.Fuzz(func(t *testing.T, in string) {
		cfg := offlineConfig()
		var once bytes.Buffer
		if _, err := cfg.InjectManifests(strings.NewReader(in), &once); err != nil {
			return
		}
		var twice bytes.Buffer
		if _, err := cfg.InjectManifests(bytes.NewReader(once.Bytes()), &twice); err != nil {
			t.Fatalf("second pass failed: %v\ninput:\n%s\nfirst output:\n%s", err, in, once.String())
		}
		if once.String() != twice.String() {
			t.Fatalf("second pass changed the output\ninput:\n%s\nfirst:\n%s\nsecond:\n%s", in, once.String(), twice.String())
		}
	})
}
