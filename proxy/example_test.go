package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"

	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/proxy"
)

// counters is a Store that sums counters in memory.
type counters struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *counters) Apply(name string, list []ops.Op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, op := range list {
		if op.Kind == ops.Incr {
			c.m[name+" "+op.Key] += op.By
		}
	}
	return nil
}

// An app behind the inbound proxy answers a request that carries the context
// "checkout" in baggage and adds to a counter of that context through ctx-ops on its
// response; the proxy records the request's telemetry in the same context. The proxy is
// at the edge of the fleet: it takes the context from the ctx.name of any caller
// (inbound.context_baggage), where an inner one would want a ctx-sig of the fleet.
func Example() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Ctx-Ops", `incr;key="orders";by=2`)
		fmt.Fprintf(w, "app saw baggage %q", r.Header.Get("Baggage"))
	}))
	defer app.Close()

	store := &counters{m: map[string]int64{}}
	p, err := proxy.New(proxy.Options{
		InboundAddress: "127.0.0.1:0",
		App:            app.Listener.Addr().String(),
		Store:          store,
		ContextBaggage: "ctx.name",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Open(); err != nil {
		fmt.Println(err)
		return
	}

	req, _ := http.NewRequest(http.MethodGet, "http://"+p.InboundAddr().String()+"/pay", nil)
	req.Header.Set("Baggage", "ctx.name=checkout")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.Status, string(body), res.Header.Get("Ctx-Ops") == "")

	// Close drains: once it returns, every request's writes are in the store.
	if err := p.Close(context.Background()); err != nil {
		fmt.Println(err)
	}
	for _, k := range []string{"orders", proxy.KeyRequests, proxy.KeyErrors} {
		fmt.Println(k, store.m["checkout "+k])
	}
	// Output:
	// 200 OK app saw baggage "ctx.name=checkout" true
	// orders 2
	// http.requests 1
	// http.errors 0
}
