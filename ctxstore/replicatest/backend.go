package replicatest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/ctxstore"
	"github.com/ctxprop/ctxprop/ops"
)

// Backend starts a replication backend's shared part for one test, if it has one (a
// NATS server for the relay; nothing for gossip), and returns join. join starts
// replicating store s with every store joined before it in the same test, and returns
// once that runs (not once anything converged). Both register the stop of what they start
// with t.Cleanup; RunBackend opens each store before joining it, so the backend stops
// before the store closes.
type Backend func(t *testing.T) (join func(t *testing.T, s Store))

// RunBackend runs the backend contract: stores joined by the backend converge. open
// returns a new, empty, opened store and closes it in t.Cleanup.
func RunBackend(t *testing.T, open func(t *testing.T) Store, backend Backend) {
	t.Run("ConcurrentWritesConverge", func(t *testing.T) { concurrent(t, open, backend) })
	t.Run("LateAndOfflineWritersCatchUp", func(t *testing.T) { late(t, open, backend) })
}

func concurrent(t *testing.T, open func(t *testing.T) Store, backend Backend) {
	join := backend(t)
	stores := make([]Store, 3)
	for i := range stores {
		stores[i] = open(t)
		join(t, stores[i])
	}
	const incrs = 20
	var wg sync.WaitGroup
	errs := make(chan error, len(stores))
	for i, s := range stores {
		wg.Go(func() {
			for range incrs {
				if _, err := s.Apply(context.Background(), "shared", incr("n", 1), ctxstore.Durable); err != nil {
					errs <- err
					return
				}
			}
			list := []ops.Op{
				{Kind: ops.Add, Set: "members", Member: fmt.Sprintf("m%d", i)},
				{Kind: ops.Put, Map: "cfg", Key: fmt.Sprintf("k%d", i), Value: []byte(fmt.Sprint(i))},
			}
			if _, err := s.Apply(context.Background(), "shared", list, ctxstore.Durable); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	converged(t, stores, []string{"shared"}, func(t *testing.T, s Store) string {
		c := state(t, s, "shared")
		if c == nil {
			return "no context shared"
		}
		n := counter(t, c, "n")
		members := c.SetMembers("members", now())
		cfg := c.MapEntries("cfg", now())
		if n != incrs*int64(len(stores)) || len(members) != len(stores) || len(cfg) != len(stores) {
			return fmt.Sprintf("n = %d, members %v, %d cfg entries; want %d, %d, %d", n, members, len(cfg), incrs*len(stores), len(stores), len(stores))
		}
		return ""
	})
}

func late(t *testing.T, open func(t *testing.T) Store, backend Backend) {
	join := backend(t)
	a, b := open(t), open(t)
	join(t, a)
	join(t, b)
	apply(t, a, "early", incr("n", 5))
	converged(t, []Store{a, b}, []string{"early"}, hasCounter("early", 5))

	// c wrote while it was not replicating (a sidecar started before the backend could
	// reach its peers, or cut off from them): the write must reach the others once it
	// joins, and c must get what it missed.
	c := open(t)
	apply(t, c, "offline", incr("n", 7))
	join(t, c)
	apply(t, b, "after", incr("n", 9))
	all := []Store{a, b, c}
	converged(t, all, []string{"early", "offline", "after"}, func(t *testing.T, s Store) string {
		for name, want := range map[string]int64{"early": 5, "offline": 7, "after": 9} {
			if why := hasCounter(name, want)(t, s); why != "" {
				return why
			}
		}
		return ""
	})
}

func hasCounter(name string, want int64) func(t *testing.T, s Store) string {
	return func(t *testing.T, s Store) string {
		c := state(t, s, name)
		if c == nil {
			return "no context " + name
		}
		if got := counter(t, c, "n"); got != want {
			return fmt.Sprintf("%s: n = %d, want %d", name, got, want)
		}
		return ""
	}
}

// converged polls until every store passes check and holds byte-equal encodings of the
// named contexts, failing after Timeout with what each store still lacks.
func converged(t *testing.T, stores []Store, names []string, check func(t *testing.T, s Store) string) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		var lacks []string
		for i, s := range stores {
			if why := check(t, s); why != "" {
				lacks = append(lacks, fmt.Sprintf("store %d (%s): %s", i, s.Replica(), why))
			}
		}
		if len(lacks) == 0 {
			for _, name := range names {
				first, _ := stores[0].Encoded(name)
				for i, s := range stores[1:] {
					if got, _ := s.Encoded(name); !bytes.Equal(got, first) {
						lacks = append(lacks, fmt.Sprintf("store %d: the encoding of %s differs from store 0's", i+1, name))
					}
				}
			}
		}
		if len(lacks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for i, s := range stores {
				lacks = append(lacks, fmt.Sprintf("store %d holds %v", i, s.Names()))
			}
			t.Fatalf("not converged within %s:\n%s", Timeout, strings.Join(lacks, "\n"))
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a deadline, not a synchronisation
	}
}
