package webui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/proxy"
)

// HistoryPath is where a History answers on the admin API.
const HistoryPath = "/v1/history"

// Defaults of HistoryOptions.
const (
	DefaultHistoryInterval = 5 * time.Second
	DefaultHistoryWindow   = 10 * time.Minute
	// MaxHistorySamples bounds Window/Interval, and so the ring's memory.
	MaxHistorySamples = 1440
)

// CounterReader reads a few counters of every context; *localstore.Store is one. History
// calls it from its sampling goroutine, once per interval; it must be safe for concurrent
// use and return slices the caller may keep.
type CounterReader interface {
	Counters(marker string, keys []string) []localstore.ContextCounters
}

// FlagCounter reports flag evaluations; *flags.Flags is one. Evaluations returns the
// evaluations since start by result (reason or error code); it is called once per
// interval, must be safe for concurrent use, must not block, and returns a map the caller
// may keep.
type FlagCounter interface {
	Evaluations() map[string]uint64
}

// HistoryOptions configure a History.
type HistoryOptions struct {
	// Store holds the per-context telemetry the inbound proxies write (SPEC §5). Required.
	Store CounterReader
	// Peers reports the replication peers and their lag; nil charts no peers.
	Peers admin.Peers
	// Flags reports flag evaluations; nil charts none.
	Flags FlagCounter
	// Interval is the time between two samples (admin.chart_interval); 0 means
	// DefaultHistoryInterval. Each sample reads the store as a /metrics scrape does.
	Interval time.Duration
	// Window is how much history the ring keeps (admin.chart_window); 0 means
	// DefaultHistoryWindow. The ring holds Window/Interval samples: NewHistory refuses
	// fewer than 2 or more than MaxHistorySamples.
	Window time.Duration
	// Max is how many contexts get series of their own in a sample
	// (admin.context_metrics_max), the others summed under "_other" as on /metrics; it
	// bounds the peers of a sample too (the laggiest). 0 keeps only "_other" and no peer.
	Max int
	// Allow names contexts that always get series of their own (admin.context_metrics),
	// taking the first of the Max places, as on /metrics.
	Allow []string
	// Logger; nil discards.
	Logger hclog.Logger
}

