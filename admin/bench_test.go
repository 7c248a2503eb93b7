//go:build unix

package admin

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/hashicorp/go-hclog"
)

// benchWriter is a ResponseWriter that keeps the status and discards the body, reused
// across requests so that the benchmark measures the handler and not a recorder.
type benchWriter struct {
	header http.Header
	status int
	n      int
}

func (w *benchWriter) Header() http.Header { return w.header }

// SetReadDeadline lets httpapi.TimeBodyReads wrap the body as it does under net/http.
func (w *benchWriter) SetReadDeadline(time.Time) error { return nil }
func (w *benchWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}
func (w *benchWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(b)
	return len(b), nil
}

// BenchmarkAdmin_IncrDurable is bench/store/incr.lua's request, POST
// /v1/contexts/bench/counters/k<n> with {"by":1}, through the admin API's whole handler
// (metrics, guard, routing) onto a localstore.Store with its bbolt file and write-ahead
// log, Durable: every answer waits for its group's fdatasync. 16 clients write at once.
// ns/op is mostly the wait for fdatasync; cpu-ns/op is the CPU the process spent per
// request (user and system, the garbage collector's included), what issue 14 measures.
func BenchmarkAdmin_IncrDurable(b *testing.B) {
	st := localstore.New(localstore.Options{
		Path:   filepath.Join(b.TempDir(), "ctx.db"),
		Logger: hclog.NewNullLogger(),
		Limits: localstore.Limits{MaxContexts: 100000, MaxValuesPerContext: 10000, MaxValueBytes: 65536, MaxSetMembers: 10000},
	})
	if err := st.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := st.Close(); err != nil {
			b.Errorf("close: %v", err)
		}
	})
	h := New(Options{Store: st}).Handler()
	body := []byte(`{"by":1}`)
	paths := make([]string, 16)
	for i := range paths {
		paths[i] = "/v1/contexts/bench/counters/k" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	cpu := cpuTime(b)
	defer func() { b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		w := &benchWriter{header: http.Header{}}
		rd := bytes.NewReader(nil)
		n := 0
		for pb.Next() {
			n++
			r, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:7400"+paths[n%16], nil)
			if err != nil {
				b.Error(err)
				return
			}
			rd.Reset(body)
			r.Body = io.NopCloser(rd)
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Type", "application/json")
			clear(w.header)
			w.status = 0
			h.ServeHTTP(w, r)
			if w.status != http.StatusOK {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
}

// cpuTime returns the CPU time the process has used, user and system, in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
