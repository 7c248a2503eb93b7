package discovery_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ctxprop/ctxprop/sync/discovery"
)

// dnsServer is a real DNS server on a loopback UDP port whose records a test changes
// between lookups.
type dnsServer struct {
	addr string

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case FQDN and query type: "a peers.test."
	rcode   int                 // answered when not dns.RcodeSuccess
	silent  bool                // drop queries, so lookups time out
}

func startDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{addr: pc.LocalAddr().String(), records: map[string][]dns.RR{}}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("dns server shutdown: %v", err)
		}
		<-served
	})
	return s
}

// ServeDNS answers from s.records.
func (s *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.silent {
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if s.rcode != dns.RcodeSuccess {
		m.Rcode = s.rcode
	} else if len(r.Question) == 1 {
		q := r.Question[0]
		key := strings.ToLower(dns.TypeToString[q.Qtype] + " " + q.Name)
		m.Answer = s.records[key]
		if m.Answer == nil && !s.known(q.Name) {
			m.Rcode = dns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m) // the client retries a lost answer
}

// known reports whether any record exists for name, to tell NODATA from NXDOMAIN.
func (s *dnsServer) known(name string) bool {
	for k := range s.records {
		if strings.HasSuffix(k, " "+strings.ToLower(name)) {
			return true
		}
	}
	return false
}

// setAddrs replaces every address record of name with addrs (A or AAAA by family).
func (s *dnsServer) setAddrs(name string, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, "a "+name)
	delete(s.records, "aaaa "+name)
	for _, a := range addrs {
		ip := netip.MustParseAddr(a)
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: 5}
		if ip.Is4() {
			hdr.Rrtype = dns.TypeA
			s.records["a "+name] = append(s.records["a "+name], &dns.A{Hdr: hdr, A: ip.AsSlice()})
		} else {
			hdr.Rrtype = dns.TypeAAAA
			s.records["aaaa "+name] = append(s.records["aaaa "+name], &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
		}
	}
}

func (s *dnsServer) setSRV(name string, targets map[string]uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, "srv "+name)
	for target, port := range targets {
		s.records["srv "+name] = append(s.records["srv "+name], &dns.SRV{
			Hdr:      dns.RR_Header{Name: name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 5},
			Priority: 0, Weight: 10, Port: port, Target: target,
		})
	}
}

func (s *dnsServer) fail(rcode int, silent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode, s.silent = rcode, silent
}

// resolver sends every query to s, whatever the system's resolv.conf says.
func (s *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", s.addr)
		},
	}
}

func newDNS(t *testing.T, s *dnsServer, name string) *discovery.DNS {
	t.Helper()
	d, err := discovery.NewDNS(name)
	if err != nil {
		t.Fatal(err)
	}
	d.Resolver = s.resolver()
	d.Timeout = 2 * time.Second
	return d
}

// The trailing dots keep the names absolute, so the host's search list plays no part.
const peersName = "ctxprop-peers.ns.svc.cluster.test."

func TestDNS_Peers_FollowsRecords(t *testing.T) {
	srv := startDNSServer(t)
	ctx := context.Background()

	steps := []struct {
		name  string
		addrs []string
		want  []string
	}{
		{"two pods", []string{"10.0.0.9", "10.0.0.7"}, []string{"10.0.0.7:7403", "10.0.0.9:7403"}},
		{"a pod joins, dual stack", []string{"10.0.0.7", "10.0.0.9", "10.0.0.8", "fd00::8"},
			[]string{"10.0.0.7:7403", "10.0.0.8:7403", "10.0.0.9:7403", "[fd00::8]:7403"}},
		{"pods leave", []string{"10.0.0.8"}, []string{"10.0.0.8:7403"}},
	}
	d := newDNS(t, srv, peersName)
	for _, step := range steps {
		srv.setAddrs(peersName, step.addrs...)
		got, err := d.Peers(ctx)
		if err != nil {
			t.Fatalf("%s: Peers: %v", step.name, err)
		}
		if !slices.Equal(got, step.want) {
			t.Errorf("%s: Peers = %q, want %q", step.name, got, step.want)
		}
	}
}

func TestDNS_Peers_Port(t *testing.T) {
	srv := startDNSServer(t)
	srv.setAddrs(peersName, "10.0.0.7")
	d := newDNS(t, srv, peersName+":9000")
	got, err := d.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.7:9000"}; !slices.Equal(got, want) {
		t.Errorf("Peers = %q, want %q", got, want)
	}
}

