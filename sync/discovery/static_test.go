package discovery_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ctxprop/ctxprop/sync/discovery"
)

func TestNewStatic(t *testing.T) {
	tests := []struct {
		name    string
		peers   []string
		want    []string
		wantErr string // substring; "" means no error
	}{
		{name: "empty", peers: nil, want: []string{}},
		{name: "sorted and deduplicated",
			peers: []string{"10.0.0.9:7403", "10.0.0.7:7403", "pod-a.peers:7403", "10.0.0.7:7403"},
			want:  []string{"10.0.0.7:7403", "10.0.0.9:7403", "pod-a.peers:7403"}},
		{name: "ipv6", peers: []string{"[fd00::7]:7403"}, want: []string{"[fd00::7]:7403"}},
		{name: "no port", peers: []string{"10.0.0.7:7403", "10.0.0.8"}, wantErr: `static peer 2 "10.0.0.8": want host:port`},
		{name: "empty host", peers: []string{":7403"}, wantErr: `static peer 1 ":7403": empty host`},
		{name: "port zero", peers: []string{"10.0.0.7:0"}, wantErr: `port "0" is not a number from 1 to 65535`},
		{name: "port too big", peers: []string{"10.0.0.7:65536"}, wantErr: `port "65536"`},
		{name: "named port", peers: []string{"10.0.0.7:sync"}, wantErr: `port "sync"`},
		{name: "url", peers: []string{"http://10.0.0.7:7403"}, wantErr: `static peer 1 "http://10.0.0.7:7403"`},
		{name: "space", peers: []string{"pod a:7403"}, wantErr: `host "pod a" is not a host name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := discovery.NewStatic(tt.peers)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewStatic(%q) error = %v, want one containing %q", tt.peers, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewStatic(%q): %v", tt.peers, err)
			}
			got, err := s.Peers(context.Background())
			if err != nil {
				t.Fatalf("Peers: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Peers = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStatic_Peers_ReturnsCopy(t *testing.T) {
	s, err := discovery.NewStatic([]string{"10.0.0.7:7403"})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.Peers(context.Background())
	first[0] = "mangled:1"
	second, err := s.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := second[0], "10.0.0.7:7403"; got != want {
		t.Errorf("after the caller changed its slice, Peers()[0] = %q, want %q", got, want)
	}
}

func TestStatic_Peers_DoneContext(t *testing.T) {
	s, err := discovery.NewStatic([]string{"10.0.0.7:7403"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Peers(ctx); err == nil {
		t.Error("Peers with a cancelled context returned no error")
	}
}
