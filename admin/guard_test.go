package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
)

// guardEnv is a test server with two routes outside /v1 mounted as other packages mount
// theirs: a page (GET) and an evaluation that reads with a POST, as OFREP does.
func guardEnv(t *testing.T, opt Options) *testEnv {
	t.Helper()
	return newTestEnvWith(t, opt, localstore.Limits{}, func(s *Server) {
		s.Handle("GET /page", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "page")
		}))
		s.Handle("POST /eval", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, e := ReadBody(w, r, 1<<10); e != nil {
				WriteError(w, e)
				return
			}
			WriteJSON(w, http.StatusOK, statusAnswer{"evaluated"})
		}))
	})
}

// send makes a request with a real http.Client; host, when set, is the Host header sent
// (the connection still goes to the test server), hdr are more header name/value pairs.
func (e *testEnv) send(t *testing.T, method, path, host, body string, hdr ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// Bounded: a watch stream served to a Host that should be refused would never end.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, strings.TrimSpace(string(data))}
}

func errorMessage(t *testing.T, a answer) string {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal([]byte(a.body), &b); err != nil {
		t.Fatalf("answer %d %q is not a JSON error", a.status, a.body)
	}
	return b.Error.Message
}

// counter reads a counter from the store itself, 0 if the context is absent.
func (e *testEnv) counter(t *testing.T, ctx, key string) int64 {
	t.Helper()
	v, err := e.store.Counter(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestGuard_Host sends a JSON write (which passes the other checks) with many Host headers,
// as a browser sends them after DNS rebinding, and checks which are served and that the
// refused ones wrote nothing.
func TestGuard_Host(t *testing.T) {
	e := guardEnv(t, Options{AllowedHosts: []string{"admin.internal", "Ops.Example."}})
	_, port, _ := net.SplitHostPort(e.server.Addr().String())
	const j = "application/json"
	tests := []struct {
		host    string
		allowed bool
	}{
		{"127.0.0.1:" + port, true},
		{"127.0.0.1", true},
		{"127.9.8.7:" + port, true}, // all of 127.0.0.0/8
		{"[::1]:" + port, true},
		{"[::1]", true},
		{"[::ffff:127.0.0.1]:" + port, true},
		{"localhost:" + port, true},
		{"LocalHost", true},
		{"admin.internal:" + port, true}, // admin.allowed_hosts
		{"ADMIN.internal", true},
		{"ops.example:" + port, true},
		{"evil.example:" + port, false},
		{"evil.example", false},
		{"localhost.evil.example:" + port, false},
		{"127.0.0.1.nip.io:" + port, false},
		{"admin.internal.evil.example", false},
		{"0.0.0.0:" + port, false}, // browsers route it to loopback; it is no name of ours
		{"10.1.2.3:" + port, false},
		{"[::]:" + port, false},
		{":" + port, false},
	}
	want := int64(0)
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			a := e.send(t, "POST", "/v1/contexts/h/counters/k", tt.host, `{"by":1}`, "Content-Type", j)
			if !tt.allowed {
				if got, want := a.status, http.StatusForbidden; got != want {
					t.Fatalf("status %d, want %d: %s", got, want, a.body)
				}
				if got, want := errorCode(t, a), CodeHostNotAllowed; got != want {
					t.Errorf("code %q, want %q", got, want)
				}
				if msg := errorMessage(t, a); !strings.Contains(msg, fmt.Sprintf("%q", tt.host)) || !strings.Contains(msg, "admin.allowed_hosts") {
					t.Errorf("message %q does not name the Host %q and admin.allowed_hosts", msg, tt.host)
				}
				return
			}
			want++
			if got, want := a.status, http.StatusOK; got != want {
				t.Fatalf("status %d, want %d: %s", got, want, a.body)
			}
		})
	}
	if got := e.counter(t, "h", "k"); got != want {
		t.Errorf("counter = %d, want %d: a refused request wrote", got, want)
	}

	// Every route of the listener is guarded: those of the API, /metrics, and the ones
	// other packages mount.
	evil := "evil.example:" + port
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/contexts", ""},
		{"GET", "/v1/contexts/h", ""},
		{"GET", "/v1/watch", ""},
		{"GET", "/metrics", ""},
		{"GET", "/healthz", ""},
		{"GET", "/page", ""},
		{"POST", "/eval", "{}"},
		{"GET", "/no/such/route", ""},
	} {
		t.Run("route "+r.method+" "+r.path, func(t *testing.T) {
			a := e.send(t, r.method, r.path, evil, r.body, "Content-Type", j)
			if got, want := a.status, http.StatusForbidden; got != want {
				t.Fatalf("status %d, want %d: %.200s", got, want, a.body)
			}
			if got, want := errorCode(t, a), CodeHostNotAllowed; got != want {
				t.Errorf("code %q, want %q", got, want)
			}
		})
	}
	metrics := e.send(t, "GET", "/metrics", "", "").body
	refused := len(tests) - int(want) + 8 // the table's refusals and the routes'
	if line := fmt.Sprintf(`ctxprop_admin_refused_total{reason="host"} %d`, refused); !strings.Contains(metrics, line) {
		t.Errorf("metrics lack %q", line)
	}
}

