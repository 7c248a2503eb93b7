// Command fill writes one-counter contexts through a sidecar's admin API, as an app or
// `sidecar ctl incr` would: POST /v1/contexts/{prefix}{i}/counters/{key} with a JSON body,
// each answered once it is durable. bench/store/memory.sh uses it to fill a store.
//
//	fill -addr 127.0.0.1:7400 -n 100000 -c 16
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7400", "the sidecar's admin address, host:port")
	n := flag.Int("n", 100000, "contexts to write, one counter each")
	c := flag.Int("c", 16, "concurrent clients")
	prefix := flag.String("prefix", "mem-", "context names are the prefix and a number")
	key := flag.String("key", "hits", "the counter written in each context")
	flag.Parse()
	if err := fill(*addr, *n, *c, *prefix, *key); err != nil {
		fmt.Fprintln(os.Stderr, "fill:", err)
		os.Exit(1)
	}
}

func fill(addr string, n, clients int, prefix, key string) error {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	body := []byte(`{"by":1}`)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				url := fmt.Sprintf("http://%s/v1/contexts/%s%d/counters/%s", addr, prefix, i, key)
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	d := time.Since(start)
	fmt.Fprintf(os.Stderr, "fill: %d contexts in %.1fs (%.0f writes/s)\n", n, d.Seconds(), float64(n)/d.Seconds())
	return nil
}
