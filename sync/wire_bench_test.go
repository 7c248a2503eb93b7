package peersync

import (
	"fmt"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
)

// BenchmarkEncodeBatch measures what deflate saves on delta batches of counter
// increments from different replicas, the common load: it reports the body before
// compression (the groups and their names) and the message as sent, per batch size.
//
//	go test -run '^$' -bench EncodeBatch ./sync
func BenchmarkEncodeBatch(b *testing.B) {
	at := crdt.TimestampOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, groups := range []int{1, 5, 20, 100} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			m := &message{kind: kindDelta, from: "pod-a", replica: 0x1234567890abcdef, base: 100, seq: 100 + uint64(groups)}
			raw := 0
			for i := range groups {
				var c crdt.Context
				d := c.Incr(crdt.Write{Replica: crdt.ReplicaID(0x9e3779b97f4a7c15 * uint64(i+1)), At: at + crdt.Timestamp(i)}, "http.requests", int64(i+1), 0)
				data, err := d.MarshalBinary()
				if err != nil {
					b.Fatal(err)
				}
				m.groups = append(m.groups, group{name: fmt.Sprintf("checkout-%d", i%7), data: data})
				raw += len(data) + len("checkout-0") + 2
			}
			var wire []byte
			for b.Loop() {
				wire = m.encode()
			}
			b.ReportMetric(float64(raw), "group-bytes")
			b.ReportMetric(float64(len(wire)), "wire-bytes")
			b.ReportMetric(float64(len(wire))/float64(groups), "wire-bytes/group")
		})
	}
}
