package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ctxprop/ctxprop/k8s"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestInject_SyncKey runs `sidecar inject` as a user does: its pods mount the fleet key
// unless -sync-key-secret=none, a blank flag is refused, and a second run changes nothing.
func TestInject_SyncKey(t *testing.T) {
	in := filepath.Join(t.TempDir(), "pod.yaml")
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - {name: app, image: app}\n"
	if err := os.WriteFile(in, []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	inject := func(t *testing.T, file string, flags ...string) (string, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := Run(t.Context(), append([]string{"inject", "-q", "-f", file}, flags...), &stdout, &stderr)
		return stdout.String(), err
	}

	tests := []struct {
		name    string
		flags   []string
		wantKey string // the Secret mounted, or none
	}{
		{name: "default", wantKey: k8s.DefaultSyncKeySecret},
		{name: "other secret", flags: []string{"-sync-key-secret=orders-key"}, wantKey: "orders-key"},
		{name: "none", flags: []string{"-sync-key-secret=none"}, wantKey: k8s.SyncKeyNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			once, err := inject(t, in, tt.flags...)
			if err != nil {
				t.Fatal(err)
			}
			var got corev1.Pod
			if err := yaml.UnmarshalStrict([]byte(once), &got); err != nil {
				t.Fatalf("output is not a Pod: %v\n%s", err, once)
			}
			if a, want := got.Annotations[k8s.AnnotationSyncKey], tt.wantKey; a != want {
				t.Errorf("annotation %s = %q, want %q", k8s.AnnotationSyncKey, a, want)
			}
			secret := ""
			for _, v := range got.Spec.Volumes {
				if v.Name == k8s.SyncKeyVolume && v.Secret != nil {
					secret = v.Secret.SecretName
				}
			}
			keyFile := ""
			for _, e := range got.Spec.InitContainers[len(got.Spec.InitContainers)-1].Env {
				if e.Name == "CTXPROP_SYNC_KEY_FILE" {
					keyFile = e.Value
				}
			}
			if tt.wantKey == k8s.SyncKeyNone {
				if secret != "" || keyFile != "" {
					t.Errorf("unkeyed pod mounts Secret %q with CTXPROP_SYNC_KEY_FILE %q", secret, keyFile)
				}
			} else if secret != tt.wantKey || keyFile != k8s.SyncKeyDir+"/"+k8s.SyncKeySecretKey {
				t.Errorf("pod mounts Secret %q with CTXPROP_SYNC_KEY_FILE %q, want %s at %s/%s", secret, keyFile, tt.wantKey, k8s.SyncKeyDir, k8s.SyncKeySecretKey)
			}

			again := filepath.Join(t.TempDir(), "once.yaml")
			if err := os.WriteFile(again, []byte(once), 0o644); err != nil {
				t.Fatal(err)
			}
			twice, err := inject(t, again, tt.flags...)
			if err != nil {
				t.Fatal(err)
			}
			if twice != once {
				t.Errorf("second run changed the output:\n%s\nfirst:\n%s", twice, once)
			}
		})
	}

	t.Run("blank flag refused", func(t *testing.T) {
		_, err := inject(t, in, "-sync-key-secret=")
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), `"none"`) {
			t.Fatalf("err = %v, want a usage error that points at none", err)
		}
	})
}

