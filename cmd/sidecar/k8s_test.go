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
			for _, e := range got.Spec.InitContainers[0].Env {
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
