package localstore

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/crdt"
	"github.com/ctxprop/ctxprop/ops"
)

// TestStore_EventBeforeReturn: once a durable write returns, its event is published:
// LastEventID counts it (a syncer's or relay's Close waits for the changes up to it), and
// a watcher subscribed after it does not receive it as new (the relay's
// TestRelay_WritesBeforeOpen failed now and then on that).
func TestStore_EventBeforeReturn(t *testing.T) {
	s := openStore(t, Options{Path: filepath.Join(t.TempDir(), "ctx.db")})
	for i := range 300 {
		before := s.LastEventID()
		if _, err := s.Apply(context.Background(), "c", []ops.Op{{Kind: ops.Incr, Key: "n", By: 1}}, Durable); err != nil {
			t.Fatal(err)
		}
		if got := s.LastEventID(); got <= before {
			t.Fatalf("write %d returned before its event was published: LastEventID %d, was %d before", i, got, before)
		}
	}
}

// telemetryEvent is an event as the proxy's telemetry makes one per context per commit
// window: a delta of its request, error, latency-sum and bucket counters.
func telemetryEvent(i int) Event {
	incs := []crdt.Inc{{Key: "http.requests", By: 40}, {Key: "http.errors", By: 1}, {Key: "http.latency_us_sum", By: 41000}}
	for _, k := range []string{"http.latency_us_le_5000", "http.latency_us_le_25000", "http.latency_us_le_100000", "http.latency_us_le_500000", "http.latency_us_le_2500000"} {
		incs = append(incs, crdt.Inc{Key: k, By: 8})
	}
	var c crdt.Context
	d, err := c.IncrAll(crdt.Write{Replica: 7, At: crdt.Timestamp(1_000_000 + i)}, incs)
	if err != nil {
		panic(err)
	}
	return Event{Context: "bench", Origin: 7, Delta: d, Touched: (&crdt.Context{}).Touches(d)}
}

// TestEventLog_BudgetBoundsMemory: the event log holds at most its budget of memory
// however long the traffic runs, and its estimate of what an event holds is near the
// heap's (issue 14: the log grew for minutes, to some 12 MB, under steady telemetry).
func TestEventLog_BudgetBoundsMemory(t *testing.T) {
	const budget = 1 << 20
	l := newEventLog(eventLogEvents, budget)
	base := liveHeap()
	for i := range 3 * eventLogEvents {
		l.publish([]Event{telemetryEvent(i)}, time.Now())
	}
	held := int64(liveHeap()) - int64(base)
	l.mu.Lock()
	n, estimate := l.n, l.bytes
	events := l.ordered()
	l.mu.Unlock()
	t.Logf("%d events held, estimated %d bytes, %d bytes of live heap (%.0f per event)", n, estimate, held, float64(held)/float64(n))
	if n >= eventLogEvents || estimate > budget {
		t.Fatalf("%d events held, estimated at %d bytes: the budget of %d did not bound them", n, estimate, budget)
	}
	if held > budget*5/4 {
		t.Fatalf("the log holds %d bytes of heap for a budget of %d: eventBytes underestimates", held, budget)
	}
	if held < int64(estimate)/2 {
		t.Fatalf("the log holds %d bytes of heap, estimated at %d: eventBytes overestimates, the budget holds too few events", held, estimate)
	}
	// The newest events, in order, with no gap.
	for i, e := range events {
		if e.ID != events[0].ID+uint64(i) {
			t.Fatalf("event %d has ID %d after %d", i, e.ID, events[0].ID)
		}
	}
	if last := events[len(events)-1].ID; last != l.next-1 {
		t.Fatalf("the newest event held is %d, the newest published %d", last, l.next-1)
	}
	// A watcher resuming from an event no longer held is told so.
	sub, err := l.subscribe("", events[0].ID-2)
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Missed() {
		t.Fatal("a watcher resuming before the oldest event held was not told it missed events")
	}
	sub.Close()
	sub, err = l.subscribe("", events[0].ID-1)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Missed() || len(sub.Events()) != min(len(events), subscriptionBuffer) {
		t.Fatalf("a watcher resuming at the oldest event held: missed %v, %d events queued", sub.Missed(), len(sub.Events()))
	}
	sub.Close()
}

