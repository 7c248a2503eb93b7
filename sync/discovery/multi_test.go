package discovery_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ctxprop/ctxprop/sync/discovery"
)

func mustStatic(t *testing.T, peers ...string) *discovery.Static {
	t.Helper()
	s, err := discovery.NewStatic(peers)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMulti_Peers_UnionSortedDeduplicated(t *testing.T) {
	srv := startDNSServer(t)
	srv.setAddrs(peersName, "10.0.0.8", "10.0.0.5")
	m := &discovery.Multi{Sources: []discovery.Source{
		mustStatic(t, "10.0.0.9:7403", "10.0.0.8:7403"),
		newDNS(t, srv, peersName),
		mustStatic(t, "10.0.0.9:7403"),
	}}
	got, err := m.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.5:7403", "10.0.0.8:7403", "10.0.0.9:7403"}; !slices.Equal(got, want) {
		t.Errorf("Peers = %q, want %q", got, want)
	}
}

func TestMulti_Peers_FailureDoesNotHideOthers(t *testing.T) {
	srv := startDNSServer(t)
	srv.fail(dns.RcodeServerFailure, false)
	xds := &discovery.XDS{Server: "127.0.0.1:1", Insecure: true} // never opened
	m := &discovery.Multi{Sources: []discovery.Source{
		newDNS(t, srv, peersName),
		mustStatic(t, "10.0.0.7:7403"),
		xds,
	}}
	got, err := m.Peers(context.Background())
	if want := []string{"10.0.0.7:7403"}; !slices.Equal(got, want) {
		t.Errorf("Peers = %q, want %q", got, want)
	}
	if err == nil {
		t.Fatal("Peers returned no error while two sources failed")
	}
	for _, want := range []string{"dns " + peersName + ": lookup", "xds 127.0.0.1:1: xds server 127.0.0.1:1: not open"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if errors.Is(err, discovery.ErrStale) {
		t.Errorf("error %v wraps ErrStale, yet no source had an earlier answer", err)
	}
}

func TestMulti_Peers_Empty(t *testing.T) {
	var m discovery.Multi
	got, err := m.Peers(context.Background())
	if err != nil || len(got) != 0 {
		t.Errorf("zero Multi: Peers = %q, %v; want none, nil", got, err)
	}
}

func TestMulti_Open_ClosesOpenedOnFailure(t *testing.T) {
	opened := &discovery.XDS{Server: "127.0.0.1:1", Insecure: true}
	refused := &discovery.XDS{Server: "127.0.0.1:2"} // neither TLS nor Insecure
	m := &discovery.Multi{Sources: []discovery.Source{mustStatic(t, "10.0.0.7:7403"), opened, refused}}

	err := m.Open(context.Background())
	if err == nil || !strings.Contains(err.Error(), "open xds 127.0.0.1:2: ") || !strings.Contains(err.Error(), "no transport security") {
		t.Fatalf("Open error = %v, want one naming the xds source and the missing transport security", err)
	}
	if _, err := opened.Peers(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("after the failed Open, the source opened first answers %v, want closed", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close after a failed Open: %v", err)
	}
}

func TestMulti_Close_Twice(t *testing.T) {
	m := &discovery.Multi{Sources: []discovery.Source{&discovery.XDS{Server: "127.0.0.1:1", Insecure: true}}}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := m.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
}

func TestFromConfig(t *testing.T) {
	tests := []struct {
		name    string
		peers   []string
		dns     string
		xds     string
		opts    discovery.Options
		want    []string // source names, in order
		wantErr []string // substrings; nil means no error
	}{
		{name: "nothing", want: nil},
		{name: "all three", peers: []string{"10.0.0.7:7403"}, dns: "ctxprop-peers", xds: "127.0.0.1:18000",
			opts: discovery.Options{XDSInsecure: true},
			want: []string{"static", "dns ctxprop-peers", "xds 127.0.0.1:18000"}},
		{name: "every error at once", peers: []string{"10.0.0.7"}, dns: "http://x", xds: "127.0.0.1",
			wantErr: []string{"sync.peers: static peer 1", "sync.dns: dns name", "sync.xds: \"127.0.0.1\""}},
		{name: "xds without transport security", xds: "127.0.0.1:18000",
			wantErr: []string{"sync.xds: 127.0.0.1:18000: no transport security chosen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := discovery.FromConfig(tt.peers, tt.dns, tt.xds, tt.opts)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("FromConfig returned no error")
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range m.Sources {
				got = append(got, s.(interface{ String() string }).String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("sources = %q, want %q", got, tt.want)
			}
		})
	}
}
