package k8s

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// The sidecar's memory (issue 11; README, "Memory"). The default memory limit of the
// injected container must hold a store filled to the default store.max_contexts, or the
// default configuration gets OOM-killed by its own data. The figures are measured by
// bench/store/memory.sh on the real binary, RSS with GOGC=100 (which lets the heap grow to
// twice what is live before collecting), and rounded up. The sidecar now collects at
// GOGC=50 unless GOGC is set (cmd/sidecar, issue 14), so they hold with room to spare;
// the injector sets no GOGC, so that default applies in pods:
//
//	GOMEMLIMIT = limit × memoryLimitPercent/100
//	           ≥ sidecarBaseBytes + max_contexts × contextBytes + trafficBytes
//
// TestDefaultMemoryLimit_HoldsMaxContexts holds DefaultConfig to it.
const (
	// sidecarBaseBytes is the RSS of a sidecar with an empty store: 33–35 MB measured.
	sidecarBaseBytes = 40 << 20
	// contextBytes is the RSS one small context (a few counters) adds, at its most: while
	// contexts are written through the admin API, 680–880 bytes measured (about 330 once
	// loaded at start-up).
	contextBytes = 1 << 10
	// trafficBytes is room for the proxies' connections and buffers under load: bench/proxy
	// measured 53 MB of RSS for the proxy with its store under 64 concurrent connections,
	// 20 MB of it the idle proxy.
	trafficBytes = 32 << 20
	// memoryLimitPercent of the container's memory limit is the Go runtime's soft limit,
	// GOMEMLIMIT: the collector works harder as the heap nears it, well before the kernel
	// kills the container at the limit. The rest is for what the runtime does not count:
	// the pages of the bbolt file and of the binary mapped into the process.
	memoryLimitPercent = 80
)

// goMemLimit returns the GOMEMLIMIT value for a container with resources r, and false if
// it has no memory limit (the runtime then has none either) or one below a KiB.
func goMemLimit(r corev1.ResourceRequirements) (string, bool) {
	q, ok := r.Limits[corev1.ResourceMemory]
	if !ok {
		return "", false
	}
	kib := q.Value() / 100 * memoryLimitPercent / 1024
	if kib <= 0 {
		return "", false
	}
	return strconv.FormatInt(kib, 10) + "KiB", true
}
