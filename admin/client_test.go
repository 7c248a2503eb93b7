package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

func TestClient_AgainstServer(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{MaxContexts: 2})
	c, ctx := e.client, context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	v, err := c.Incr(ctx, "wf", "orders", 5, time.Hour)
	must(err)
	if v != 5 {
		t.Errorf("Incr = %d, want 5", v)
	}
	v, err = c.Incr(ctx, "wf", "orders", -2, 0)
	must(err)
	if got, err := c.Counter(ctx, "wf", "orders"); err != nil || got != 3 || v != 3 {
		t.Errorf("Counter = %d, %v (Incr %d); want 3", got, err, v)
	}
	must(c.Put(ctx, "wf", "steps", "pay", json.RawMessage(`{"ok":true}`), time.Hour))
	must(c.Put(ctx, "wf", "steps", "ship", json.RawMessage(`"later"`), 0))
	must(c.Del(ctx, "wf", "steps", "ship"))
	if got, err := c.MapGet(ctx, "wf", "steps", "pay"); err != nil || string(got) != `{"ok":true}` {
		t.Errorf("MapGet = %s, %v", got, err)
	}
	if _, err := c.MapGet(ctx, "wf", "steps", "ship"); !IsNotFound(err) {
		t.Errorf("MapGet deleted: %v, want 404", err)
	}
	if got, err := c.Map(ctx, "wf", "steps"); err != nil || len(got) != 1 || string(got["pay"]) != `{"ok":true}` {
		t.Errorf("Map = %s, %v", got, err)
	}
	members, err := c.UpdateSet(ctx, "wf", "regions", []string{"us", "eu", "ap"}, []string{"ap"}, time.Hour)
	must(err)
	if want := []string{"eu", "us"}; !reflect.DeepEqual(members, want) {
		t.Errorf("UpdateSet = %q, want %q", members, want)
	}
	if got, err := c.Set(ctx, "wf", "regions"); err != nil || !reflect.DeepEqual(got, []string{"eu", "us"}) {
		t.Errorf("Set = %q, %v", got, err)
	}
	must(c.Ops(ctx, "wf", []ops.Op{
		{Kind: ops.Incr, Key: "orders", By: 10, TTL: time.Minute},
		{Kind: ops.Put, Map: "steps", Key: "ship", Value: json.RawMessage(`[1,2]`)},
		{Kind: ops.Add, Set: "regions", Member: "sa"},
		{Kind: ops.Rem, Set: "regions", Member: "eu"},
		{Kind: ops.Del, Map: "steps", Key: "pay"},
	}))
	must(c.OpsHeader(ctx, "wf", `incr;key="orders";by=7`))
	must(c.SetTTL(ctx, "wf", time.Hour, true))
	snap, err := c.Get(ctx, "wf")
	must(err)
	want := localstore.Snapshot{
		Name:     "wf",
		Counters: map[string]int64{"orders": 20},
		Maps:     map[string]map[string]json.RawMessage{"steps": {"ship": json.RawMessage(`[1,2]`)}},
		Sets:     map[string][]string{"regions": {"sa", "us"}},
		Replicas: 1,
	}
	if snap.ExpiresAt == nil || time.Until(*snap.ExpiresAt) < 59*time.Minute {
		t.Errorf("ExpiresAt = %v, want about an hour from now", snap.ExpiresAt)
	}
	snap.ExpiresAt = nil
	if !reflect.DeepEqual(snap, want) {
		t.Errorf("Get =\n %+v\nwant\n %+v", snap, want)
	}
	must(c.SetTTL(ctx, "wf", 0, false))
	list, err := c.List(ctx)
	must(err)
	if want := []localstore.Summary{{Name: "wf", Counters: 1, Maps: 1, Sets: 1}}; !reflect.DeepEqual(list, want) {
		t.Errorf("List = %+v, want %+v", list, want)
	}
	peers, err := c.Peers(ctx)
	must(err)
	if len(peers) != 0 {
		t.Errorf("Peers = %v, want none", peers)
	}
	must(c.Delete(ctx, "wf"))
	if _, err := c.Get(ctx, "wf"); !IsNotFound(err) {
		t.Errorf("Get deleted: %v, want 404", err)
	}

	// Errors carry the server's status, code and message.
	_, err = c.Incr(ctx, "bad name", "k", 1, 0)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != CodeBadRequest || ae.Message == "" {
		t.Errorf("Incr(bad name): %#v", err)
	}
	if err := c.Delete(ctx, "wf"); !IsNotFound(err) {
		t.Errorf("Delete of a deleted context: %v, want 404", err)
	}
	// The marker the delete of wf left does not count toward max_contexts = 2.
	_, err = c.Incr(ctx, "a", "k", 1, 0)
	must(err)
	_, err = c.Incr(ctx, "b", "k", 1, 0)
	must(err)
	_, err = c.Incr(ctx, "c", "k", 1, 0)
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Limit != "max_contexts" {
		t.Errorf("Incr over max_contexts: %#v", err)
	}
	if err := c.Ops(ctx, "a", nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("Ops(nil): %v, want 400", err)
	}
}

// TestClient_ReusesConnections checks that sequential calls, error answers included,
// share one keep-alive connection.
func TestClient_ReusesConnections(t *testing.T) {
	e := newTestEnv(t, Options{}, localstore.Limits{})
	ctx := context.Background()
	for range 20 {
		if _, err := e.client.Incr(ctx, "r", "k", 1, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.Get(ctx, "absent"); !IsNotFound(err) {
			t.Fatal(err)
		}
	}
	if got, want := e.server.conns.Load(), int64(1); got != want {
		t.Errorf("%d connections for 40 calls, want %d", got, want)
	}
}

// TestClient_NotTheAPI checks the error for an answer that is not one of the API's.
func TestClient_NotTheAPI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream gone", http.StatusBadGateway)
	}))
	defer srv.Close()
	err := NewClient(srv.URL, srv.Client()).Health(context.Background())
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || !strings.Contains(ae.Message, "upstream gone") {
		t.Errorf("Health: %#v, want a 502 *Error quoting the body", err)
	}
}
