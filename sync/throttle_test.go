package peersync

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestThrottle(t *testing.T) {
	var out bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: &out, DisableTime: true})
	var th throttle
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		th.log(l, hclog.Warn, "refused", t0.Add(time.Duration(i)*time.Millisecond), "peer message refused", "n", i)
	}
	th.log(l, hclog.Warn, "max_peers", t0.Add(500*time.Millisecond), "peer refused")
	th.log(l, hclog.Debug, "refused", t0, "below the level: neither written nor counted")
	th.log(l, hclog.Warn, "refused", t0.Add(time.Second), "peer message refused", "n", 1000)
	th.log(l, hclog.Warn, "refused", t0.Add(1500*time.Millisecond), "peer message refused", "n", 1001)
	th.log(l, hclog.Warn, "refused", t0.Add(2*time.Second), "peer message refused", "n", 1002)

	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"[WARN]  peer message refused: n=0",
		"[WARN]  peer refused",
		"[WARN]  peer message refused: n=1000 suppressed=999",
		"[WARN]  peer message refused: n=1002 suppressed=1",
	}
	if len(got) != len(want) {
		t.Fatalf("logged %d lines, want %d:\n%s", len(got), len(want), out.String())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i+1, got[i], want[i])
		}
	}
}
