package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
	"github.com/ctxprop/ctxprop/relay"
	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

func testLogger(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: tWriter{t}})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startNATS runs a real NATS server with JetStream on dir, on port (0: any free port).
func startNATS(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func openStore(t *testing.T, name string) *localstore.Store {
	t.Helper()
	st := localstore.New(localstore.Options{Path: filepath.Join(t.TempDir(), name+".db"), Logger: testLogger(t, name+".store")})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// startRelay opens a relay of cluster over st; more options through edit.
func startRelay(t *testing.T, url, cluster string, st *localstore.Store, edit func(*relay.Options)) *relay.Relay {
	t.Helper()
	opt := relay.Options{
		Store: st, Logger: testLogger(t, cluster+".relay"),
		URLs: []string{url}, Cluster: cluster, StateInterval: 100 * time.Millisecond, AckWait: time.Second,
	}
	if edit != nil {
		edit(&opt)
	}
	r, err := relay.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

func apply(t *testing.T, st *localstore.Store, name string, list ...ops.Op) {
	t.Helper()
	if _, err := st.Apply(context.Background(), name, list, localstore.Durable); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, d, err)
}

func counterIs(st *localstore.Store, name, key string, want int64) func() error {
	return func() error {
		got, err := st.Counter(name, key)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("counter %s/%s is %d, want %d", name, key, got, want)
		}
		return nil
	}
}

func metric(t *testing.T, r *relay.Relay, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestRelay_TwoClusters counters, sets and maps written in one cluster reach the other
// through a real JetStream stream, both ways, and each relay publishes only its own
// writes: a merged delta is not published again.
func TestRelay_TwoClusters(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	a, b := openStore(t, "a"), openStore(t, "b")
	// Through the stream only: a state from the bucket would make the stream's delta
	// change nothing, and hide a delta published back.
	noBucket := func(o *relay.Options) { o.StateInterval = time.Hour }
	ra := startRelay(t, ns.ClientURL(), "east", a, noBucket)
	rb := startRelay(t, ns.ClientURL(), "west", b, noBucket)
	eventually(t, 10*time.Second, "relays ready", func() error { return errors.Join(ra.Ready(), rb.Ready()) })

	apply(t, a, "order-1", ops.Op{Kind: ops.Incr, Key: "hits", By: 3}, ops.Op{Kind: ops.Add, Set: "tags", Member: "red"})
	apply(t, b, "order-1", ops.Op{Kind: ops.Incr, Key: "hits", By: 4}, ops.Op{Kind: ops.Put, Map: "steps", Key: "pay", Value: []byte(`"done"`)})
	for _, st := range []*localstore.Store{a, b} {
		eventually(t, 10*time.Second, "counter converges", counterIs(st, "order-1", "hits", 7))
		eventually(t, 5*time.Second, "set and map converge", func() error {
			set, err := st.Set("order-1", "tags")
			if err != nil {
				return err
			}
			v, err := st.MapGet("order-1", "steps", "pay")
			if err != nil {
				return err
			}
			if !slices.Equal(set, []string{"red"}) || string(v) != `"done"` {
				return fmt.Errorf("set %v map %s", set, v)
			}
			return nil
		})
	}
	eventually(t, 5*time.Second, "east merges west's delta from the stream", func() error {
		if got := metric(t, ra, "ctxprop_relay_applied_deltas_total"); got < 1 {
			return fmt.Errorf("east applied %v deltas, want at least 1", got)
		}
		return nil
	})
	eventually(t, 5*time.Second, "west merges east's delta from the stream", func() error {
		if got := metric(t, rb, "ctxprop_relay_applied_deltas_total"); got < 1 {
			return fmt.Errorf("west applied %v deltas, want at least 1", got)
		}
		return nil
	})
	// Each cluster published its one write; the deltas it merged are not published back.
	// Absence takes watching: for 25 flush intervals, the stream must hold two messages.
	js, err := jetstream.New(connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		s, err := js.Stream(context.Background(), "CTXPROP_DELTAS")
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := info.State.Msgs, uint64(2); got != want {
			t.Fatalf("stream holds %d messages, want %d: a merged delta was published back", got, want)
		}
	}
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestRelay_Redelivery a message handed to a sidecar of the cluster that died before it
// acknowledged (here a raw JetStream client that pulls it and never acks) is delivered
// again after ack_wait to the cluster's relay, which merges it.
func TestRelay_Redelivery(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	a, b := openStore(t, "a"), openStore(t, "b")
	// The delta must come by the stream, not the bucket.
	noBucket := func(o *relay.Options) { o.StateInterval = time.Hour }
	ra := startRelay(t, ns.ClientURL(), "east", a, noBucket)
	eventually(t, 10*time.Second, "east ready", ra.Ready)
	// West's consumer exists before east publishes: created as its relay would.
	js, err := jetstream.New(connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cons, err := js.CreateOrUpdateConsumer(ctx, "CTXPROP_DELTAS", jetstream.ConsumerConfig{
		Durable: "west", FilterSubject: "ctxprop.delta.>", DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxAckPending: 1024,
	})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, a, "job", ops.Op{Kind: ops.Incr, Key: "n", By: 5})
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range batch.Messages() {
		got++ // the "sidecar" dies here, unacknowledged
	}
	if got != 1 {
		t.Fatalf("fetched %d messages, want 1 (%v)", got, batch.Error())
	}
	rb := startRelay(t, ns.ClientURL(), "west", b, noBucket)
	eventually(t, 10*time.Second, "west merges the redelivered delta", counterIs(b, "job", "n", 5))
	if got := metric(t, rb, "ctxprop_relay_redelivered_messages_total"); got != 1 {
		t.Errorf("redelivered = %v, want 1", got)
	}
}

// TestRelay_CatchUpFromBucket a cluster that joins after the stream dropped the deltas
// (retention passed) gets the state from the KV bucket.
func TestRelay_CatchUpFromBucket(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	a, b := openStore(t, "a"), openStore(t, "b")
	short := func(o *relay.Options) { o.Retention = 300 * time.Millisecond }
	ra := startRelay(t, ns.ClientURL(), "east", a, short)
	eventually(t, 10*time.Second, "east ready", ra.Ready)
	apply(t, a, "session", ops.Op{Kind: ops.Incr, Key: "n", By: 2}, ops.Op{Kind: ops.Add, Set: "s", Member: "x"})
	apply(t, a, "session", ops.Op{Kind: ops.Put, Map: "m", Key: "k", Value: []byte(`1`)})
	eventually(t, 5*time.Second, "the state reaches the bucket", func() error {
		if metric(t, ra, "ctxprop_relay_states_written_total") < 1 {
			return errors.New("no state written")
		}
		return nil
	})
	js, err := jetstream.New(connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the stream drops the deltas", func() error {
		s, err := js.Stream(context.Background(), "CTXPROP_DELTAS")
		if err != nil {
			return err
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d messages left", info.State.Msgs)
		}
		return nil
	})
	rb := startRelay(t, ns.ClientURL(), "west", b, short)
	eventually(t, 10*time.Second, "west catches up from the bucket", counterIs(b, "session", "n", 2))
	if got := metric(t, rb, "ctxprop_relay_applied_deltas_total"); got != 0 {
		t.Errorf("west applied %v stream deltas, want 0: the state came from the bucket", got)
	}
	if v, err := b.MapGet("session", "m", "k"); err != nil || string(v) != "1" {
		t.Errorf("map entry %s, %v; want 1", v, err)
	}
}

// TestRelay_NATSDown local writes made while NATS is unreachable, at start and later
// after it restarts on the same store directory, are published once it is back.
func TestRelay_NATSDown(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	a, b := openStore(t, "a"), openStore(t, "b")
	ra := startRelay(t, url, "east", a, func(o *relay.Options) { o.StateInterval = time.Hour })
	apply(t, a, "c", ops.Op{Kind: ops.Incr, Key: "n", By: 1}) // NATS not running yet
	ns := startNATS(t, dir, port)
	rb := startRelay(t, url, "west", b, func(o *relay.Options) { o.StateInterval = time.Hour })
	eventually(t, 15*time.Second, "published once NATS is up", counterIs(b, "c", "n", 1))

	ns.Shutdown()
	ns.WaitForShutdown()
	apply(t, a, "c", ops.Op{Kind: ops.Incr, Key: "n", By: 10}) // NATS down
	eventually(t, 5*time.Second, "east notices", func() error {
		if metric(t, ra, "ctxprop_relay_publish_pending_contexts") != 1 {
			return errors.New("nothing pending")
		}
		return nil
	})
	startNATS(t, dir, port)
	eventually(t, 20*time.Second, "published after the restart", counterIs(b, "c", "n", 11))
	_ = rb
}

// TestRelay_Malformed a message that does not decode is terminated and counted, and the
// deltas after it are merged.
func TestRelay_Malformed(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	a, b := openStore(t, "a"), openStore(t, "b")
	ra := startRelay(t, ns.ClientURL(), "east", a, nil)
	rb := startRelay(t, ns.ClientURL(), "west", b, nil)
	eventually(t, 10*time.Second, "relays ready", func() error { return errors.Join(ra.Ready(), rb.Ready()) })
	js, err := jetstream.New(connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	for _, junk := range [][]byte{{1, 200, 1}, {9}, {1, 1, 3, 'a', 'b', 'c', 2, 1, 2}} {
		if _, err := js.Publish(context.Background(), "ctxprop.delta.north", junk); err != nil {
			t.Fatal(err)
		}
	}
	apply(t, a, "c", ops.Op{Kind: ops.Incr, Key: "n", By: 1})
	eventually(t, 10*time.Second, "the good delta is merged", counterIs(b, "c", "n", 1))
	if got := metric(t, rb, "ctxprop_relay_refused_total"); got != 3 {
		t.Errorf("west refused %v messages, want 3", got)
	}
}

// TestNew_Errors bad options are refused with the attribute to fix.
func TestNew_Errors(t *testing.T) {
	st := openStore(t, "a")
	for _, tt := range []struct {
		name string
		edit func(*relay.Options)
		want string
	}{
		{"no url", func(o *relay.Options) { o.URLs = nil }, "relay.urls"},
		{"bad cluster", func(o *relay.Options) { o.Cluster = "a.b" }, "relay.cluster"},
		{"two auths", func(o *relay.Options) { o.TokenFile, o.User = "x", "y" }, "only one of"},
		{"user without password", func(o *relay.Options) { o.User = "y" }, "relay.password_file"},
		{"missing token file", func(o *relay.Options) { o.TokenFile = filepath.Join(t.TempDir(), "none") }, "relay.token_file"},
		{"missing CA", func(o *relay.Options) { o.CAFile = filepath.Join(t.TempDir(), "none") }, "relay.tls_ca_file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opt := relay.Options{Store: st, URLs: []string{"nats://127.0.0.1:1"}, Cluster: "east"}
			tt.edit(&opt)
			_, err := relay.New(opt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRelay_AliveReplicas every relay sees the replicas of every cluster alive through the
// replicas bucket, still after NATS restarted, and a replica that stopped goes off the
// list once its heartbeat is PresenceTTL old.
func TestRelay_AliveReplicas(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	ns := startNATS(t, dir, port)
	url := ns.ClientURL()
	a, b := openStore(t, "a"), openStore(t, "b")
	ttl := func(o *relay.Options) { o.PresenceTTL = 2 * time.Second }
	ra := startRelay(t, url, "east", a, ttl)
	rb := startRelay(t, url, "west", b, ttl)
	both := func() error {
		for _, r := range []*relay.Relay{ra, rb} {
			alive, ok := r.AliveReplicas()
			if !ok || !alive[a.Replica()] || !alive[b.Replica()] {
				return fmt.Errorf("alive %v (read %v), want %v and %v", alive, ok, a.Replica(), b.Replica())
			}
		}
		return nil
	}
	eventually(t, 10*time.Second, "both see both", both)
	ns.Shutdown()
	ns.WaitForShutdown()
	startNATS(t, dir, port)
	// Longer than the TTL: only heartbeats written and read after the restart keep them.
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, 10*time.Second, "both see both after NATS restarted", both)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "west goes off east's list", func() error {
		alive, _ := ra.AliveReplicas()
		if alive[b.Replica()] {
			return errors.New("west still alive")
		}
		if !alive[a.Replica()] {
			return errors.New("east itself not alive")
		}
		return nil
	})
}

// TestRelay_WritesBeforeOpen writes committed while no relay ran (a sidecar killed before
// it published them, restarted) reach the other cluster through the bucket: a relay
// compares every context it holds with the bucket when it opens.
func TestRelay_WritesBeforeOpen(t *testing.T) {
	ns := startNATS(t, t.TempDir(), 0)
	a, b := openStore(t, "a"), openStore(t, "b")
	rb := startRelay(t, ns.ClientURL(), "west", b, nil)
	eventually(t, 10*time.Second, "west ready", rb.Ready)
	apply(t, a, "early", ops.Op{Kind: ops.Incr, Key: "n", By: 4}, ops.Op{Kind: ops.Add, Set: "s", Member: "m"})
	ra := startRelay(t, ns.ClientURL(), "east", a, nil)
	eventually(t, 10*time.Second, "west gets the writes made before east's relay opened", counterIs(b, "early", "n", 4))
	if got := metric(t, ra, "ctxprop_relay_published_messages_total"); got != 0 {
		t.Errorf("east published %v messages, want 0: the writes predate its watch", got)
	}
}
