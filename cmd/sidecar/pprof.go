//go:build pprof

package main

// The measurement build behind BENCHMARKS.md's CPU and heap profiles:
//
//	go build -tags pprof -o /tmp/sidecar-pprof ./cmd/sidecar
//
// serves net/http/pprof on 127.0.0.1:6060 beside the sidecar. Never in a release: the
// profiles show request contents and cost CPU on demand.

import (
	"net/http"
	_ "net/http/pprof"
)

func init() {
	go func() { _ = http.ListenAndServe("127.0.0.1:6060", nil) }()
}
