package main

import (
	"os"
	"runtime/debug"
	"strconv"
)

// defaultGCPercent is the garbage collector's target when GOGC is not set: the heap may
// grow by half of what is live before a collection, not by all of it (Go's default, 100).
// A sidecar's live heap is small (about 6 MB under load without a large store) and its
// binary's pages take some 30 MB of RSS already, so Go's headroom was what took it past
// 50 MB under sustained load; at 50 it stays near 47 MB. The price is a few percent more
// CPU per request under saturation (about 4 %) (issue 14, BENCHMARKS.md "RSS over time"). GOGC in the
// environment wins, as does GOMEMLIMIT for the soft limit (the injector sets it; README
// "Memory").
const defaultGCPercent = 50

// tuneGC applies defaultGCPercent unless the environment sets GOGC, and returns the
// target in force as GOGC spells it, for the log.
func tuneGC() string {
	if v := os.Getenv("GOGC"); v != "" {
		return v // the runtime read it at start
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent)
}
