// Command transparentapp is the app of the transparent interception tests
// (transparent_test.go): it knows nothing of the sidecar. It has no proxy settings, and
// its clients (a Go http.Client without a proxy, grpc-go, Node's fetch, TLS and raw TCP)
// dial their targets directly; the redirection rules alone send the connections through
// the sidecar. Like an OpenTelemetry-instrumented app, it forwards the traceparent of the
// request it serves on the calls it makes, and nothing else.
//
// It listens on APP_ADDR (for other pods) and APP_LOOPBACK_ADDR (loopback only), and
// serves GET /call?client=...&target=host:port&id=..., answering a JSON result. On
// APP_RAW_ADDR it echoes raw TCP, a protocol that is not HTTP.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// result is the answer of /call.
type result struct {
	Body     string            `json:"body,omitempty"`
	Trailer  map[string]string `json:"trailer,omitempty"`
	Sent     string            `json:"sent,omitempty"`     // sha256 of the bytes sent
	Received string            `json:"received,omitempty"` // sha256 of the bytes received
	Greeting string            `json:"greeting,omitempty"`
	Error    string            `json:"error,omitempty"`
	UID      int               `json:"uid"`
}

func main() {
	pod, lo := os.Getenv("APP_ADDR"), os.Getenv("APP_LOOPBACK_ADDR")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /call", call)
	mux.HandleFunc("GET /where", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pod listener %s; flag header %q; baggage %q", r.Context().Value(http.LocalAddrContextKey), r.Header.Get("Ctx-Flag-Theme"), r.Header.Get("Baggage"))
	})
	loMux := http.NewServeMux()
	loMux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "loopback listener %s", r.Context().Value(http.LocalAddrContextKey))
	})
	go func() { log.Fatal(http.ListenAndServe(lo, loMux)) }()
	if raw := os.Getenv("APP_RAW_ADDR"); raw != "" {
		ln, err := net.Listen("tcp", raw)
		if err != nil {
			log.Fatal(err)
		}
		go serveEcho(ln)
	}
	log.Fatal(http.ListenAndServe(pod, mux))
}