// History keeps, in memory, a bounded ring of samples of what the web page charts: the
// requests, errors and latency buckets each context gained in each interval (fleet-wide
// sums, read from the store), each peer's replication lag, and the flag evaluations by
// result. It serves the ring as JSON on GET HistoryPath, so that the page's charts show
// the last Window as soon as it loads, not only what happened since.
//
// Bounds: Window/Interval samples (at most MaxHistorySamples), each with at most Max+1
// contexts and Max peers: about 100 bytes per context and peer in a sample, so 120
// samples of 51 contexts (the defaults) hold about 600 KB. Between two samples History
// also keeps the last store read (the cumulative telemetry of every context that has
// some), as the /metrics collector does, so that a context's increments are exact when it
// enters the top Max.
//
// Lifecycle: NewHistory starts nothing; Open takes a first read (the baseline: the first
// sample comes one Interval later) and samples every Interval until Close.
type History struct {
	opt   HistoryOptions
	log   hclog.Logger
	keys  []string
	allow map[string]bool

	mu      sync.Mutex
	ring    []sample // len = capacity; ring[(head+i)%cap] for i < count, oldest first
	head    int
	count   int
	prev    map[string][]int64 // the last store read, by context
	prevAt  time.Time
	flags   map[string]uint64 // the last flag evaluation totals
	started bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// sample is what changed in one interval. It is never modified once in the ring.
type sample struct {
	at       time.Time
	seconds  float64          // length of the interval
	contexts []contextSample  // at most Max, then "_other" when some context was folded
	folded   int              // contexts summed under "_other"
	peers    []peerSample     // the laggiest alive or suspect peers, at most Max
	unshown  int              // alive or suspect peers past Max
	flags    map[string]int64 // evaluations in the interval by result; zeros left out
}

type contextSample struct {
	name  string
	delta []int64 // in the order of History.keys
}

type peerSample struct {
	address, name string
	lag           time.Duration
}

// Indexes into History.keys and contextSample.delta.
const (
	iRequests = iota
	iErrors
	iLatencySum
	iBuckets
)

// NewHistory returns a History for opt, or an error naming the option (and its config
// attribute) that is out of range.
func NewHistory(opt HistoryOptions) (*History, error) {
	if opt.Store == nil {
		return nil, errors.New("webui: NewHistory needs a Store")
	}
	if opt.Interval < 0 || opt.Window < 0 || opt.Max < 0 {
		return nil, fmt.Errorf("webui: history interval %s, window %s and max %d must not be negative (admin.chart_interval, admin.chart_window, admin.context_metrics_max)", opt.Interval, opt.Window, opt.Max)
	}
	if opt.Interval == 0 {
		opt.Interval = DefaultHistoryInterval
	}
	if opt.Window == 0 {
		opt.Window = DefaultHistoryWindow
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	n := opt.Window / opt.Interval
	if n < 2 || n > MaxHistorySamples {
		return nil, fmt.Errorf("webui: a history window of %s sampled every %s keeps %d samples; want 2 to %d: "+
			"set admin.chart_window to between 2 and %d times admin.chart_interval", opt.Window, opt.Interval, n, MaxHistorySamples, MaxHistorySamples)
	}
	keys := []string{proxy.KeyRequests, proxy.KeyErrors, proxy.KeyLatencySum}
	keys = append(keys, proxy.BucketKeys[:]...)
	// A context written by sidecars from before issue 16 holds its buckets under the
	// old names; sample adds them to the new ones, as the /metrics collector does.
	keys = append(keys, proxy.LegacyBucketKeys[:]...)
	h := &History{
		opt:   opt,
		log:   opt.Logger,
		keys:  keys,
		allow: make(map[string]bool, len(opt.Allow)),
		ring:  make([]sample, n),
	}
	for _, name := range opt.Allow {
		h.allow[name] = true
	}
	return h, nil
}

// Open takes the baseline read and starts sampling every Interval. Calling it twice is
// an error.
func (h *History) Open() error {
	h.mu.Lock()
	if h.started {
		h.mu.Unlock()
		return errors.New("webui: History already opened")
	}
	h.started = true
	h.mu.Unlock()
	h.sample(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(h.opt.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				h.sample(now)
			}
		}
	}()
	h.log.Debug("sampling for the web page's charts", "interval", h.opt.Interval, "samples", len(h.ring), "max_series", h.opt.Max)
	return nil
}

// Close stops sampling and waits for a sample in progress. It is safe to call twice.
func (h *History) Close() error {
	h.once.Do(func() {
		if h.cancel != nil {
			h.cancel()
		}
		h.wg.Wait()
	})
	return nil
}

// sample reads the store, the peers and the flag counts, and puts what changed since the
// last read in the ring. The first call only takes the baseline.
func (h *History) sample(now time.Time) {
	read := h.opt.Store.Counters(proxy.KeyRequests, h.keys)
	cur := make(map[string][]int64, len(read))
	legacy := iBuckets + len(proxy.BucketKeys)
	for i, cc := range read {
		for b := range proxy.BucketKeys {
			cc.Values[iBuckets+b] += cc.Values[legacy+b]
		}
		read[i].Values = cc.Values[:legacy]
		cur[cc.Name] = read[i].Values
	}
	var evals map[string]uint64
	if h.opt.Flags != nil {
		evals = h.opt.Flags.Evaluations()
	}
	var peers []admin.PeerStatus
	if h.opt.Peers != nil {
		peers = h.opt.Peers.Peers()
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	prev, prevAt, prevFlags := h.prev, h.prevAt, h.flags
	h.prev, h.prevAt, h.flags = cur, now, evals
	if prev == nil {
		return // the baseline
	}
	s := sample{at: now, seconds: now.Sub(prevAt).Seconds()}
	s.contexts, s.folded = h.contextDeltas(read, prev)
	s.peers, s.unshown = h.laggiest(peers)
	for result, n := range evals {
		if d := counterDelta(int64(n), int64(prevFlags[result])); d != 0 {
			if s.flags == nil {
				s.flags = make(map[string]int64)
			}
			s.flags[result] = d
		}
	}
	if h.count < len(h.ring) {
		h.ring[(h.head+h.count)%len(h.ring)] = s
		h.count++
	} else {
		h.ring[h.head] = s
		h.head = (h.head + 1) % len(h.ring)
	}
}

// counterDelta is what a counter gained since prev; a counter that went down was reset
// (its context deleted and written again), so it gained its whole value, as Prometheus'
// rate() reads a reset.
func counterDelta(cur, prev int64) int64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// contextDeltas returns the increments of the contexts ranked as /metrics ranks them
// (allowed first, then by requests since they exist, names breaking ties), at most Max
// of them, then the others summed under proxy.OtherContext, with their number.
func (h *History) contextDeltas(read []localstore.ContextCounters, prev map[string][]int64) ([]contextSample, int) {
	ranked := slices.Clone(read)
	slices.SortFunc(ranked, func(a, b localstore.ContextCounters) int {
		if x, y := h.allow[a.Name], h.allow[b.Name]; x != y {
			if x {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.Values[iRequests], a.Values[iRequests]); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	var out []contextSample
	var other []int64
	folded := 0
	for _, cc := range ranked {
		d := make([]int64, len(h.keys))
		p := prev[cc.Name] // nil for a context new since the last read: all of it is new
		for i, v := range cc.Values {
			var pv int64
			if p != nil {
				pv = p[i]
			}
			d[i] = counterDelta(v, pv)
		}
		// "_other" itself is always folded: its series would be two in one.
		if len(out) < h.opt.Max && cc.Name != proxy.OtherContext {
			out = append(out, contextSample{name: cc.Name, delta: d})
			continue
		}
		if other == nil {
			other = make([]int64, len(h.keys))
		}
		for i, v := range d {
			other[i] += v
		}
		folded++
	}
	if other != nil {
		out = append(out, contextSample{name: proxy.OtherContext, delta: other})
	}
	return out, folded
}

// laggiest returns the alive and suspect peers with the most lag, at most Max, and how
// many such peers it left out. Dead and departed peers have no lag worth charting.
func (h *History) laggiest(peers []admin.PeerStatus) ([]peerSample, int) {
	var live []admin.PeerStatus
	for _, p := range peers {
		if p.State == "alive" || p.State == "suspect" {
			live = append(live, p)
		}
	}
	slices.SortFunc(live, func(a, b admin.PeerStatus) int {
		if c := cmp.Compare(b.Lag, a.Lag); c != 0 {
			return c
		}
		return cmp.Compare(a.Address, b.Address)
	})
	n := min(len(live), h.opt.Max)
	out := make([]peerSample, n)
	for i, p := range live[:n] {
		out[i] = peerSample{address: p.Address, name: p.Name, lag: p.Lag}
	}
	return out, len(live) - n
}

// HistoryAnswer is the body of GET HistoryPath: the ring, oldest sample first, as
// columns. Every series has one entry per sample; null where the context or peer was not
// among those charted at that sample (its traffic is then in "_other").
type HistoryAnswer struct {
	Interval float64 `json:"interval_seconds"` // the sampling interval
	Window   float64 `json:"window_seconds"`   // how much history the ring keeps
	// Max is admin.context_metrics_max: contexts and peers charted per sample.
	Max int `json:"max_series"`
	// Times are the ends of the samples' intervals, in Unix milliseconds.
	Times []int64 `json:"times"`
	// Seconds are the samples' lengths, to turn counts into rates.
	Seconds []float64 `json:"seconds"`
	// LatencyBounds are the upper bounds of the latency buckets, in seconds; each
	// context's Latency has one more entry, past the last bound.
	LatencyBounds []float64        `json:"latency_bounds_seconds"`
	Contexts      []ContextHistory `json:"contexts"`
	// Folded is how many contexts the newest sample summed under "_other".
	Folded int           `json:"folded_contexts"`
	Peers  []PeerHistory `json:"peers"`
	// Unshown is how many alive or suspect peers the newest sample left out.
	Unshown int           `json:"unshown_peers"`
	Flags   []FlagHistory `json:"flag_evaluations"`
}

// ContextHistory is one context's series. Contexts come allowed first (admin.context_metrics),
// then by requests in the window, "_other" last.
type ContextHistory struct {
	Name     string   `json:"name"`
	Requests []*int64 `json:"requests"` // requests in each sample
	Errors   []*int64 `json:"errors"`   // errors (5xx, 502/504) in each sample
	// Latency counts the window's requests by latency bucket (not cumulative): entry i
	// those at most LatencyBounds[i] and above the bound before it; the last, those above
	// every bound or upgraded (WebSocket, no duration).
	Latency           []int64 `json:"latency"`
	LatencySumSeconds float64 `json:"latency_sum_seconds"` // the window's latencies summed
}

// PeerHistory is one peer's lag at each sample, in seconds.
type PeerHistory struct {
	Address string     `json:"address"`
	Name    string     `json:"name,omitempty"`
	Lag     []*float64 `json:"lag_seconds"`
}

// FlagHistory counts the evaluations of one result (reason or error code) in each sample.
type FlagHistory struct {
	Result string  `json:"result"`
	Counts []int64 `json:"counts"`
}

// Answer returns the ring as GET HistoryPath serves it.
func (h *History) Answer() HistoryAnswer {
	h.mu.Lock()
	samples := make([]sample, h.count)
	for i := range samples {
		samples[i] = h.ring[(h.head+i)%len(h.ring)]
	}
	h.mu.Unlock()

	n := len(samples)
	a := HistoryAnswer{
		Interval:      h.opt.Interval.Seconds(),
		Window:        (time.Duration(len(h.ring)) * h.opt.Interval).Seconds(),
		Max:           h.opt.Max,
		Times:         make([]int64, n),
		Seconds:       make([]float64, n),
		LatencyBounds: make([]float64, len(proxy.LatencyBuckets)),
		Contexts:      []ContextHistory{},
		Peers:         []PeerHistory{},
		Flags:         []FlagHistory{},
	}
	for i, b := range proxy.LatencyBuckets {
		a.LatencyBounds[i] = b.Seconds()
	}
	contexts := map[string]*ContextHistory{}
	peers := map[string]*PeerHistory{}
	flags := map[string]*FlagHistory{}
	buckets := len(proxy.LatencyBuckets)
	for i, s := range samples {
		a.Times[i] = s.at.UnixMilli()
		a.Seconds[i] = s.seconds
		for _, c := range s.contexts {
			ch := contexts[c.name]
			if ch == nil {
				ch = &ContextHistory{Name: c.name, Requests: make([]*int64, n), Errors: make([]*int64, n), Latency: make([]int64, buckets+1)}
				contexts[c.name] = ch
			}
			ch.Requests[i], ch.Errors[i] = &c.delta[iRequests], &c.delta[iErrors]
			ch.LatencySumSeconds += float64(c.delta[iLatencySum]) / 1e6 // stored in µs
			// The stored buckets are cumulative; the chart wants each bucket's own count.
			below := int64(0)
			for b := range buckets {
				v := c.delta[iBuckets+b]
				ch.Latency[b] += v - below
				below = v
			}
			ch.Latency[buckets] += c.delta[iRequests] - below
		}
		for _, p := range s.peers {
			ph := peers[p.address]
			if ph == nil {
				ph = &PeerHistory{Address: p.address, Lag: make([]*float64, n)}
				peers[p.address] = ph
			}
			if p.name != "" {
				ph.Name = p.name
			}
			lag := p.lag.Seconds()
			ph.Lag[i] = &lag
		}
		for result, d := range s.flags {
			fh := flags[result]
			if fh == nil {
				fh = &FlagHistory{Result: result, Counts: make([]int64, n)}
				flags[result] = fh
			}
			fh.Counts[i] = d
		}
	}
	if n > 0 {
		a.Folded, a.Unshown = samples[n-1].folded, samples[n-1].unshown
	}
	total := func(ch *ContextHistory) (t int64) {
		for _, v := range ch.Requests {
			if v != nil {
				t += *v
			}
		}
		return t
	}
	for _, ch := range contexts {
		a.Contexts = append(a.Contexts, *ch)
	}
	slices.SortFunc(a.Contexts, func(x, y ContextHistory) int {
		if ox, oy := x.Name == proxy.OtherContext, y.Name == proxy.OtherContext; ox != oy {
			if ox {
				return 1
			}
			return -1
		}
		if ax, ay := h.allow[x.Name], h.allow[y.Name]; ax != ay {
			if ax {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(total(&y), total(&x)); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
	for _, ph := range peers {
		a.Peers = append(a.Peers, *ph)
	}
	slices.SortFunc(a.Peers, func(x, y PeerHistory) int { return cmp.Compare(x.Address, y.Address) })
	for _, fh := range flags {
		a.Flags = append(a.Flags, *fh)
	}
	slices.SortFunc(a.Flags, func(x, y FlagHistory) int { return cmp.Compare(x.Result, y.Result) })
	return a
}

// ServeHTTP answers GET HistoryPath with the ring. Mount it on the admin API:
//
//	adminServer.Handle("GET "+webui.HistoryPath, history)
func (h *History) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		admin.WriteError(w, &admin.Error{Status: http.StatusMethodNotAllowed, Code: admin.CodeMethodNotAllowed,
			Message: fmt.Sprintf("%s is read-only; use GET", HistoryPath)})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	admin.WriteJSON(w, http.StatusOK, h.Answer())
}
