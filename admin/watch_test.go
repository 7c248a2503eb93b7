package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
)

type nextResult struct {
	ev  WatchEvent
	err error
}

// events runs w.Next in the background so tests can wait with a deadline.
func events(w *Watcher) <-chan nextResult {
	ch := make(chan nextResult)
	go func() {
		defer close(ch)
		for {
			ev, err := w.Next()
			ch <- nextResult{ev, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan nextResult) WatchEvent {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch ended")
		}
		if r.err != nil {
			t.Fatalf("watch: %v", r.err)
		}
		return r.ev
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
	}
	return WatchEvent{}
}

func TestWatch_EventsAndResume(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	ctx := context.Background()
	w, err := e.client.Watch(ctx, "wf", 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := events(w)

	if _, err := e.client.Incr(ctx, "other", "k", 1, 0); err != nil { // filtered out
		t.Fatal(err)
	}
	if _, err := e.client.Incr(ctx, "wf", "orders", 2, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Put(ctx, "wf", "steps", "pay", json.RawMessage(`"done"`), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.UpdateSet(ctx, "wf", "regions", []string{"eu", "us"}, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Del(ctx, "wf", "steps", "pay"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.UpdateSet(ctx, "wf", "regions", nil, []string{"us"}, 0); err != nil {
		t.Fatal(err)
	}
	want := []WatchEvent{
		{Counters: map[string]int64{"orders": 2}},
		{Maps: map[string]map[string]json.RawMessage{"steps": {"pay": json.RawMessage(`"done"`)}}},
		{Sets: map[string][]string{"regions": {"eu", "us"}}},
		{Maps: map[string]map[string]json.RawMessage{"steps": {"pay": json.RawMessage(`null`)}}},
		{Sets: map[string][]string{"regions": {"eu"}}}, // a removal names no set: every live set
	}
	var ids []uint64
	for i, wantEv := range want {
		ev := next(t, ch)
		if ev.Type != EventChange || ev.Context != "wf" || ev.Origin == "" || ev.Time.IsZero() || ev.ID == 0 {
			t.Errorf("event %d: %+v lacks type, context, origin, time or id", i, ev)
		}
		if i > 0 && ev.ID <= ids[i-1] {
			t.Errorf("event %d: id %d not after %d", i, ev.ID, ids[i-1])
		}
		ids = append(ids, ev.ID)
		if !reflect.DeepEqual(ev.Counters, wantEv.Counters) || !reflect.DeepEqual(ev.Maps, wantEv.Maps) || !reflect.DeepEqual(ev.Sets, wantEv.Sets) {
			t.Errorf("event %d: counters %v maps %s sets %v; want %v %s %v", i, ev.Counters, ev.Maps, ev.Sets, wantEv.Counters, wantEv.Maps, wantEv.Sets)
		}
	}
	if got := w.Last; got != ids[len(ids)-1] {
		t.Errorf("Last = %d, want %d", got, ids[len(ids)-1])
	}
	w.Close()

	// Resume after the second event: the three after it come again, from the store's log.
	w2, err := e.client.Watch(ctx, "wf", ids[1])
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	ch2 := events(w2)
	for i := 2; i < len(ids); i++ {
		if ev := next(t, ch2); ev.ID != ids[i] {
			t.Errorf("resumed event id %d, want %d", ev.ID, ids[i])
		}
	}
	if err := e.client.Delete(ctx, "wf"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch2); !ev.Cleared {
		t.Errorf("delete event %+v: want cleared", ev)
	}
}

func TestWatch_ResetWhenMissed(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	ctx := context.Background()
	// ID 1 is older than anything the store holds.
	w, err := e.client.Watch(ctx, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ch := events(w)
	if ev := next(t, ch); ev.Type != EventReset || ev.Reason != "missed" {
		t.Errorf("first event %+v, want a reset for missed events", ev)
	}
	if _, err := e.client.Incr(ctx, "any", "k", 1, 0); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Type != EventChange || ev.Context != "any" {
		t.Errorf("event %+v, want the change of context any", ev)
	}
}

func TestWatch_KeepAlive(t *testing.T) {
	e := newTestEnv(t, Options{KeepAlive: 10 * time.Millisecond}, localstore.Limits{})
	resp, err := e.client.hc.Get(e.base + "/v1/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got, want := resp.Header.Get("Content-Type"), "text/event-stream"; got != want {
		t.Errorf("Content-Type %q, want %q", got, want)
	}
	buf := make([]byte, 0, 256)
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(string(buf), ": keep-alive\n\n") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no keep-alive comments in %q", buf)
		}
		tmp := make([]byte, 64)
		n, err := resp.Body.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatch_EndsOnClose(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	w, err := e.client.Watch(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ch := events(w)
	closed := make(chan error, 1)
	go func() { closed <- e.server.Close(context.Background()) }()
	select {
	case r := <-ch:
		if !errors.Is(r.err, io.ErrUnexpectedEOF) {
			t.Errorf("watch ended with %v, want io.ErrUnexpectedEOF", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not end on Close")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestWatch_ClientGoneAndBadInput(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	w, err := e.client.Watch(ctx, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Next(); !errors.Is(err, context.Canceled) {
		t.Errorf("Next after cancel: %v, want context.Canceled", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.server.inFlight.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the watch handler did not end when its client left")
		}
		time.Sleep(time.Millisecond)
	}

	_, err = e.client.Watch(context.Background(), "bad name", 0)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("Watch(bad name): %v, want a 400", err)
	}
	r, err := http.NewRequest("GET", e.base+"/v1/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Last-Event-ID", "yesterday")
	resp, err := e.client.hc.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.StatusCode, 400; got != want {
		t.Errorf("bad Last-Event-ID: status %d, want %d", got, want)
	}
}