// TestGuard_NoHost: a request without a Host header (HTTP/1.0) comes from no browser.
func TestGuard_NoHost(t *testing.T) {
	e := guardEnv(t, Options{})
	conn, err := net.Dial("tcp", e.server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /healthz HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Errorf("status %d, want %d: %s", got, want, body)
	}
}

// TestGuard_Origin sends writes as browsers send them from pages of various origins.
func TestGuard_Origin(t *testing.T) {
	e := guardEnv(t, Options{AllowedHosts: []string{"admin.internal"}})
	_, port, _ := net.SplitHostPort(e.server.Addr().String())
	self := "http://127.0.0.1:" + port
	const j = "application/json"
	tests := []struct {
		name    string
		host    string   // Host header; "" is the test server's address
		hdr     []string // Origin and Sec-Fetch-Site
		allowed bool
	}{
		{"no browser headers", "", nil, true},
		{"own page", "", []string{"Origin", self, "Sec-Fetch-Site", "same-origin"}, true},
		{"own page, old browser", "", []string{"Origin", self}, true},
		{"own page by another loopback name", "", []string{"Origin", "http://localhost:" + port, "Sec-Fetch-Site", "cross-site"}, true},
		{"own page by an allowed name", "admin.internal:" + port, []string{"Origin", "http://admin.internal:" + port, "Sec-Fetch-Site", "same-origin"}, true},
		{"port-forward: own page on the workstation's port", "localhost:8123", []string{"Origin", "http://localhost:8123"}, true},
		{"typed by the user", "", []string{"Sec-Fetch-Site", "none"}, true},
		{"evil page", "", []string{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, false},
		{"evil page, old browser", "", []string{"Origin", "http://evil.example"}, false},
		{"evil page on the same port", "", []string{"Origin", "http://evil.example:" + port}, false},
		{"another loopback origin", "", []string{"Origin", "http://127.0.0.1:1", "Sec-Fetch-Site", "same-site"}, false},
		{"another loopback origin, old browser", "", []string{"Origin", "http://localhost:1"}, false},
		{"https origin", "", []string{"Origin", "https://127.0.0.1:" + port}, false},
		{"opaque origin", "", []string{"Origin", "null", "Sec-Fetch-Site", "cross-site"}, false},
		{"cross-site without Origin", "", []string{"Sec-Fetch-Site", "cross-site"}, false},
		{"same-site without Origin", "", []string{"Sec-Fetch-Site", "same-site"}, false},
	}
	want := int64(0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := append([]string{"Content-Type", j}, tt.hdr...)
			a := e.send(t, "POST", "/v1/contexts/o/counters/k", tt.host, `{"by":1}`, hdr...)
			ev := e.send(t, "POST", "/eval", tt.host, `{}`, hdr...) // a read by POST: same rule
			if tt.allowed {
				want++
				if a.status != http.StatusOK || ev.status != http.StatusOK {
					t.Fatalf("write %d %s, evaluation %d %s; want 200 for both", a.status, a.body, ev.status, ev.body)
				}
				return
			}
			for _, a := range []answer{a, ev} {
				if got, want := a.status, http.StatusForbidden; got != want {
					t.Fatalf("status %d, want %d: %s", got, want, a.body)
				}
				if got, want := errorCode(t, a), CodeCrossOrigin; got != want {
					t.Errorf("code %q, want %q", got, want)
				}
			}
		})
	}
	if got := e.counter(t, "o", "k"); got != want {
		t.Errorf("counter = %d, want %d: a refused request wrote", got, want)
	}
	// Reads stay open to any page: without CORS headers it cannot read the answer.
	if a := e.send(t, "GET", "/v1/contexts/o", "", "", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"); a.status != http.StatusOK {
		t.Errorf("GET with a foreign Origin: %d %s", a.status, a.body)
	}
}

