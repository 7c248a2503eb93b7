package proxy

import (
	"context"
	"errors"

	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

// windowedStore is cmd/sidecar's requestPathStore: the real store, request-path writes
// committed within the commit window, Commit a Sync.
type windowedStore struct{ s *localstore.Store }

func (w windowedStore) Apply(name string, list []ops.Op) error {
	_, err := w.s.Apply(context.Background(), name, list, localstore.Windowed)
	return err
}

func (w windowedStore) Commit(ctx context.Context) error { return w.s.Sync(ctx) }

var _ Committer = windowedStore{}

func openStore(t *testing.T, path string, lim localstore.Limits) *localstore.Store {
	t.Helper()
	s := localstore.New(localstore.Options{Path: path, Limits: lim, Logger: testLogger(t)})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// telemetryApp answers /slow/N after N milliseconds and /fail with 500, the rest at once,
// so that the requests fall in different latency buckets and some are errors.
func telemetryApp(t *testing.T) *httptest.Server {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ms, ok := strings.CutPrefix(r.URL.Path, "/slow/"); ok {
			n, _ := strconv.Atoi(ms)
			time.Sleep(time.Duration(n) * time.Millisecond) // the latency under test, not synchronisation
		}
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(app.Close)
	return app
}

// send makes one request through the inbound proxy in context name.
func send(c *http.Client, addr, path, name string) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Baggage", "ctx.name="+name)
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, res.Body)
	return res.Body.Close()
}