func call(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	target, id := q.Get("target"), q.Get("id")
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	res := result{UID: os.Getuid()}
	var err error
	switch q.Get("client") {
	case "go":
		err = callGo(ctx, &res, target, id, q.Get("host"), r.Header.Get("Traceparent"))
	case "node":
		err = callNode(ctx, &res, target, id, r.Header.Get("Traceparent"))
	case "grpc-unary":
		err = callGRPCUnary(ctx, &res, target, id, r.Header.Get("Traceparent"))
	case "grpc-stream":
		err = callGRPCStream(ctx, &res, target, id, r.Header.Get("Traceparent"))
	case "tls":
		err = callTLS(&res, target, q.Get("fingerprint"), q.Get("size"))
	case "raw":
		err = callRaw(&res, target, q.Get("size"), false)
	case "raw-server-first":
		err = callRaw(&res, target, q.Get("size"), true)
	case "limit":
		err = callLimit(&res, target, q.Get("count"))
	default:
		err = fmt.Errorf("unknown client %q", q.Get("client"))
	}
	if err != nil {
		res.Error = err.Error()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

// callGo uses a plain http.Client that ignores HTTP_PROXY. host, when set, is the Host
// header, which need not name the address dialled.
func callGo(ctx context.Context, res *result, target, id, host, traceparent string) error {
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+target+"/record?id="+id, nil)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	if traceparent != "" {
		req.Header.Set("Traceparent", traceparent)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	res.Body = string(b)
	return err
}

// nodeScript fetches argv[1] with Node's built-in fetch (undici), which ignores
// HTTP_PROXY, forwarding the traceparent in argv[2].
const nodeScript = `
const [url, tp] = process.argv.slice(1);
const headers = tp ? {traceparent: tp} : {};
fetch(url, {headers}).then(async r => { process.stdout.write(await r.text()); })
  .catch(e => { console.error(String(e.cause || e)); process.exit(1); });
`

func callNode(ctx context.Context, res *result, target, id, traceparent string) error {
	cmd := exec.CommandContext(ctx, "node", "-e", nodeScript, "http://"+target+"/record?id="+id, traceparent)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	res.Body = string(out)
	if err != nil {
		return fmt.Errorf("node: %v: %s", err, stderr.String())
	}
	return nil
}

func grpcConn(target string) (*grpc.ClientConn, error) {
	// passthrough: the target is an address, dialled as it is.
	return grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func grpcContext(ctx context.Context, id, traceparent string) context.Context {
	md := metadata.Pairs("x-request-id", id)
	if traceparent != "" {
		md.Set("traceparent", traceparent)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

func trailerMap(md metadata.MD) map[string]string {
	m := map[string]string{}
	for k, v := range md {
		if len(v) > 0 {
			m[k] = v[0]
		}
	}
	return m
}

func callGRPCUnary(ctx context.Context, res *result, target, id, traceparent string) error {
	conn, err := grpcConn(target)
	if err != nil {
		return err
	}
	defer conn.Close()
	var trailer metadata.MD
	out, err := grpc_health_v1.NewHealthClient(conn).Check(grpcContext(ctx, id, traceparent), &grpc_health_v1.HealthCheckRequest{}, grpc.Trailer(&trailer))
	if err != nil {
		return err
	}
	res.Body = out.GetStatus().String()
	res.Trailer = trailerMap(trailer)
	return nil
}

// callGRPCStream runs a bidirectional stream (server reflection): three requests, three
// answers, then the trailers.
func callGRPCStream(ctx context.Context, res *result, target, id, traceparent string) error {
	conn, err := grpcConn(target)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(grpcContext(ctx, id, traceparent))
	if err != nil {
		return err
	}
	var names []string
	for range 3 {
		if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
			return err
		}
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		names = append(names, strconv.Itoa(len(msg.GetListServicesResponse().GetService())))
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != io.EOF {
		return fmt.Errorf("stream end: %v, want io.EOF", err)
	}
	res.Body = fmt.Sprint(names)
	res.Trailer = trailerMap(stream.Trailer())
	return nil
}

// payload is size pseudo-random bytes that start like no protocol the proxy knows.
func payload(size string) ([]byte, error) {
	n, err := strconv.Atoi(size)
	if err != nil {
		return nil, fmt.Errorf("size %q: %v", size, err)
	}
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	b[0] = 0x00
	return b, nil
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// callTLS speaks TLS to an echo server whose certificate must have the given SHA-256
// fingerprint: the sidecar cannot read or change a byte without breaking the handshake
// or the record MACs.
func callTLS(res *result, target, fingerprint, size string) error {
	data, err := payload(size)
	if err != nil {
		return err
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", target, &tls.Config{
		InsecureSkipVerify: true, // the pin below checks the certificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || sum(raw[0]) != fingerprint {
				return errors.New("the server's certificate is not the downstream's")
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		conn.Write(data)
		conn.CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	res.Sent, res.Received = sum(data), sum(got)
	return err
}

// callRaw sends a payload over plain TCP, half-closes, and reads the echo to its end.
// serverFirst reads the server's greeting line before sending anything, as an SMTP or
// MySQL client does.
func callRaw(res *result, target, size string, serverFirst bool) error {
	data, err := payload(size)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(conn)
	if serverFirst {
		line, err := r.ReadString('\n')
		res.Greeting = line
		if err != nil {
			return fmt.Errorf("greeting: %w", err)
		}
	}
	go func() {
		conn.Write(data)
		conn.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(r)
	res.Sent, res.Received = sum(data), sum(got)
	return err
}

// callLimit holds count connections open to target (each acknowledged by the server,
// so each is spliced through), then opens one more and reports what became of it.
func callLimit(res *result, target, count string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	open := func() (net.Conn, error) {
		c, err := net.DialTimeout("tcp", target, 10*time.Second)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "hold\n"); err != nil {
			return c, err
		}
		ack := make([]byte, 1)
		_, err = io.ReadFull(c, ack)
		return c, err
	}
	for i := range n {
		c, err := open()
		if c != nil {
			held = append(held, c)
		}
		if err != nil {
			return fmt.Errorf("held connection %d: %w", i+1, err)
		}
	}
	c, err := open()
	if c != nil {
		c.Close()
	}
	if err == nil {
		res.Body = "the connection over the limit went through"
		return nil
	}
	res.Body = "over the limit: " + err.Error()
	return nil
}

// serveEcho echoes each connection until its client half-closes, then half-closes too.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if _, err := io.Copy(c, c); err == nil {
				c.(*net.TCPConn).CloseWrite()
			}
		}()
	}
}
