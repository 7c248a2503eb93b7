package peersync

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// staticSource is the simplest Source: a fixed list (the real ones live in sync/discovery).
type staticSource []string

func (s staticSource) Peers(context.Context) ([]string, error) { return s, nil }

type testNode struct {
	store *localstore.Store
	sync  *Syncer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func testLogger(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: testWriter{t}})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startNodes runs n syncers on loopback over real stores, all knowing every address.
func startNodes(t *testing.T, n int, key []byte) []*testNode {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeAddr(t)
	}
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = startNode(t, fmt.Sprintf("node%d", i), filepath.Join(t.TempDir(), "ctx.db"), addrs[i], addrs, key)
	}
	return nodes
}

func startNode(t *testing.T, name, path, addr string, peers []string, key []byte) *testNode {
	t.Helper()
	return startTracedNode(t, name, path, addr, peers, key, nil)
}

func startTracedNode(t *testing.T, name, path, addr string, peers []string, key []byte, tp trace.TracerProvider) *testNode {
	t.Helper()
	return startNodeWith(t, name, path, addr, peers, key, func(o *Options) { o.TracerProvider = tp })
}

// startNodeWith starts a node as startNode does, with the options mod changes.
func startNodeWith(t *testing.T, name, path, addr string, peers []string, key []byte, mod func(*Options)) *testNode {
	t.Helper()
	st := localstore.New(localstore.Options{Path: path, Logger: testLogger(t, name+".store")})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	if key != nil {
		keys = [][]byte{key}
	}
	opt := Options{Store: st, Name: name, Address: addr, Source: staticSource(peers), Keyring: keys,
		Interval: 50 * time.Millisecond, PushPullInterval: time.Second, DiscoverInterval: 500 * time.Millisecond,
		Logger: testLogger(t, name+".sync")}
	if mod != nil {
		mod(&opt)
	}
	s, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	nd := &testNode{store: st, sync: s}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Close(ctx) // peers may be gone already: an unacknowledged flush is fine here
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return nd
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func TestSyncer_Converges(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	nodes := startNodes(t, 3, key)
	ctx := context.Background()
	for i, nd := range nodes {
		for j := range 10 {
			list := []ops.Op{
				{Kind: ops.Incr, Key: "orders", By: int64(i + 1)},
				{Kind: ops.Add, Set: "regions", Member: fmt.Sprintf("r%d", i)},
				{Kind: ops.Put, Map: "last", Key: "writer", Value: json.RawMessage(fmt.Sprintf("%d", i*100+j))},
			}
			if _, err := nd.store.Apply(ctx, "checkout", list, localstore.Durable); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := int64(10 * (1 + 2 + 3))
	waitFor(t, 10*time.Second, "every node to count every increment", func() bool {
		for _, nd := range nodes {
			if v, _ := nd.store.Counter("checkout", "orders"); v != want {
				return false
			}
			if m, _ := nd.store.Set("checkout", "regions"); len(m) != 3 {
				return false
			}
		}
		return true
	})
	// LWW: every node reads the same winner.
	waitFor(t, 5*time.Second, "one LWW winner everywhere", func() bool {
		first, _ := nodes[0].store.MapGet("checkout", "last", "writer")
		for _, nd := range nodes[1:] {
			v, _ := nd.store.MapGet("checkout", "last", "writer")
			if string(v) != string(first) {
				return false
			}
		}
		return true
	})
	waitFor(t, 5*time.Second, "every peer listed alive", func() bool {
		for _, nd := range nodes {
			ps := nd.sync.Peers()
			if len(ps) != 2 {
				return false
			}
			for _, p := range ps {
				if p.State != StateAlive || p.BytesIn == 0 || p.BytesOut == 0 {
					return false
				}
			}
		}
		return true
	})
	// Fleet-wide series only, unless sync.peer_metrics (issue 11).
	reg := prometheus.NewRegistry()
	reg.MustRegister(nodes[0].sync)
	if n, err := testutil.GatherAndCount(reg, "ctxprop_sync_sent_bytes_total"); err != nil || n != 1 {
		t.Errorf("fleet-wide sent bytes series: %d (%v), want 1", n, err)
	}
	if n, err := testutil.GatherAndCount(reg, "ctxprop_sync_peer_sent_bytes_total"); err != nil || n != 0 {
		t.Errorf("sent bytes series per peer: %d (%v), want none without PeerMetrics", n, err)
	}
	nodes[0].sync.opt.PeerMetrics = true
	if n, err := testutil.GatherAndCount(reg, "ctxprop_sync_peer_sent_bytes_total"); err != nil || n != 2 {
		t.Errorf("sent bytes series per peer with PeerMetrics: %d (%v), want 2", n, err)
	}
}

// TestSyncer_RefusesUnauthenticatedAndMalformed: a member with another key cannot talk to
// the fleet, and garbage from a member with the right key is refused; nothing is merged.
func TestSyncer_RefusesUnauthenticatedAndMalformed(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	nodes := startNodes(t, 1, key)
	victim := nodes[0]
	target := victim.sync.Addr()

	for _, tc := range []struct {
		name, reason string
		key          []byte
		msg          []byte
	}{
		{"wrong key", "unauthenticated", []byte("fedcba9876543210fedcba9876543210"), (&message{kind: kindDelta, from: "x", replica: 7, seq: 1, groups: []group{{name: "evil", data: mustEncode(t, incrDelta(7))}}}).encode()},
		{"malformed", "malformed", key, []byte("\x01\x01\x00garbage")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := victim.sync.Stats().Refused[tc.reason]
			mc := memberlist.DefaultLANConfig()
			mc.Name = "intruder-" + strings.ReplaceAll(tc.name, " ", "-")
			mc.BindAddr, mc.BindPort = "127.0.0.1", 0
			kr, err := memberlist.NewKeyring([][]byte{tc.key}, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			mc.Keyring = kr
			mc.LogOutput = testWriter{t}
			ml, err := memberlist.Create(mc)
			if err != nil {
				t.Fatal(err)
			}
			defer ml.Shutdown()
			host, port, _ := splitHostPort(target)
			to := &memberlist.Node{Name: "victim", Addr: net.ParseIP(host), Port: uint16(port)}
			waitFor(t, 5*time.Second, "the message to be refused", func() bool {
				_ = ml.SendBestEffort(to, tc.msg)
				return victim.sync.Stats().Refused[tc.reason] > before
			})
			if names := victim.store.Names(); len(names) != 0 {
				t.Errorf("store holds %v, want nothing merged", names)
			}
		})
	}
}

// TestSyncer_NewReplicaCatchesUp: a node that joins late, with an empty file, gets every
// context by full-state push-pull, not only the deltas written after it joined.
func TestSyncer_NewReplicaCatchesUp(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	ctx := context.Background()
	for i := range 20 {
		if _, err := nodes[0].store.Apply(ctx, fmt.Sprintf("wf-%d", i), []ops.Op{{Kind: ops.Incr, Key: "step", By: 3}}, localstore.Durable); err != nil {
			t.Fatal(err)
		}
	}
	late := startNode(t, "late", filepath.Join(t.TempDir(), "late.db"), freeAddr(t), []string{nodes[0].sync.Addr()}, nil)
	waitFor(t, 10*time.Second, "the late node to hold every context", func() bool {
		for i := range 20 {
			if v, _ := late.store.Counter(fmt.Sprintf("wf-%d", i), "step"); v != 3 {
				return false
			}
		}
		return true
	})
}

// TestSyncer_CloseFlushes: changes made right before Close reach a peer even though no
// round ran since (SIGTERM pushes the last deltas).
func TestSyncer_CloseFlushes(t *testing.T) {
	nodes := startNodes(t, 2, nil)
	waitFor(t, 10*time.Second, "the two nodes to see each other", func() bool {
		return len(nodes[0].sync.Peers()) == 1 && nodes[0].sync.Peers()[0].State == StateAlive
	})
	ctx := context.Background()
	if _, err := nodes[0].store.Apply(ctx, "last", []ops.Op{{Kind: ops.Incr, Key: "k", By: 5}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := nodes[0].sync.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if v, _ := nodes[1].store.Counter("last", "k"); v != 5 {
		t.Errorf("peer reads %d right after Close returned, want 5", v)
	}
}

func TestSyncer_CloseIdleIsPrompt(t *testing.T) {
	nd := startNodes(t, 1, nil)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := nd.sync.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close of an idle node took %s", d)
	}
	if err := nd.sync.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLoadKeyFile(t *testing.T) {
	k32 := "0123456789abcdef0123456789abcdef"
	b64 := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // base64 of k32
	tests := []struct {
		name, content string
		keys          int
		err           string
	}{
		{"base64", b64 + "\n", 1, ""},
		{"raw", "0123456789abcdef0123456789abcde!", 1, ""}, // not base64, so read as is
		{"rotation with comment", "# primary first\n" + b64 + "\n\n0123456789abcdef\n", 2, ""},
		{"bad length", "tooshort\n", 0, ":1: not a 16, 24 or 32 byte key"},
		{"empty", "# nothing\n", 0, "holds no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keyring")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			keys, err := LoadKeyFile(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(keys); got != tt.keys {
				t.Fatalf("%d keys, want %d", got, tt.keys)
			}
			if want := k32[:31]; string(keys[0][:31]) != want {
				t.Errorf("primary key %q, want it to start %q", keys[0], want)
			}
		})
	}
}

// TestSyncer_Spans checks that a round that pushes a delta, and a push-pull exchange, are
// traced, and that idle rounds are not.
func TestSyncer_Spans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	addrs := []string{freeAddr(t), freeAddr(t)}
	a := startTracedNode(t, "a", filepath.Join(t.TempDir(), "a.db"), addrs[0], addrs, nil, tp)
	startNode(t, "b", filepath.Join(t.TempDir(), "b.db"), addrs[1], addrs, nil)
	waitFor(t, 10*time.Second, "a sees b", func() bool {
		for _, p := range a.sync.Peers() {
			if p.State == "alive" {
				return true
			}
		}
		return false
	})
	for _, sp := range rec.Ended() {
		if sp.Name() == "sync.round" {
			t.Fatal("a sync.round span before any write: idle rounds must not be traced")
		}
	}
	if _, err := a.store.Apply(context.Background(), "c", []ops.Op{{Kind: ops.Incr, Key: "k", By: 1}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	names := func() map[string]int {
		out := map[string]int{}
		for _, s := range rec.Ended() {
			out[s.Name()]++
		}
		return out
	}
	waitFor(t, 10*time.Second, "a sync.round and a sync.push_pull span", func() bool {
		n := names()
		return n["sync.round"] > 0 && n["sync.push_pull"] > 0
	})
}