// TestTelemetry_WindowSumsEqualPerRequestCounts sends real requests in three contexts
// through an open proxy to a real store and checks that the counters the windows wrote are
// exactly the per-request counts: the requests and errors sent, and latency buckets equal
// to the proxy's own per-request histogram, which sees the same elapsed times. The store
// must have taken far fewer changes than requests: one per context per window, not one per
// request (issue 14).
func TestTelemetry_WindowSumsEqualPerRequestCounts(t *testing.T) {
	app := telemetryApp(t)
	store := openStore(t, filepath.Join(t.TempDir(), "ctx.db"), localstore.Limits{})
	const window = 50 * time.Millisecond
	p := startProxy(t, Options{App: hostOf(app.URL), Store: windowedStore{store}, ContextBaggage: "ctx.name", TelemetryWindow: window})
	addr := p.InboundAddr().String()

	names := []string{"t-a", "t-b", "t-c"}
	paths := []string{"/", "/fail", "/slow/7", "/slow/30", "/"}
	const perWorker = 60
	want := map[string][2]int64{} // name → requests, errors
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 6 {
		wg.Go(func() {
			c := &http.Client{Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for i := range perWorker {
				name, path := names[(w+i)%len(names)], paths[i%len(paths)]
				if err := send(c, addr, path, name); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				n := want[name]
				n[0]++
				if path == "/fail" {
					n[1]++
				}
				want[name] = n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	// The windows after the last request: poll until every request is counted.
	var total int64
	for _, n := range want {
		total += n[0]
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got int64
		for _, name := range names {
			v, _ := store.Counter(name, KeyRequests)
			got += v
		}
		if got == total {
			break
		}
		if got > total || time.Now().After(deadline) {
			t.Fatalf("http.requests over the contexts = %d, want %d", got, total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var buckets [len(LatencyBuckets)]int64
	for _, name := range names {
		for key, w := range map[string]int64{KeyRequests: want[name][0], KeyErrors: want[name][1]} {
			if got, _ := store.Counter(name, key); got != w {
				t.Errorf("%s %s = %d, want %d", name, key, got, w)
			}
		}
		for i, key := range BucketKeys {
			v, _ := store.Counter(name, key)
			buckets[i] += v
		}
	}
	// The proxy's histogram counts each request once, in the bucket of its elapsed time;
	// its bounds include LatencyBuckets. Cumulated to each of those, it must equal the sum
	// of the contexts' cumulative buckets.
	side := &p.reqs.sides[sideInbound]
	for i, le := range LatencyBuckets {
		var cum int64
		for j, bound := range durationBounds {
			if bound <= le {
				cum += int64(side.buckets[j].Load())
			}
		}
		if got := buckets[i]; got != cum {
			t.Errorf("%s summed over the contexts = %d, the proxy's histogram has %d requests within %s", BucketKeys[i], got, cum, le)
		}
	}
	if buckets[0] == 0 || buckets[0] == total {
		t.Errorf("%s = %d of %d requests: the test wants some requests in the first bucket and some after it", BucketKeys[0], buckets[0], total)
	}

	windows := int64(elapsed/window) + 3 // the partial ones at each end, and the last
	if got, max := int64(store.Stats().Changes), windows*int64(len(names)); got > max {
		t.Errorf("the store took %d changes for %d requests in %s; want at most %d: one per context per window of %s", got, total, elapsed.Round(time.Millisecond), max, window)
	}
}

// TestTelemetry_CloseWritesTheLastWindow sends requests to a proxy whose window never
// ends, closes it, and finds every request counted in the bbolt file after the store
// is closed and opened again: nothing summed in memory is lost on a graceful stop.
func TestTelemetry_CloseWritesTheLastWindow(t *testing.T) {
	app := telemetryApp(t)
	path := filepath.Join(t.TempDir(), "ctx.db")
	store := localstore.New(localstore.Options{Path: path, Logger: testLogger(t), CommitWindow: time.Hour})
	if err := store.Open(); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, Options{App: hostOf(app.URL), Store: windowedStore{store}, ContextBaggage: "ctx.name", TelemetryWindow: time.Hour})
	const n = 25
	c := &http.Client{Transport: &http.Transport{}}
	for i := range n {
		path := "/"
		if i%5 == 0 {
			path = "/fail"
		}
		if err := send(c, p.InboundAddr().String(), path, "closing"); err != nil {
			t.Fatal(err)
		}
	}
	c.CloseIdleConnections()
	if got, _ := store.Counter("closing", KeyRequests); got != 0 {
		t.Fatalf("http.requests = %d before Close with a window of an hour; want 0 (summed in memory)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Close committed the window: the write-ahead log holds it with the store's own
	// window still an hour away. Closing and reopening reads it from disk.
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openStore(t, path, localstore.Limits{})
	for key, want := range map[string]int64{KeyRequests: n, KeyErrors: n / 5, BucketKeys[len(BucketKeys)-1]: n} {
		if got, err := reopened.Counter("closing", key); err != nil || got != want {
			t.Errorf("after Close and reopening: %s = %d (%v), want %d", key, got, err, want)
		}
	}
}

// TestTelemetry_WindowOverLimitFailsLoudly fills the store's max_contexts and sends
// requests into a context that would pass it: the window's write is refused, and the
// refusal is counted (StoreErrors, TelemetryLost with the number of requests it held) and
// logged naming the limit; the context within the limit gets its counts.
func TestTelemetry_WindowOverLimitFailsLoudly(t *testing.T) {
	app := telemetryApp(t)
	store := openStore(t, filepath.Join(t.TempDir(), "ctx.db"), localstore.Limits{MaxContexts: 1})
	if _, err := store.Apply(context.Background(), "kept", []ops.Op{{Kind: ops.Incr, Key: "x", By: 1}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: io.MultiWriter(&logs, &testWriter{t: t})})
	p := startProxy(t, Options{App: hostOf(app.URL), Store: windowedStore{store}, ContextBaggage: "ctx.name",
		TelemetryWindow: 20 * time.Millisecond, Logger: log})
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	const over, kept = 7, 3
	for i := range over + kept {
		name := "over"
		if i < kept {
			name = "kept"
		}
		if err := send(c, p.InboundAddr().String(), "/", name); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().TelemetryLost < over && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := p.Stats()
	if got, want := st.TelemetryLost, uint64(over); got != want {
		t.Errorf("TelemetryLost = %d, want %d (the requests of the refused context)", got, want)
	}
	if st.StoreErrors == 0 {
		t.Error("StoreErrors = 0, want the refused window counted")
	}
	if out := logs.String(); !strings.Contains(out, "telemetry lost") || !strings.Contains(out, "max_contexts") {
		t.Errorf("log does not say the telemetry was lost and name max_contexts:\n%s", out)
	}
	var lim *localstore.LimitError
	if _, err := store.Apply(context.Background(), "over", []ops.Op{{Kind: ops.Incr, Key: "x", By: 1}}, localstore.Windowed); !errors.As(err, &lim) {
		t.Errorf("store write to a new context: %v, want the limit still in force", err)
	}
	store.Sync(context.Background())
	if got, _ := store.Counter("kept", KeyRequests); got != kept {
		t.Errorf("kept http.requests = %d, want %d", got, kept)
	}
	if _, err := store.Get("over"); err == nil {
		t.Error(`context "over" exists past max_contexts = 1`)
	}
}

// TestTelemetry_WithoutOpenEachRequestWrites checks the Inbound handler used without Open
// (embedded in another server): with no window running, each request writes its own
// telemetry, so nothing waits in memory for a flush that never comes.
func TestTelemetry_WithoutOpenEachRequestWrites(t *testing.T) {
	app := telemetryApp(t)
	store := newMemStore()
	p, err := New(Options{App: hostOf(app.URL), Store: store, ContextBaggage: "ctx.name", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Inbound())
	defer srv.Close()
	for i := range 3 {
		if err := send(http.DefaultClient, strings.TrimPrefix(srv.URL, "http://"), "/", "embedded"); err != nil {
			t.Fatal(err)
		}
		store.waitCounter(t, "embedded", KeyRequests, int64(i+1))
	}
	if got, want := store.callCount(), 3; got != want {
		t.Errorf("%d Apply calls, want %d", got, want)
	}
}

// BenchmarkTelemetry compares, per request, the telemetry write the proxy made before issue
// 14 (a Windowed Store.Apply of the request's counters into a real store) with the sum in
// memory it makes now (the store write happens once per window, off the request path).
func BenchmarkTelemetry(b *testing.B) {
	b.Run("apply-per-request", func(b *testing.B) {
		store := localstore.New(localstore.Options{Path: filepath.Join(b.TempDir(), "ctx.db")})
		if err := store.Open(); err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		w := windowedStore{store}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var buf [8]ops.Op
			for pb.Next() {
				if err := w.Apply("bench", appendTelemetry(buf[:0], 200, false, 700*time.Microsecond, false)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("summed-in-memory", func(b *testing.B) {
		var tel telemetry
		tel.start()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !tel.add("bench", 200, false, 700*time.Microsecond, false) {
					b.Error("not counted")
					return
				}
			}
		})
	})
}

// TestTelemetry_PastMaxTalliesTheRequestWritesItself: the names come from requests, so
// the sums in memory stop at maxTallies contexts a window; past it add refuses and the
// request writes its own telemetry (finishInbound), and a flush makes room again.
func TestTelemetry_PastMaxTalliesTheRequestWritesItself(t *testing.T) {
	var tel telemetry
	tel.start()
	for i := range maxTallies {
		if !tel.add("c-"+strconv.Itoa(i), 200, false, time.Millisecond, false) {
			t.Fatalf("context %d of %d refused", i+1, maxTallies)
		}
	}
	if tel.add("one-too-many", 200, false, time.Millisecond, false) {
		t.Errorf("context %d counted in memory, want it refused past maxTallies = %d", maxTallies+1, maxTallies)
	}
	if !tel.add("c-0", 200, false, time.Millisecond, false) {
		t.Error("a context already summed was refused")
	}
	if got, want := len(tel.take(false)), maxTallies; got != want {
		t.Fatalf("took %d windows, want %d", got, want)
	}
	// The next take drops the tallies that counted nothing for a whole window.
	tel.take(false)
	if !tel.add("one-too-many", 200, false, time.Millisecond, false) {
		t.Error("refused after the idle tallies were dropped")
	}
	if w := tel.take(true); len(w) != 1 || w[0].requests != 1 {
		t.Errorf("last window %+v, want one context with one request", w)
	}
	if tel.add("after-stop", 200, false, time.Millisecond, false) {
		t.Error("counted after the last take: it would never be written")
	}
}

// TestTelemetry_LatencyKeysHaveOneUnit sends requests through a real proxy into a bbolt
// store and reads the keys it wrote: every latency counter names microseconds, and each
// bucket's name gives its bound in microseconds (issue 16: the buckets were named in
// milliseconds beside a sum in microseconds).
func TestTelemetry_LatencyKeysHaveOneUnit(t *testing.T) {
	store := openStore(t, filepath.Join(t.TempDir(), "ctx.db"), localstore.Limits{})
	app := telemetryApp(t)
	p := startProxy(t, Options{App: hostOf(app.URL), Store: windowedStore{store}, ContextBaggage: "ctx.name", TelemetryWindow: time.Hour})
	c := &http.Client{Transport: &http.Transport{}}
	if err := send(c, p.InboundAddr().String(), "/", "units"); err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := store.Get("units")
	if err != nil {
		t.Fatal(err)
	}
	bounds := map[string]bool{}
	for _, le := range LatencyBuckets {
		bounds[strconv.FormatInt(le.Microseconds(), 10)] = true
	}
	latency := 0
	for key := range snap.Counters {
		rest, ok := strings.CutPrefix(key, "http.latency_")
		if !ok {
			continue
		}
		latency++
		unit, what, _ := strings.Cut(rest, "_")
		if unit != "us" {
			t.Errorf("%s: unit %q, want us like every latency counter", key, unit)
		}
		if bound, ok := strings.CutPrefix(what, "le_"); ok && !bounds[bound] {
			t.Errorf("%s: bound %s µs is none of LatencyBuckets in µs %v", key, bound, bounds)
		}
	}
	// The sum and every bucket: a fast local request is within every bound.
	if got, want := latency, 1+len(LatencyBuckets); got != want {
		t.Errorf("%d latency counters written (%v), want %d", got, snap.Counters, want)
	}
}
