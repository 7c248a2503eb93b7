package ctxstore

import (
	"encoding/json"
	"time"
)

// Summary counts what a context holds (GET /v1/contexts).
type Summary struct {
	Name      string     `json:"name"`
	ExpiresAt *time.Time `json:"expires_at"`
	Counters  int        `json:"counters"`
	Maps      int        `json:"maps"`
	Sets      int        `json:"sets"`
}

// Snapshot is the visible content of a context at one instant (GET /v1/contexts/{ctx}).
type Snapshot struct {
	Name      string                                `json:"name"`
	ExpiresAt *time.Time                            `json:"expires_at"`
	Counters  map[string]int64                      `json:"counters"`
	Maps      map[string]map[string]json.RawMessage `json:"maps"`
	Sets      map[string][]string                   `json:"sets"`
	// Replicas is how many replica ids the context holds state for (counter slots,
	// causal-context entries, set dots): the live replicas that wrote to it plus those
	// gone but not retired yet (sync.retire_after, then store.tombstone_ttl).
	Replicas int `json:"replicas"`
}
