package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxprop/ctxprop/localstore"
)

// countingReader is a ContextCounterReader that counts its reads.
type countingReader struct {
	reads int
	value int64
}

func (r *countingReader) Counters(marker string, keys []string) []localstore.ContextCounters {
	r.reads++
	values := make([]int64, len(keys))
	values[keyRequests] = r.value
	return []localstore.ContextCounters{{Name: "checkout", Values: values}}
}

// TestContextCollector_ReadsTheStoreAtMostEveryInterval: scrapes closer together than
// contextReadInterval share one read of the store; the next one after it reads again.
func TestContextCollector_ReadsTheStoreAtMostEveryInterval(t *testing.T) {
	r := &countingReader{value: 1}
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	c := NewContextCollector(r, ContextMetricsOptions{Max: 10})
	c.now = func() time.Time { return at }
	scrape := func() {
		t.Helper()
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		scrape()
		at = at.Add(time.Second)
	}
	if r.reads != 1 {
		t.Errorf("5 scrapes within %s read the store %d times, want 1", contextReadInterval, r.reads)
	}
	at = at.Add(contextReadInterval)
	scrape()
	if r.reads != 2 {
		t.Errorf("a scrape %s after the last read read the store %d times in all, want 2", contextReadInterval, r.reads)
	}
}