// TestGuard_SimpleRequest sends the writes a page can send anywhere without a preflight
// (no Content-Type, text/plain, a form): refused unless they carry X-Requested-By.
func TestGuard_SimpleRequest(t *testing.T) {
	e := guardEnv(t, Options{})
	ctx := context.Background()
	if _, err := e.client.Incr(ctx, "keep", "k", 1, 0); err != nil { // the Client passes
		t.Fatal(err)
	}
	if err := e.client.OpsHeader(ctx, "keep", `incr;key="k"`); err != nil {
		t.Fatal(err)
	}
	const ops = `incr;key="pwned"`
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
	}{
		{"ops text/plain", "POST", "/v1/contexts/s/ops", ops, []string{"Content-Type", "text/plain"}, 403},
		{"ops text/plain with charset", "POST", "/v1/contexts/s/ops", ops, []string{"Content-Type", "text/plain; charset=utf-8"}, 403},
		{"ops text/plain, bad parameters", "POST", "/v1/contexts/s/ops", ops, []string{"Content-Type", "text/plain;;"}, 403},
		{"ops form", "POST", "/v1/contexts/s/ops", "a=b", []string{"Content-Type", "application/x-www-form-urlencoded"}, 403},
		{"ops multipart", "POST", "/v1/contexts/s/ops", "--x--", []string{"Content-Type", "multipart/form-data; boundary=x"}, 403},
		{"incr without type", "POST", "/v1/contexts/s/counters/k", "", nil, 403},
		{"put map as text", "PUT", "/v1/contexts/s/maps/m/k", `{"value":1}`, []string{"Content-Type", "text/plain"}, 403},
		{"ttl as text", "PUT", "/v1/contexts/keep/ttl", `{"ttl":"1s"}`, []string{"Content-Type", "text/plain"}, 403},
		{"delete without header", "DELETE", "/v1/contexts/keep", "", nil, 403},
		{"delete map entry without header", "DELETE", "/v1/contexts/keep/maps/m/k", "", nil, 403},
		{"empty X-Requested-By", "POST", "/v1/contexts/s/ops", ops, []string{"Content-Type", "text/plain", HeaderRequestedBy, ""}, 403},
		{"ops text/plain with the header", "POST", "/v1/contexts/s/ops", ops, []string{"Content-Type", "text/plain", HeaderRequestedBy, "curl"}, 204},
		{"ops json", "POST", "/v1/contexts/s/ops", `[{"op":"incr","key":"json"}]`, []string{"Content-Type", "application/json"}, 204},
		{"incr with the header only", "POST", "/v1/contexts/s/counters/hdr", "", []string{HeaderRequestedBy, "x"}, 200},
		{"evaluation by POST needs nothing", "POST", "/eval", "{}", []string{"Content-Type", "text/plain"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.send(t, tt.method, tt.path, "", tt.body, tt.hdr...)
			if a.status != tt.status {
				t.Fatalf("status %d, want %d: %s", a.status, tt.status, a.body)
			}
			if tt.status != 403 {
				return
			}
			if got, want := errorCode(t, a), CodeSimpleRequest; got != want {
				t.Errorf("code %q, want %q", got, want)
			}
			if msg := errorMessage(t, a); !strings.Contains(msg, "Content-Type: application/json") || !strings.Contains(msg, HeaderRequestedBy+": curl") {
				t.Errorf("message %q does not say what to send", msg)
			}
		})
	}
	// Only the requests with the header or JSON wrote; "keep" is still there.
	for _, c := range []struct {
		ctx, key string
		want     int64
	}{{"s", "pwned", 1}, {"s", "json", 1}, {"s", "hdr", 1}, {"s", "k", 0}, {"keep", "k", 2}} {
		if got := e.counter(t, c.ctx, c.key); got != c.want {
			t.Errorf("counter %s/%s = %d, want %d", c.ctx, c.key, got, c.want)
		}
	}
	if _, err := e.store.MapGet("s", "m", "k"); err == nil {
		t.Error("a refused PUT stored a map entry")
	}
	if err := e.client.Delete(ctx, "keep"); err != nil { // the Client passes
		t.Fatal(err)
	}
	metrics := e.send(t, "GET", "/metrics", "", "").body
	if want := `ctxprop_admin_refused_total{reason="simple_request"} 11`; !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %q", want)
	}
}

// TestGuard_HostAllowed covers the rule that real sockets on loopback cannot reach: the
// IP literal of the local address a connection arrived on is a name of this server
// (cmd/sidecar's partition test serves the API on a bridge address this way).
func TestGuard_HostAllowed(t *testing.T) {
	s := New(Options{AllowedHosts: []string{"admin.internal", " ", ""}})
	local := &net.TCPAddr{IP: net.ParseIP("10.0.0.7"), Port: 7400}
	tests := []struct {
		host  string
		local net.Addr
		want  bool
	}{
		{"10.0.0.7", local, true},
		{"::ffff:10.0.0.7", local, true},
		{"10.0.0.8", local, false},
		{"10.0.0.7", nil, false},
		{"10.0.0.7", &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 7400}, false},
		{"admin.internal.", nil, true},
		{"", nil, false},
		{"localhost.", nil, true},
		{"::1", nil, true},
		{"fe80::1%eth0", &net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s at %v", tt.host, tt.local), func(t *testing.T) {
			if got := s.hostAllowed(tt.host, tt.local); got != tt.want {
				t.Errorf("hostAllowed(%q, %v) = %v, want %v", tt.host, tt.local, got, tt.want)
			}
		})
	}
}
