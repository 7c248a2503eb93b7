// Command proxyd runs one Go proxy for the proxy benchmark (bench/proxy/run.sh), with
// nothing else of the sidecar:
//
//	-mode ctxprop       package proxy's inbound side, telemetry to a Store that
//	                    drops it (headers-only: the cost of the data path alone)
//	-mode reverseproxy  a bare httputil.ReverseProxy with a tuned Transport, the
//	                    baseline a careful engineer writes in ten lines
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/proxy"
)

// discard is the no-op Store: it counts the calls so the work is not optimised away.
type discard struct{ calls atomic.Int64 }

func (d *discard) Apply(string, []ops.Op) error {
	d.calls.Add(1)
	return nil
}

// buffers pools ReverseProxy's 32 KiB copy buffers, as package proxy does.
type buffers struct{ p sync.Pool }

func (b *buffers) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *buffers) Put(buf []byte) { b.p.Put(&buf) }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxyd:", err)
		os.Exit(1)
	}
}

func run() error {
	mode := flag.String("mode", "ctxprop", "ctxprop or reverseproxy")
	listen := flag.String("listen", "127.0.0.1:17401", "listen address")
	app := flag.String("app", "127.0.0.1:18080", "upstream host:port")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch *mode {
	case "ctxprop":
		store := &discard{}
		p, err := proxy.New(proxy.Options{InboundAddress: *listen, App: *app, Store: store})
		if err != nil {
			return err
		}
		if err := p.Open(); err != nil {
			return err
		}
		<-ctx.Done()
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.Close(cctx)
	case "reverseproxy":
		target := &url.URL{Scheme: "http", Host: *app}
		rp := &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(target)
				r.Out.Host = r.In.Host
				r.SetXForwarded()
			},
			Transport:  &http.Transport{MaxIdleConnsPerHost: proxy.DefaultMaxIdleConnsPerHost, DisableCompression: true},
			BufferPool: &buffers{},
		}
		srv := &http.Server{Addr: *listen, Handler: rp, ReadHeaderTimeout: 10 * time.Second}
		errc := make(chan error, 1)
		go func() { errc <- srv.ListenAndServe() }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(cctx)
	default:
		return fmt.Errorf("unknown -mode %q; want ctxprop or reverseproxy", *mode)
	}
}