// TestEventLog_CountBound: small events are held up to the count, the oldest dropped.
func TestEventLog_CountBound(t *testing.T) {
	l := newEventLog(16, 1<<20)
	for i := range 40 {
		var c crdt.Context
		d := c.Incr(crdt.Write{Replica: 1, At: crdt.Timestamp(i + 1)}, "n", 1, 0)
		l.publish([]Event{{Context: "c", Delta: d}}, time.Now())
	}
	events := l.ordered()
	if len(events) != 16 || events[15].ID != l.next-1 || events[0].ID != l.next-16 {
		t.Fatalf("held %d events, IDs %d..%d, next %d; want the newest 16", len(events), events[0].ID, events[len(events)-1].ID, l.next)
	}
}

// TestCoalesce_Touched: what a coalesced event touches is the union of what its events
// touch, each list sorted and without duplicates, as joining them pairwise with
// joinTouched gives it, and the events given are left as they were (their lists are
// shared with the writers and the write-ahead log).
func TestCoalesce_Touched(t *testing.T) {
	touched := []crdt.Touched{
		{Counters: []string{"b", "d"}},
		{Counters: []string{"a", "d"}, Sets: []string{"s"}},
		{},
		{Counters: []string{"c"}, Maps: map[string][]string{"m": {"k2"}}, Context: true},
		{Counters: []string{"a"}, Sets: []string{"r", "s"}, Maps: map[string][]string{"m": {"k1"}, "n": {"x"}}},
	}
	var events []Event
	for i, tc := range touched {
		var c crdt.Context
		d := c.Incr(crdt.Write{Replica: 1, At: crdt.Timestamp(i + 1)}, "n", 1, 0)
		events = append(events, Event{Context: "c", Origin: 1, Delta: d, Touched: tc})
		// Another context and origin, interleaved: each pair is its own event.
		events = append(events, Event{Context: "other", Origin: 2, Delta: d, Touched: crdt.Touched{Counters: []string{"z" + strconv.Itoa(i)}}})
	}
	before := fmt.Sprint(events)
	out := coalesce(events)
	if got, want := len(out), 2; got != want {
		t.Fatalf("%d events, want %d", got, want)
	}
	for _, want := range []Event{
		{Context: "c", Touched: touched[0]},
		{Context: "other", Touched: crdt.Touched{Counters: []string{"z0"}}},
	} {
		for _, e := range events[2:] {
			if e.Context == want.Context {
				want.Touched = joinTouched(want.Touched, e.Touched)
			}
		}
		i := slices.IndexFunc(out, func(e Event) bool { return e.Context == want.Context })
		if got, want := fmt.Sprint(out[i].Touched), fmt.Sprint(want.Touched); got != want {
			t.Errorf("context %s touched %s, want %s", out[i].Context, got, want)
		}
	}
	if got := fmt.Sprint(events); got != before {
		t.Errorf("coalesce changed its input:\n%s\nwas\n%s", got, before)
	}
	if got, want := fmt.Sprint(out[0].Touched.Counters), "[a b c d]"; got != want {
		t.Errorf("counters touched %s, want %s", got, want)
	}
}

// TestCoalesce_ManyEventsSameKeys: a window of many events touching the same counters is
// one event listing each counter once, and the list coalesce grows meanwhile stays about
// the size of the keys, not of the events.
func TestCoalesce_ManyEventsSameKeys(t *testing.T) {
	var events []Event
	for i := range 5000 {
		events = append(events, telemetryEvent(i))
	}
	out := coalesce(events)
	if got, want := len(out), 1; got != want {
		t.Fatalf("%d events, want %d", got, want)
	}
	if got, want := fmt.Sprint(out[0].Touched.Counters), fmt.Sprint(events[0].Touched.Counters); got != want {
		t.Errorf("counters touched %s, want %s", got, want)
	}
	if got, keys := cap(out[0].Touched.Counters), len(events[0].Touched.Counters); got > 4*keys {
		t.Errorf("the list of counters touched grew to %d for %d keys", got, keys)
	}
}
