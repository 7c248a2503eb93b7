package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// startGRPC serves the standard health service on a loopback port, with "orders"
// serving.
func startGRPC(t *testing.T) (addr string, hs *health.Server, seen chan metadata.MD) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen = make(chan metadata.MD, 16)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		select {
		case seen <- md:
		default:
		}
		return h(ctx, req)
	}))
	hs = health.NewServer()
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs, seen
}

func grpcClient(t *testing.T, target string, opts ...grpc.DialOption) healthpb.HealthClient {
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
	cc, err := grpc.NewClient("passthrough:///"+target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func TestInbound_GRPC(t *testing.T) {
	addr, hs, seen := startGRPC(t)
	store := newMemStore()
	p := startProxy(t, Options{App: addr, Store: store, TrustedSources: loopback})
	c := grpcClient(t, p.InboundAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Unary with a status in the trailers.
	octx := metadata.AppendToOutgoingContext(ctx, "baggage", "ctx.name=grpc-ctx")
	res, err := c.Check(octx, &healthpb.HealthCheckRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Status, healthpb.HealthCheckResponse_SERVING; got != want {
		t.Errorf("status %v, want %v", got, want)
	}
	if md := <-seen; len(md.Get("baggage")) != 1 {
		t.Errorf("the app's metadata %v lacks baggage", md)
	}
	_, err = c.Check(octx, &healthpb.HealthCheckRequest{Service: "nope"})
	if got, want := status.Code(err), codes.NotFound; got != want {
		t.Errorf("unknown service: code %v, want %v (grpc-status trailer lost?)", got, want)
	}
	store.waitCounter(t, "grpc-ctx", KeyRequests, 2)

	// Server streaming: each update must come through as it happens.
	stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	want := healthpb.HealthCheckResponse_SERVING
	for i, next := range []healthpb.HealthCheckResponse_ServingStatus{
		healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING, 0,
	} {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := msg.Status; got != want {
			t.Fatalf("message %d: status %v, want %v", i, got, want)
		}
		if next != 0 {
			hs.SetServingStatus("orders", next)
			want = next
		}
	}
}

// TestOutbound_GRPC sends gRPC through the forward proxy as h2c, with the target in
// :authority.
func TestOutbound_GRPC(t *testing.T) {
	addr, _, seen := startGRPC(t)
	store := newMemStore()
	p := startProxy(t, Options{Store: store})
	c := grpcClient(t, p.OutboundAddr().String(), grpc.WithAuthority(addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "baggage", "ctx.name=g2", "ctx-ops", `incr;key="calls"`)
	res, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Status, healthpb.HealthCheckResponse_SERVING; got != want {
		t.Errorf("status %v, want %v", got, want)
	}
	if md := <-seen; len(md.Get("ctx-ops")) != 0 {
		t.Errorf("ctx-ops left the pod: %v", md.Get("ctx-ops"))
	}
	if got, want := store.counter("g2", "calls"), int64(1); got != want {
		t.Errorf("calls = %d, want %d", got, want)
	}
}

func TestInbound_WebSocket(t *testing.T) {
	app := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	defer app.Close()
	store := newMemStore()
	p := startProxy(t, Options{App: hostOf(app.URL), Store: store, TrustedSources: loopback})
	cfg, err := websocket.NewConfig("ws://"+p.InboundAddr().String()+"/echo", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header.Set("Baggage", "ctx.name=ws")
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"one", "two", "three"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Errorf("echo %q, want %q", got, msg)
		}
	}
	ws.Close()
	store.waitCounter(t, "ws", KeyRequests, 1)
	if got := store.counter("ws", KeyLatencySum); got != 0 {
		t.Errorf("a WebSocket session added %dµs of latency; sessions are not responses", got)
	}
}

func TestOutbound_WebSocket(t *testing.T) {
	remote := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	defer remote.Close()
	p := startProxy(t, Options{})
	// x/net/websocket has no proxy support: send the absolute-form upgrade by hand.
	conn, err := net.Dial("tcp", p.OutboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg, _ := websocket.NewConfig("ws://"+hostOf(remote.URL)+"/", "http://localhost/")
	ws, err := websocket.NewClient(cfg, &absoluteFormConn{Conn: conn, host: hostOf(remote.URL)})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := websocket.Message.Send(ws, "ping"); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil {
		t.Fatal(err)
	}
	if got != "ping" {
		t.Errorf("echo %q, want %q", got, "ping")
	}
}

// absoluteFormConn rewrites the request line the client writes first from
// origin-form to absolute-form, as a proxy-aware client sends it.
type absoluteFormConn struct {
	net.Conn
	host string
	done bool
}

func (c *absoluteFormConn) Write(b []byte) (int, error) {
	if !c.done && bytes.HasPrefix(b, []byte("GET /")) {
		c.done = true
		abs := append([]byte("GET http://"+c.host), b[len("GET "):]...)
		if _, err := c.Conn.Write(abs); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}
