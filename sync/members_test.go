package peersync

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestMembers_Admit: memberlist lists at most max members besides itself; a place is
// reclaimed hold after its member died or left, or after it was admitted if memberlist
// never added it, and never from a member alive or suspect.
func TestMembers_Admit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ms := newMembers("self", 2, 10*time.Second)
	join := func(name string, s int) { ms.join(&memberlist.Node{Name: name}, at(s)) }
	steps := []struct {
		name string
		s    int
		want bool
	}{
		{"self", 0, true},
		{"a", 0, true},
		{"b", 0, true},
		{"self", 0, true}, // itself never takes a place
		{"c", 1, false},
		{"a", 1, true}, // known already
		{"c", 14, false},
		{"c", 16, true}, // a left at 5: its place frees at 15
		{"d", 20, false},
		{"d", 27, true},  // memberlist never added c (admitted at 16)
		{"e", 60, false}, // b and d alive
	}
	join("a", 0)
	join("b", 0)
	for i, st := range steps {
		if i == 6 {
			ms.leave(&memberlist.Node{Name: "a"}, at(5))
		}
		if st.name == "d" && st.want {
			join("b", 18) // b alive again: keeps its place
		}
		if st.name == "e" {
			join("d", 27)
		}
		if got := ms.admit(st.name, at(st.s)); got != st.want {
			t.Errorf("step %d: admit(%s) at %ds = %v, want %v", i+1, st.name, st.s, got, st.want)
		}
	}
	if got, want := ms.refusedCount(), uint64(4); got != want {
		t.Errorf("refused %d, want %d", got, want)
	}
	if got := len(ms.byName); got != 2 {
		t.Errorf("%d members held, want 2", got)
	}
}

func TestPingQueue(t *testing.T) {
	q := newPingQueue()
	q.push("a")
	q.push("b")
	q.push("a") // queued already
	done := make(chan struct{})
	var order []string
	for range 10 {
		name, _ := q.pop(done)
		order = append(order, name)
		if name == "b" {
			q.done(name) // answered
		} else {
			q.missed(name)
		}
		if len(q.names) == 0 {
			break
		}
	}
	if got, want := fmt.Sprint(order), "[a b a a]"; got != want {
		t.Errorf("pinged %s, want %s (a tried %d times, b once)", got, want, pingTries)
	}
	if len(q.tries) != 0 {
		t.Errorf("queue still tracks %v", q.tries)
	}
	close(done)
	if _, ok := q.pop(done); ok {
		t.Error("pop returned a name from an empty queue after done")
	}
}