// TestInject_Interception runs `sidecar inject` with and without -interception: iptables by
// default (ctxprop-init before the sidecar, no HTTP_PROXY on the app), http-proxy on request
// (HTTP_PROXY, no init container), a pod's own annotation over the flag, and a mode that does
// not exist refused as a usage error naming both.
func TestInject_Interception(t *testing.T) {
	dir := t.TempDir()
	write := func(name, ann string) string {
		file := filepath.Join(dir, name)
		pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n" + ann + "spec:\n  containers:\n  - {name: app, image: app}\n"
		if err := os.WriteFile(file, []byte(pod), 0o644); err != nil {
			t.Fatal(err)
		}
		return file
	}
	plain := write("plain.yaml", "")
	asksIPTables := write("iptables.yaml", "  annotations: {ctxprop.io/interception: iptables}\n")
	tests := []struct {
		name     string
		file     string
		flags    []string
		wantMode k8s.Interception
	}{
		{name: "default", file: plain, wantMode: k8s.InterceptIPTables},
		{name: "flag http-proxy", file: plain, flags: []string{"-interception=http-proxy"}, wantMode: k8s.InterceptHTTPProxy},
		{name: "flag iptables", file: plain, flags: []string{"-interception=iptables"}, wantMode: k8s.InterceptIPTables},
		{name: "annotation over flag", file: asksIPTables, flags: []string{"-interception=http-proxy"}, wantMode: k8s.InterceptIPTables},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := Run(t.Context(), append([]string{"inject", "-q", "-f", tt.file}, tt.flags...), &stdout, &stderr); err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			var got corev1.Pod
			if err := yaml.UnmarshalStrict(stdout.Bytes(), &got); err != nil {
				t.Fatalf("output is not a Pod: %v\n%s", err, stdout.String())
			}
			if a, want := got.Annotations[k8s.AnnotationInterception], string(tt.wantMode); a != want {
				t.Errorf("annotation %s = %q, want %q", k8s.AnnotationInterception, a, want)
			}
			var names []string
			for _, c := range got.Spec.InitContainers {
				names = append(names, c.Name)
			}
			hasProxy := false
			for _, e := range got.Spec.Containers[0].Env {
				hasProxy = hasProxy || e.Name == "HTTP_PROXY"
			}
			wantNames, wantProxy := k8s.InitContainerName+" "+k8s.ContainerName, false
			if tt.wantMode == k8s.InterceptHTTPProxy {
				wantNames, wantProxy = k8s.ContainerName, true
			}
			if got := strings.Join(names, " "); got != wantNames {
				t.Errorf("init containers %q, want %q", got, wantNames)
			}
			if hasProxy != wantProxy {
				t.Errorf("app has HTTP_PROXY: %v, want %v", hasProxy, wantProxy)
			}
		})
	}

	t.Run("unknown mode refused", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := Run(t.Context(), []string{"inject", "-q", "-f", plain, "-interception=nftables"}, &stdout, &stderr)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), `"iptables"`) || !strings.Contains(err.Error(), `"http-proxy"`) {
			t.Fatalf("err = %v, want a usage error naming both modes", err)
		}
	})
}

// TestInject_InitContainerRunsIntercept: the init container the injector adds runs
// `sidecar intercept` with arguments and an environment that this binary's intercept
// accepts, reading the ConfigMap's config.hcl when there is one and the pod's
// interception annotations over it: its rules (as -dry-run prints them) exclude what the
// ConfigMap and the annotations exclude, and the sidecar's uid.
func TestInject_InitContainerRunsIntercept(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pod.yaml")
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n" +
		"    ctxprop.io/exclude-outbound-ports: \"5432\"\n" +
		"    ctxprop.io/exclude-outbound-cidrs: 169.254.169.254/32\n" +
		"spec:\n  containers:\n  - {name: app, image: app}\n"
	if err := os.WriteFile(file, []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := Run(t.Context(), []string{"inject", "-q", "-f", file}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var got corev1.Pod
	if err := yaml.UnmarshalStrict(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not a Pod: %v\n%s", err, stdout.String())
	}
	var init *corev1.Container
	for i, c := range got.Spec.InitContainers {
		if c.Name == k8s.InitContainerName {
			init = &got.Spec.InitContainers[i]
		}
	}
	if init == nil {
		t.Fatalf("no %s in the injected pod", k8s.InitContainerName)
	}
	for _, e := range init.Env {
		if e.ValueFrom != nil {
			t.Fatalf("%s takes %s from %v; this test sets only plain values", init.Name, e.Name, e.ValueFrom)
		}
		t.Setenv(e.Name, e.Value)
	}

	run := func(t *testing.T, args []string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := Run(t.Context(), append(args, "-dry-run"), &stdout, &stderr); err != nil {
			t.Fatalf("sidecar %s -dry-run: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	// The ConfigMap's file, where the init container mounts it, moved into the test's folder.
	args := slices.Clone(init.Args)
	i := slices.Index(args, k8s.ConfigDir+"/config.hcl")
	if i < 0 {
		t.Fatalf("%s args %q do not name %s/config.hcl", init.Name, args, k8s.ConfigDir)
	}
	conf := filepath.Join(dir, "config.hcl")
	args[i] = conf

	t.Run("without the ConfigMap", func(t *testing.T) {
		out := run(t, args)
		for _, want := range []string{"--uid-owner 65532", "5432", "169.254.169.254/32", "--to-ports 7404", "--to-ports 7401"} {
			if !strings.Contains(out, want) {
				t.Errorf("rules lack %q:\n%s", want, out)
			}
		}
	})
	t.Run("with the ConfigMap", func(t *testing.T) {
		if err := os.WriteFile(conf, []byte("outbound {\n  transparent_address = \"127.0.0.1:7499\"\n}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := run(t, args)
		for _, want := range []string{"--uid-owner 65532", "5432", "169.254.169.254/32", "--to-ports 7499"} {
			if !strings.Contains(out, want) {
				t.Errorf("rules lack %q:\n%s", want, out)
			}
		}
	})
}
