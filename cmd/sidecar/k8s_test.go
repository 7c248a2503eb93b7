package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
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
