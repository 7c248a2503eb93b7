package k8s

import (
	"strconv"
	"strings"
	"testing"

	"github.com/ctxprop/ctxprop/config"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// injectedSidecar injects a one-container pod with annotations ann by DefaultConfig and
// returns the sidecar container.
func injectedSidecar(t *testing.T, ann map[string]string) corev1.Container {
	t.Helper()
	meta := metav1.ObjectMeta{Annotations: map[string]string{AnnotationInject: "true"}}
	for k, v := range ann {
		meta.Annotations[k] = v
	}
	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop/orders"}}}
	if _, err := DefaultConfig().InjectPod(&meta, &spec); err != nil {
		t.Fatal(err)
	}
	return spec.InitContainers[containerIndex(spec.InitContainers, ContainerName)]
}

// goMemLimitBytes reads the GOMEMLIMIT of a container as the Go runtime would (the form
// the injector writes: a number of KiB).
func goMemLimitBytes(t *testing.T, c corev1.Container) int64 {
	t.Helper()
	v := envValue(c.Env, "GOMEMLIMIT")
	kib, err := strconv.ParseInt(strings.TrimSuffix(v, "KiB"), 10, 64)
	if err != nil || !strings.HasSuffix(v, "KiB") {
		t.Fatalf("GOMEMLIMIT = %q, want a number of KiB", v)
	}
	return kib << 10
}

// TestDefaultMemoryLimit_HoldsMaxContexts: the memory limit the injector gives the sidecar
// by default holds a store filled to the default store.max_contexts, with the arithmetic
// of memory.go (and the README): GOMEMLIMIT, set by the injector to memoryLimitPercent of
// the limit so that the collector works before the kernel's OOM killer does, is at least
// the empty sidecar plus max_contexts small contexts plus room for traffic.
func TestDefaultMemoryLimit_HoldsMaxContexts(t *testing.T) {
	sidecar := injectedSidecar(t, nil)
	limit := sidecar.Resources.Limits.Memory()
	request := sidecar.Resources.Requests.Memory()
	soft := goMemLimitBytes(t, sidecar)
	maxContexts := int64(config.DefaultConfig().Store.MaxContexts)
	need := sidecarBaseBytes + maxContexts*contextBytes + trafficBytes
	t.Logf("limit %s, GOMEMLIMIT %d MiB; need %d MiB = %d MiB base + %d contexts × %d B + %d MiB traffic",
		limit, soft>>20, need>>20, sidecarBaseBytes>>20, maxContexts, contextBytes, trafficBytes>>20)

	if got, want := soft, limit.Value()*memoryLimitPercent/100; got > want || want-got >= 100<<10 {
		t.Errorf("GOMEMLIMIT = %d bytes, want %d%% of the limit %s (%d bytes)", got, memoryLimitPercent, limit, want)
	}
	if soft < need {
		t.Errorf("the default memory limit %s gives GOMEMLIMIT %d MiB, less than the %d MiB a store at the default store.max_contexts (%d) needs: raise the limit in k8s.DefaultConfig or lower store.max_contexts, and the README's arithmetic with it",
			limit, soft>>20, need>>20, maxContexts)
	}
	if request.Value() < sidecarBaseBytes || request.Cmp(*limit) > 0 {
		t.Errorf("memory request %s: want at least an empty sidecar (%d MiB) and at most the limit %s", request, sidecarBaseBytes>>20, limit)
	}
}

// TestGOMEMLIMIT_FollowsTheLimit: a pod's memory-limit annotation moves GOMEMLIMIT with
// the limit; without a limit, or with one too small for a KiB of it, there is none.
func TestGOMEMLIMIT_FollowsTheLimit(t *testing.T) {
	for _, tc := range []struct{ limit, want string }{
		{"256Mi", "209715KiB"},
		{"1Gi", "838860KiB"},
		{"500M", "390625KiB"},
		{"1", ""},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			sidecar := injectedSidecar(t, map[string]string{AnnotationMemoryLimit: tc.limit})
			if got := envValue(sidecar.Env, "GOMEMLIMIT"); got != tc.want {
				t.Errorf("GOMEMLIMIT = %q with memory-limit %s, want %q", got, tc.limit, tc.want)
			}
		})
	}
	cfg := DefaultConfig()
	delete(cfg.Resources.Limits, corev1.ResourceMemory)
	meta := metav1.ObjectMeta{Annotations: map[string]string{AnnotationInject: "true"}}
	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}
	if _, err := cfg.InjectPod(&meta, &spec); err != nil {
		t.Fatal(err)
	}
	sidecar := spec.InitContainers[containerIndex(spec.InitContainers, ContainerName)]
	if i := envIndex(sidecar.Env, "GOMEMLIMIT"); i >= 0 {
		t.Errorf("GOMEMLIMIT = %q without a memory limit, want none", sidecar.Env[i].Value)
	}
}
