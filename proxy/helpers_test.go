package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/ops"
)

// memStore is an in-memory Store: it sums counters and records every call.
type memStore struct {
	mu       sync.Mutex
	counters map[string]map[string]int64
	calls    []storeCall
}

type storeCall struct {
	name string
	list []ops.Op
}

var _ Store = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{counters: map[string]map[string]int64{}} }

func (s *memStore) Apply(name string, list []ops.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, storeCall{name, append([]ops.Op(nil), list...)})
	for _, op := range list {
		if op.Kind == ops.Incr {
			if s.counters[name] == nil {
				s.counters[name] = map[string]int64{}
			}
			s.counters[name][op.Key] += op.By
		}
	}
	return nil
}

func (s *memStore) counter(name, key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters[name][key]
}

func (s *memStore) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// waitCounter polls until counter name/key reaches want: the proxy applies telemetry
// as its handler returns, which may be just after the client has read the response.
func (s *memStore) waitCounter(t *testing.T, name, key string, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := s.counter(name, key)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter %s/%s = %d, want %d", name, key, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// testLogger routes logs to t.Log until the test is over.
func testLogger(t testing.TB) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { // registered first, so it runs after the proxy's Close
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: w, Level: hclog.Debug})
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(b))
	}
	return len(b), nil
}

// loopback is TrustedSources for tests whose client stands for a trusted caller (an
// ingress, another sidecar): requests from it keep their context members unsigned.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// startProxy opens a proxy on loopback ports with opt's other fields and closes it
// when the test ends.
func startProxy(t testing.TB, opt Options) *Proxy {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = testLogger(t)
	}
	if opt.App != "" && opt.InboundAddress == "" {
		opt.InboundAddress = "127.0.0.1:0"
	}
	if opt.OutboundAddress == "" {
		opt.OutboundAddress = "127.0.0.1:0"
	}
	p, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err)
	}
	return u.Host
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// proxiedClient sends requests through the outbound proxy p, as an app with
// HTTP_PROXY set does.
func proxiedClient(t testing.TB, p *Proxy) *http.Client {
	u := &url.URL{Scheme: "http", Host: p.OutboundAddr().String()}
	tr := &http.Transport{Proxy: http.ProxyURL(u)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// h2cClient speaks prior-knowledge HTTP/2 over cleartext.
func h2cClient(t testing.TB) *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
