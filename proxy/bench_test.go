package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxprop/ctxprop/headers"
	"github.com/ctxprop/ctxprop/ops"
)

// countStore is the cheapest Store: it counts calls and ops.
type countStore struct{ calls, ops atomic.Int64 }

func (s *countStore) Apply(name string, list []ops.Op) error {
	s.calls.Add(1)
	s.ops.Add(int64(len(list)))
	return nil
}

// BenchmarkInbound measures requests through real loopback listeners: straight to the
// app, through a bare tuned httputil.ReverseProxy, and through ctxprop's inbound
// listener (context read from baggage, telemetry written to a Store), on its fast path
// (the default) and on the net/http path ("ctxprop nethttp", inbound.fast_path =
// false). It logs the ratios in one run.
func BenchmarkInbound(b *testing.B) {
	body := make([]byte, 512)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(body)
	}))
	defer app.Close()
	appURL, _ := url.Parse(app.URL)

	// The bare baseline: what a careful engineer writes in ten lines.
	tr := &http.Transport{MaxIdleConnsPerHost: DefaultMaxIdleConnsPerHost, DisableCompression: true}
	defer tr.CloseIdleConnections()
	bare := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(appURL)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		Transport:  tr,
		BufferPool: copyBuffers,
	}
	bareSrv := httptest.NewServer(bare)
	defer bareSrv.Close()

	// Two inbound proxies: an edge that takes ctx.name from its callers, and an inner
	// sidecar that verifies the ctx-sig another sidecar of the fleet added (SPEC §4a).
	store := &countStore{}
	signer, err := headers.NewSigner([][]byte{[]byte("bench-fleet-secret-of-32-bytes!!")})
	if err != nil {
		b.Fatal(err)
	}
	open := func(opt Options) *Proxy {
		opt.App, opt.InboundAddress, opt.Store, opt.Logger = appURL.Host, "127.0.0.1:0", store, hclog.NewNullLogger()
		p, err := New(opt)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Open(); err != nil {
			b.Fatal(err)
		}
		return p
	}
	edge := open(Options{ContextBaggage: headers.NameKey})
	defer edge.Close(b.Context())
	inner := open(Options{Signer: signer})
	defer inner.Close(b.Context())
	// The edge again, taking part in the trace (tracing.mode participate, the default).
	hop := open(Options{ContextBaggage: headers.NameKey, Trace: TraceParticipate, SampleRatio: 1})
	defer hop.Close(b.Context())
	// The edge on the net/http path (inbound.fast_path = false), to compare in one run.
	slow := open(Options{ContextBaggage: headers.NameKey, DisableFastPath: true})
	defer slow.Close(b.Context())
	tid, _ := trace.TraceIDFromHex(testTraceparent[3:35])
	sig := signer.Sign(tid, "bench", nil, time.Now())

	targets := []struct{ name, addr, sig string }{
		{"direct", appURL.Host, ""},
		{"reverseproxy", hostOf(bareSrv.URL), ""},
		{"ctxprop", edge.InboundAddr().String(), ""},
		{"ctxprop nethttp", slow.InboundAddr().String(), ""},
		{"ctxprop participate", hop.InboundAddr().String(), ""},
		{"ctxprop signed", inner.InboundAddr().String(), sig},
	}
	nsPerOp := map[string]float64{}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{
				MaxIdleConnsPerHost: 512,
				DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
			}}
			defer client.CloseIdleConnections()
			u := "http://" + tg.addr + "/orders"
			b.ReportAllocs()
			b.SetParallelism(8)
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest(http.MethodGet, u, nil)
				req.Header.Set("Traceparent", testTraceparent)
				req.Header.Set("Baggage", "ctx.name=bench")
				if tg.sig != "" {
					req.Header.Set(headers.CtxSig, tg.sig)
				}
				for pb.Next() {
					res, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
			nsPerOp[tg.name] = float64(time.Since(start).Nanoseconds()) / float64(b.N)
		})
	}
	if d, r, c := nsPerOp["direct"], nsPerOp["reverseproxy"], nsPerOp["ctxprop"]; d > 0 && r > 0 && c > 0 {
		b.Logf("time per request: ctxprop/reverseproxy = %.2f, reverseproxy/direct = %.2f, ctxprop/direct = %.2f", c/r, r/d, c/d)
	}
	if c, s := nsPerOp["ctxprop"], nsPerOp["ctxprop nethttp"]; c > 0 && s > 0 {
		b.Logf("time per request: ctxprop (fast path)/ctxprop nethttp = %.2f", c/s)
	}
	if c, s := nsPerOp["ctxprop"], nsPerOp["ctxprop signed"]; c > 0 && s > 0 {
		b.Logf("time per request: ctxprop signed/ctxprop = %.2f (%+.0f ns)", s/c, s-c)
	}
	if c, h := nsPerOp["ctxprop"], nsPerOp["ctxprop participate"]; c > 0 && h > 0 {
		b.Logf("time per request: ctxprop participate/ctxprop = %.2f (%+.0f ns)", h/c, h-c)
	}
	if store.calls.Load() == 0 {
		b.Error("ctxprop wrote no telemetry")
	}
	if refused := inner.Stats().RefusedMembers; refused != ([numSides][headers.NumRefusals]uint64{}) {
		b.Errorf("the inner sidecar refused the signed context: %v", refused)
	}
}