func TestDNS_Peers_SRV(t *testing.T) {
	srv := startDNSServer(t)
	const name = "_sync._tcp." + peersName
	d := newDNS(t, srv, name)

	srv.setSRV(name, map[string]uint16{"pod-b." + peersName: 7403, "pod-a." + peersName: 7500})
	got, err := d.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pod-a.ctxprop-peers.ns.svc.cluster.test:7500", "pod-b.ctxprop-peers.ns.svc.cluster.test:7403"}
	if !slices.Equal(got, want) {
		t.Errorf("Peers = %q, want %q", got, want)
	}

	// RFC 2782: a lone "." target says the service is not offered.
	srv.setSRV(name, map[string]uint16{".": 0})
	got, err = d.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("Peers = %q after the service was withdrawn, want none", got)
	}
}

func TestDNS_Peers_KeepsLastGoodAnswer(t *testing.T) {
	tests := []struct {
		name   string
		rcode  int
		silent bool
	}{
		{"servfail", dns.RcodeServerFailure, false},
		{"nxdomain", dns.RcodeNameError, false},
		{"timeout", dns.RcodeSuccess, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startDNSServer(t)
			srv.setAddrs(peersName, "10.0.0.7", "10.0.0.8")
			d := newDNS(t, srv, peersName)
			d.Timeout = 300 * time.Millisecond
			want := []string{"10.0.0.7:7403", "10.0.0.8:7403"}
			if got, err := d.Peers(context.Background()); err != nil || !slices.Equal(got, want) {
				t.Fatalf("Peers = %q, %v; want %q", got, err, want)
			}

			srv.fail(tt.rcode, tt.silent)
			got, err := d.Peers(context.Background())
			if !errors.Is(err, discovery.ErrStale) {
				t.Errorf("Peers error = %v, want one wrapping ErrStale", err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("Peers = %q during the failure, want the last good answer %q", got, want)
			}

			srv.fail(dns.RcodeSuccess, false)
			srv.setAddrs(peersName, "10.0.0.9")
			got, err = d.Peers(context.Background())
			if err != nil {
				t.Fatalf("Peers after recovery: %v", err)
			}
			if want := []string{"10.0.0.9:7403"}; !slices.Equal(got, want) {
				t.Errorf("Peers after recovery = %q, want %q", got, want)
			}
		})
	}
}

func TestDNS_Peers_FailsWithoutAnswer(t *testing.T) {
	srv := startDNSServer(t)
	d := newDNS(t, srv, "missing.ns.svc.cluster.test.")
	got, err := d.Peers(context.Background())
	if err == nil {
		t.Fatalf("Peers of a name with no records = %q, want an error", got)
	}
	if errors.Is(err, discovery.ErrStale) {
		t.Errorf("error %v wraps ErrStale with no earlier answer", err)
	}
	if !strings.Contains(err.Error(), "headless Service") {
		t.Errorf("error %q does not say what to check", err)
	}
	if len(got) != 0 {
		t.Errorf("Peers = %q, want none", got)
	}
}

func TestDNS_Peers_HonoursContext(t *testing.T) {
	srv := startDNSServer(t)
	srv.fail(dns.RcodeSuccess, true)
	d := newDNS(t, srv, peersName)
	d.Timeout = time.Minute // the context's deadline must win

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := d.Peers(ctx)
	if err == nil {
		t.Fatal("Peers against a silent server returned no error")
	}
	if ctx.Err() == nil {
		t.Fatalf("Peers returned %v before its context expired", err)
	}
	// Well under the Timeout: Peers gave up when the context did.
	if deadline, _ := ctx.Deadline(); time.Since(deadline) > 10*time.Second {
		t.Errorf("Peers returned %v after its context's deadline", time.Since(deadline))
	}
}

func TestDNS_Peers_Concurrent(t *testing.T) {
	srv := startDNSServer(t)
	srv.setAddrs(peersName, "10.0.0.7")
	d := newDNS(t, srv, peersName)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				if _, err := d.Peers(context.Background()); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func TestNewDNS(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{name: "ctxprop-peers.default.svc.cluster.local"},
		{name: "ctxprop-peers.default.svc.cluster.local."},
		{name: "ctxprop-peers:7500"},
		{name: "_sync._tcp.ctxprop-peers.default.svc.cluster.local"},
		{name: "", wantErr: "empty"},
		{name: "http://ctxprop-peers", wantErr: "not a DNS name"},
		{name: "ctxprop peers", wantErr: "not a DNS name"},
		{name: "ctxprop-peers:0", wantErr: `port "0"`},
		{name: "ctxprop-peers:http", wantErr: `port "http"`},
		{name: ":7403", wantErr: "empty host"},
		{name: "a:b:c", wantErr: "want host or host:port"},
		{name: "_sync._tcp.ctxprop-peers:7403", wantErr: "takes its ports from the records"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := discovery.NewDNS(tt.name)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("NewDNS(%q): %v", tt.name, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("NewDNS(%q) error = %v, want one containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
}
