package proxy

import (
	"time"

	"github.com/ctxprop/ctxprop/ops"
)

// The counters the inbound side adds to a request's context (SPEC §5), once per
// request, in one Store.Apply call with the request's ctx-ops.
//
// The latency buckets are cumulative, as Prometheus histogram buckets are: a 30 ms
// request adds 1 to le_100, le_500 and le_2500. http.requests is the +Inf bucket and
// the count. The sum is in microseconds because counters are integers and most
// requests inside a cluster take less than a millisecond. A WebSocket or other
// upgraded connection counts as one request with no latency, since its duration is
// that of the session, not of a response.
const (
	KeyRequests   = "http.requests"
	KeyErrors     = "http.errors" // 5xx from the app, and 502/504 from the proxy
	KeyLatencySum = "http.latency_us_sum"
)

// LatencyBuckets are the upper bounds of the latency buckets; bucket i is counted
// under BucketKeys[i].
var LatencyBuckets = [...]time.Duration{
	5 * time.Millisecond,
	25 * time.Millisecond,
	100 * time.Millisecond,
	500 * time.Millisecond,
	2500 * time.Millisecond,
}

// BucketKeys are the counter names of LatencyBuckets.
var BucketKeys = [len(LatencyBuckets)]string{
	"http.latency_ms_le_5",
	"http.latency_ms_le_25",
	"http.latency_ms_le_100",
	"http.latency_ms_le_500",
	"http.latency_ms_le_2500",
}

// TelemetryKeys lists every counter the proxy writes, for documentation and for the
// admin API's metrics export.
func TelemetryKeys() []string {
	keys := []string{KeyRequests, KeyErrors, KeyLatencySum}
	return append(keys, BucketKeys[:]...)
}

// appendTelemetry appends the telemetry ops of one request to list. upgraded says the
// response switched protocols (latency not counted).
func appendTelemetry(list []ops.Op, status int, failed bool, elapsed time.Duration, upgraded bool) []ops.Op {
	list = append(list, ops.Op{Kind: ops.Incr, Key: KeyRequests, By: 1})
	if failed || status >= 500 {
		list = append(list, ops.Op{Kind: ops.Incr, Key: KeyErrors, By: 1})
	}
	if upgraded {
		return list
	}
	list = append(list, ops.Op{Kind: ops.Incr, Key: KeyLatencySum, By: elapsed.Microseconds()})
	for i, le := range LatencyBuckets {
		if elapsed <= le {
			list = append(list, ops.Op{Kind: ops.Incr, Key: BucketKeys[i], By: 1})
		}
	}
	return list
}
