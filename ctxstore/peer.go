package ctxstore

import (
	"encoding/json"
	"fmt"
	"time"
)

// PeerStatus is one replication peer as a replication backend reports it and GET /v1/peers
// shows it. In JSON, Lag is a Go duration string ("150ms") and a zero LastContact is
// omitted.
type PeerStatus struct {
	// Name is the peer's node name; empty if not known yet.
	Name string
	// Address is the peer's sync address, host:port.
	Address string
	// State is the membership state: "alive", "suspect", "dead" or "left".
	State string
	// LastContact is when a message last came from the peer; zero means never.
	LastContact time.Time
	// Lag is how far the peer is behind this replica's changes; zero when caught up.
	Lag time.Duration
	// BytesIn and BytesOut count replication traffic with the peer.
	BytesIn, BytesOut uint64
	// Errors counts failed exchanges with the peer.
	Errors uint64
	// LastError is the latest of those errors; empty if none.
	LastError string
}

type peerJSON struct {
	Name        string    `json:"name,omitempty"`
	Address     string    `json:"address"`
	State       string    `json:"state"`
	LastContact time.Time `json:"last_contact,omitzero"`
	Lag         string    `json:"lag"`
	BytesIn     uint64    `json:"bytes_in"`
	BytesOut    uint64    `json:"bytes_out"`
	Errors      uint64    `json:"errors"`
	LastError   string    `json:"last_error,omitempty"`
}

// MarshalJSON writes the form documented on PeerStatus.
func (p PeerStatus) MarshalJSON() ([]byte, error) {
	return json.Marshal(peerJSON{p.Name, p.Address, p.State, p.LastContact, p.Lag.String(), p.BytesIn, p.BytesOut, p.Errors, p.LastError})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (p *PeerStatus) UnmarshalJSON(data []byte) error {
	var j peerJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	var lag time.Duration
	if j.Lag != "" {
		var err error
		if lag, err = time.ParseDuration(j.Lag); err != nil {
			return fmt.Errorf("peer %s: lag %q: %w", j.Address, j.Lag, err)
		}
	}
	*p = PeerStatus{j.Name, j.Address, j.State, j.LastContact, lag, j.BytesIn, j.BytesOut, j.Errors, j.LastError}
	return nil
}
