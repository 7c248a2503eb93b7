// Command proxyd runs one Go proxy for the proxy benchmark (bench/proxy/run.sh), with
// nothing else of the sidecar:
//
//	-mode ctxprop       package proxy's inbound side, telemetry to a Store that
//	                    drops it (headers-only: the cost of the data path alone);
//	                    with -store, to the real localstore on a bbolt file with
//	                    the request path's windowed durability, as the sidecar
//	                    wires it (every request writes its telemetry counters)
//	-mode reverseproxy  a bare httputil.ReverseProxy with a tuned Transport, the
//	                    baseline a careful engineer writes in ten lines
//	-mode fasthttp      a bare reverse proxy on valyala/fasthttp (Server and HostClient,
//	                    X-Forwarded-For set, no header work of ours): the candidate
//	                    library issue 14 names for a data path off net/http
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

	"github.com/valyala/fasthttp"

	"github.com/ctxprop/ctxprop/localstore"
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

// windowed is cmd/sidecar's requestPathStore: proxy writes are committed within the
// store's commit window and never wait for fsync (SPEC §3).
type windowed struct{ s *localstore.Store }

func (w windowed) Apply(name string, list []ops.Op) error {
	_, err := w.s.Apply(context.Background(), name, list, localstore.Windowed)
	return err
}

// Commit makes the proxy's summed telemetry durable after each window, as
// requestPathStore does.
func (w windowed) Commit(ctx context.Context) error { return w.s.Sync(ctx) }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxyd:", err)
		os.Exit(1)
	}
}

func run() error {
	mode := flag.String("mode", "ctxprop", "ctxprop, reverseproxy or fasthttp")
	listen := flag.String("listen", "127.0.0.1:17401", "listen address")
	app := flag.String("app", "127.0.0.1:18080", "upstream host:port")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	storePath := flag.String("store", "", "ctxprop: bbolt file of a real localstore for the telemetry (empty: a Store that drops it)")
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
		var store proxy.Store = &discard{}
		if *storePath != "" {
			ls := localstore.New(localstore.Options{Path: *storePath})
			if err := ls.Open(); err != nil {
				return err
			}
			store = windowed{ls}
			defer func() {
				// The counters prove the writes happened; a benchmark that
				// wrote nothing would flatter the store.
				if n, err := ls.Counter("bench", proxy.KeyRequests); err == nil {
					fmt.Fprintf(os.Stderr, "proxyd: context bench: %s = %d\n", proxy.KeyRequests, n)
				}
				if err := ls.Close(); err != nil {
					fmt.Fprintln(os.Stderr, "proxyd: closing the store:", err)
				}
			}()
		}
		// The load generator stands for callers outside the fleet, so proxyd is an
		// edge sidecar that takes their ctx.name (SPEC §4a), as the sidecar behind an
		// ingress is configured; without it the context would be removed unsigned.
		p, err := proxy.New(proxy.Options{InboundAddress: *listen, App: *app, Store: store, ContextBaggage: "ctx.name"})
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
	case "fasthttp":
		// fasthttp's own reverse-proxy recipe: the request and response objects of the
		// server's context go through a pooled HostClient as they are; the pool is as
		// large as the others' keep-alive pools.
		client := &fasthttp.HostClient{Addr: *app, MaxConns: proxy.DefaultMaxIdleConnsPerHost, DisablePathNormalizing: true}
		srv := &fasthttp.Server{
			Handler: func(c *fasthttp.RequestCtx) {
				c.Request.Header.Add("X-Forwarded-For", c.RemoteIP().String())
				if err := client.Do(&c.Request, &c.Response); err != nil {
					c.Error("bad gateway: "+err.Error(), fasthttp.StatusBadGateway)
				}
			},
			ReadTimeout:                   10 * time.Second,
			DisableHeaderNamesNormalizing: true,
			NoDefaultServerHeader:         true,
			NoDefaultDate:                 true,
			NoDefaultContentType:          true,
		}
		errc := make(chan error, 1)
		go func() { errc <- srv.ListenAndServe(*listen) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		return srv.Shutdown()
	default:
		return fmt.Errorf("unknown -mode %q; want ctxprop, reverseproxy or fasthttp", *mode)
	}
}
