package localstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ops"
)

// expiry returns when context name expires (zero: never), failing if it is not alive.
func expiry(t *testing.T, s *Store, name string) time.Time {
	t.Helper()
	snap, err := s.Get(name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	if snap.ExpiresAt == nil {
		return time.Time{}
	}
	return *snap.ExpiresAt
}

func windowed(t *testing.T, s *Store, name string, list ...ops.Op) {
	t.Helper()
	if _, err := s.Apply(context.Background(), name, list, Windowed); err != nil {
		t.Fatalf("windowed apply to %s: %v", name, err)
	}
}

// TestStore_RequestContextTTL: a context that a Windowed write (the request path)
// creates expires after RequestContextTTL unless written to; one the admin API creates
// does not, even when the request path writes to it later.
func TestStore_RequestContextTTL(t *testing.T) {
	const ttl = time.Hour
	ctx := context.Background()
	open := func(t *testing.T, opt Options) (*Store, *fakeClock) {
		clk := newFakeClock()
		opt.Now, opt.RequestContextTTL = clk.Now, ttl
		return openStore(t, opt), clk
	}
	t.Run("created by the request path, expires unless written to", func(t *testing.T) {
		s, clk := open(t, Options{})
		windowed(t, s, "req", incr("http.requests", 1))
		if got, want := expiry(t, s, "req"), clk.Now().Add(ttl); !got.Equal(want) {
			t.Fatalf("expires %v, want %v", got, want)
		}
		clk.Advance(59 * time.Minute)
		windowed(t, s, "req", incr("http.requests", 1)) // slides
		clk.Advance(59 * time.Minute)
		if got, want := expiry(t, s, "req"), clk.Now().Add(time.Minute); !got.Equal(want) {
			t.Fatalf("after a second write expires %v, want %v", got, want)
		}
		clk.Advance(time.Minute)
		if _, err := s.Get("req"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after the TTL: %v, want ErrNotFound", err)
		}
		// Written again, it lives again, for the TTL again.
		windowed(t, s, "req", incr("http.requests", 1))
		if got, want := expiry(t, s, "req"), clk.Now().Add(ttl); !got.Equal(want) {
			t.Fatalf("recreated, expires %v, want %v", got, want)
		}
	})
	t.Run("created by the admin API, no TTL, and the request path does not add one", func(t *testing.T) {
		s, clk := open(t, Options{})
		apply(t, s, "adm", incr("n", 1))
		if got := expiry(t, s, "adm"); !got.IsZero() {
			t.Fatalf("admin-created context expires %v, want never", got)
		}
		windowed(t, s, "adm", incr("http.requests", 1))
		clk.Advance(2 * ttl)
		if got := expiry(t, s, "adm"); !got.IsZero() {
			t.Fatalf("after a request-path write it expires %v, want never", got)
		}
	})
	t.Run("an admin TTL stays the context's TTL", func(t *testing.T) {
		s, clk := open(t, Options{})
		apply(t, s, "own", incr("n", 1))
		if err := s.SetTTL(ctx, "own", 10*ttl, false); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
		windowed(t, s, "own", incr("http.requests", 1))
		if got, want := expiry(t, s, "own"), clk.Now().Add(10*ttl); !got.Equal(want) {
			t.Fatalf("expires %v, want %v (its own TTL, slid)", got, want)
		}
	})
	t.Run("deleted, then created by the request path", func(t *testing.T) {
		s, clk := open(t, Options{})
		apply(t, s, "gone", incr("n", 1))
		if err := s.Delete(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		windowed(t, s, "gone", incr("http.requests", 1))
		if got, want := expiry(t, s, "gone"), clk.Now().Add(ttl); !got.Equal(want) {
			t.Fatalf("expires %v, want %v", got, want)
		}
	})
	t.Run("kept by removing its TTL", func(t *testing.T) {
		s, clk := open(t, Options{})
		windowed(t, s, "keep", incr("http.requests", 1))
		if err := s.SetTTL(ctx, "keep", 0, false); err != nil {
			t.Fatal(err)
		}
		// Also before the first request: PUT .../ttl "0" on a name not written yet.
		if err := s.SetTTL(ctx, "declared", 0, false); err != nil {
			t.Fatal(err)
		}
		windowed(t, s, "keep", incr("http.requests", 1))
		windowed(t, s, "declared", incr("http.requests", 1))
		clk.Advance(2 * ttl)
		for _, name := range []string{"keep", "declared"} {
			if got := expiry(t, s, name); !got.IsZero() {
				t.Errorf("%s expires %v, want never", name, got)
			}
		}
	})
	t.Run("fixed", func(t *testing.T) {
		s, clk := open(t, Options{FixedTTL: true})
		windowed(t, s, "fixed", incr("http.requests", 1))
		want := clk.Now().Add(ttl)
		clk.Advance(30 * time.Minute)
		windowed(t, s, "fixed", incr("http.requests", 1))
		if got := expiry(t, s, "fixed"); !got.Equal(want) {
			t.Fatalf("expires %v, want %v (fixed from creation)", got, want)
		}
	})
	t.Run("with a context TTL", func(t *testing.T) {
		s, clk := open(t, Options{ContextTTL: 3 * ttl})
		windowed(t, s, "req", incr("http.requests", 1))
		apply(t, s, "adm", incr("n", 1))
		if got, want := expiry(t, s, "req"), clk.Now().Add(ttl); !got.Equal(want) {
			t.Errorf("request-created context expires %v, want %v", got, want)
		}
		if got, want := expiry(t, s, "adm"), clk.Now().Add(3*ttl); !got.Equal(want) {
			t.Errorf("admin-created context expires %v, want %v (store.context_ttl)", got, want)
		}
	})
}

// TestStore_ContextTTL_Recreated: a context deleted and written again is created again,
// and gets ContextTTL again (it was given only at a context's very first write, so a
// deleted context written again never expired).
func TestStore_ContextTTL_Recreated(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t, Options{Now: clk.Now, ContextTTL: time.Hour})
	apply(t, s, "wf", incr("n", 1))
	if err := s.Delete(context.Background(), "wf"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	apply(t, s, "wf", incr("n", 1))
	if got, want := expiry(t, s, "wf"), clk.Now().Add(time.Hour); !got.Equal(want) {
		t.Fatalf("expires %v, want %v", got, want)
	}
}
