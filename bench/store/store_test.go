// Package storebench compares the admin API's durable write throughput with raw bbolt
// under the same fsync policy (issue 2): 16 concurrent clients, every write on disk
// before it is acknowledged. Run both in one invocation so the ratio is fair on a noisy
// machine:
//
//	go test -run '^$' -bench . -benchtime 3s -count 5 ./bench/store | tee /tmp/store.txt
//
// The ratio of interest is BenchmarkBoltBatch ns/op ÷ BenchmarkAdminIncr ns/op.
//
// The files go to a temporary directory under $CTXPROPTEST_BENCH_DIR when it is set (to
// measure on another disk), else under the system's temporary directory.
package storebench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	bolt "go.etcd.io/bbolt"
)

// clients is the number of concurrent writers; on this 2-core machine RunParallel starts
// GOMAXPROCS×parallelism goroutines, so parallelism is derived from it.
const clients = 16

// dir returns an empty directory for a benchmark's files, removed when it ends.
func dir(b *testing.B) string {
	root := os.Getenv("CTXPROPTEST_BENCH_DIR")
	if root == "" {
		return b.TempDir()
	}
	d, err := os.MkdirTemp(root, "store-bench-")
	if err != nil {
		b.Fatalf("CTXPROPTEST_BENCH_DIR: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func parallelism() int {
	p := clients / runtime.GOMAXPROCS(0)
	if p < 1 {
		p = 1
	}
	return p
}

// openAdmin opens a store on a fresh file and the admin API in front of it, both closed
// when the benchmark ends, and returns the store and the API's address.
func openAdmin(b *testing.B) (*localstore.Store, string) {
	store := localstore.New(localstore.Options{Path: filepath.Join(dir(b), "ctx.db")})
	if err := store.Open(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	srv := admin.New(admin.Options{Address: "127.0.0.1:0", Store: store})
	if err := srv.Open(); err != nil {
		b.Fatal(err)
	}
	// Registered after the store's, so it runs first: the API stops before the store.
	b.Cleanup(func() { srv.Close(context.Background()) })
	return store, srv.Addr().String()
}

// BenchmarkAdminIncr: 16 clients increment counters through the admin API over loopback
// HTTP; each reply waits for the group commit's fsync.
func BenchmarkAdminIncr(b *testing.B) {
	store, addr := openAdmin(b)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2}}
	c := admin.NewClient("http://"+addr, hc)
	var id atomic.Int64
	b.SetParallelism(parallelism())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprintf("k%d", id.Add(1))
		for pb.Next() {
			if _, err := c.Incr(context.Background(), "bench", key, 1, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := store.Stats()
	b.ReportMetric(float64(st.Changes)/float64(max(st.LogSyncs+st.Commits, 1)), "writes/sync")
	b.ReportMetric(float64(st.CommitTime.Microseconds())/float64(max(st.LogSyncs+st.Commits, 1)), "µs/sync")
}

// BenchmarkAdminIncrSerial: one client, one durable increment at a time: ns/op is the
// latency of a write as `sidecar ctl incr` sees it (HTTP, apply, fsync, answer).
func BenchmarkAdminIncrSerial(b *testing.B) {
	_, addr := openAdmin(b)
	c := admin.NewClient("http://"+addr, &http.Client{})
	for b.Loop() {
		if _, err := c.Incr(context.Background(), "bench", "k", 1, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWindowedIncrLargeContext: request-path increments (Windowed, as the proxy's
// telemetry) on a context that also holds a large map (5000 entries), for whole commit
// windows. Every commit to bbolt rewrites the whole context (context-KB); the metrics say
// how often that happens per second of writes, against the small log syncs.
func BenchmarkWindowedIncrLargeContext(b *testing.B) {
	store := localstore.New(localstore.Options{Path: filepath.Join(dir(b), "ctx.db")})
	if err := store.Open(); err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	value := json.RawMessage(`"` + strings.Repeat("v", 100) + `"`)
	for i := 0; i < 5000; i += 100 {
		list := make([]ops.Op, 0, 100)
		for j := i; j < i+100; j++ {
			list = append(list, ops.Op{Kind: ops.Put, Map: "nodes", Key: fmt.Sprintf("node-%05d", j), Value: value})
		}
		if _, err := store.Apply(ctx, "fleet", list, localstore.Durable); err != nil {
			b.Fatal(err)
		}
	}
	incr := []ops.Op{{Kind: ops.Incr, Key: "http.requests", By: 1}}
	before := store.Stats()
	start := time.Now()
	for b.Loop() {
		if _, err := store.Apply(ctx, "fleet", incr, localstore.Windowed); err != nil {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond) // a steady stream, not one burst per window
	}
	secs := time.Since(start).Seconds()
	after := store.Stats()
	data, _ := store.Encoded("fleet")
	b.ReportMetric(float64(len(data))/1024, "context-KB")
	b.ReportMetric(float64(after.Commits-before.Commits)/secs, "bbolt-commits/s")
	b.ReportMetric(float64(after.LogSyncs-before.LogSyncs)/secs, "log-syncs/s")
}

// BenchmarkHTTPFloor: the same 16 clients and the same HTTP stack, against a handler that
// reads the request and answers at once without storing anything. No HTTP API can beat
// it on this machine; it shows how much of the admin API's time is the exchange itself.
func BenchmarkHTTPFloor(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "12")
		w.Write([]byte("{\"value\":1}\n"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2}}
	c := admin.NewClient("http://"+ln.Addr().String(), hc)
	b.SetParallelism(parallelism())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Incr(context.Background(), "bench", "k", 1, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkBoltBatch: 16 goroutines do the same read-increment-write on raw bbolt with
// DB.Batch, each waiting for its transaction's fsync, with MaxBatchSize tuned to the
// number of writers (the default 1000/10ms would make every batch wait 10ms).
func BenchmarkBoltBatch(b *testing.B) {
	db, err := bolt.Open(filepath.Join(dir(b), "raw.db"), 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.MaxBatchSize = clients
	db.MaxBatchDelay = 2 * time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("c"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	var id atomic.Int64
	b.SetParallelism(parallelism())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := []byte(fmt.Sprintf("k%d", id.Add(1)))
		for pb.Next() {
			if err := db.Batch(func(tx *bolt.Tx) error {
				bk := tx.Bucket([]byte("c"))
				var n uint64
				if v := bk.Get(key); len(v) == 8 {
					n = binary.BigEndian.Uint64(v)
				}
				return bk.Put(key, binary.BigEndian.AppendUint64(nil, n+1))
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
