package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/net/websocket"
)

// TestInbound_Correlation runs the chain of SPEC §4: a request with a context comes
// in, and the app, which forwards only traceparent, calls another service through
// the outbound proxy; that service must see the context in baggage.
func TestInbound_Correlation(t *testing.T) {
	for _, tracing := range []bool{false, true} {
		name := "tracing off"
		if tracing {
			name = "tracing on"
		}
		t.Run(name, func(t *testing.T) {
			downstream := make(chan http.Header, 1)
			remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				downstream <- r.Header.Clone()
			}))
			defer remote.Close()

			var client *http.Client
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, remote.URL, nil)
				req.Header.Set("Traceparent", r.Header.Get("Traceparent")) // and nothing else
				res, err := client.Do(req)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
				res.Body.Close()
			}))
			defer app.Close()
			opt := Options{App: hostOf(app.URL), TrustedSources: loopback, Flags: pinAll{"dark", "on"}}
			recorder := tracetest.NewSpanRecorder()
			if tracing {
				opt.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
			}
			p := startProxy(t, opt)
			client = proxiedClient(t, p)

			res, body := get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", map[string]string{
				"Traceparent": testTraceparent,
				"Baggage":     "ctx.name=checkout,ctx.flag.dark=on",
			})
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %s", res.StatusCode, body)
			}
			h := <-downstream
			if got := h.Get("Baggage"); !strings.Contains(got, "ctx.name=checkout") || !strings.Contains(got, "ctx.flag.dark=on") {
				t.Errorf("downstream baggage %q lacks the context", got)
			}
			tp := h.Get("Traceparent")
			if got, want := tp[3:35], testTraceparent[3:35]; got != want {
				t.Errorf("downstream trace-id %s, want %s", got, want)
			}
			if tracing {
				if tp == testTraceparent {
					t.Errorf("traceparent unchanged with tracing on; want a new parent-id")
				}
				if got, want := len(recorder.Ended()), 2; got != want {
					t.Errorf("%d spans ended, want %d (one per proxied request)", got, want)
				}
			} else if tp != testTraceparent {
				t.Errorf("tracing off: traceparent %q, want %q byte for byte", tp, testTraceparent)
			}
		})
	}
}

func TestInbound_Tracing(t *testing.T) {
	seen := make(chan http.Header, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	defer app.Close()
	recorder := tracetest.NewSpanRecorder()
	p := startProxy(t, Options{App: hostOf(app.URL), TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))})

	for _, c := range []struct {
		name        string
		traceparent string
		sameTrace   bool
	}{
		{"continues a valid trace", testTraceparent, true},
		{"restarts an invalid one", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"starts one", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			hdr := map[string]string{}
			if c.traceparent != "" {
				hdr["Traceparent"] = c.traceparent
				hdr["Tracestate"] = testTracestate
			}
			get(t, http.DefaultClient, "http://"+p.InboundAddr().String()+"/", hdr)
			h := <-seen
			tp := h.Get("Traceparent")
			if len(tp) != 55 || tp == c.traceparent {
				t.Fatalf("app saw traceparent %q; want a new valid one", tp)
			}
			if got := tp[3:35] == testTraceparent[3:35]; got != c.sameTrace {
				t.Errorf("app's traceparent %q: same trace as the caller's = %v, want %v", tp, got, c.sameTrace)
			}
			if c.sameTrace {
				if got, want := h.Get("Tracestate"), testTracestate; got != want {
					t.Errorf("tracestate %q, want %q", got, want)
				}
			} else if got := h.Get("Tracestate"); got != "" {
				t.Errorf("tracestate %q forwarded with a new trace", got)
			}
		})
	}
}

func TestProxy_Close_DrainsInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	}))
	defer app.Close()
	p, err := New(Options{App: hostOf(app.URL), InboundAddress: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	addr := p.InboundAddr().String()
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		res, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		got <- result{string(b), err}
	}()
	<-started
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- p.Close(ctx)
	}()
	// New connections are refused once Close has begun.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts after Close")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "finished" {
		t.Errorf("in-flight request: %q, %v; want it finished", r.body, r.err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestProxy_Close_CutsWebSocketAtDeadline checks that a hijacked connection, which
// http.Server.Shutdown does not track, is waited for and then cut at the deadline.
func TestProxy_Close_CutsWebSocketAtDeadline(t *testing.T) {
	app := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	defer app.Close()
	p, err := New(Options{App: hostOf(app.URL), InboundAddress: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(); err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.Dial("ws://"+p.InboundAddr().String()+"/", "", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline error (a WebSocket was open)", err)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("Close returned after %v; it must wait for the WebSocket until the deadline", waited)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var msg string
	if err := websocket.Message.Receive(ws, &msg); err == nil {
		t.Errorf("the WebSocket still works after Close")
	}
}

func TestNew_Validate(t *testing.T) {
	for _, c := range []struct {
		name string
		opt  Options
		want string
	}{
		{"defaults", DefaultOptions(), ""},
		{"bad inbound", Options{InboundAddress: "7401", App: "127.0.0.1:8080"}, "inbound address"},
		{"no app", Options{InboundAddress: ":0"}, "app address is empty"},
		{"app without port", Options{InboundAddress: ":0", App: "localhost"}, "not host:port"},
		{"bad outbound", Options{OutboundAddress: "x"}, "outbound address"},
		{"negative pool", Options{MaxIdleConnsPerHost: -1}, "max idle"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.opt)
			if c.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New = %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}
