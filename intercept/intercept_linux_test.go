//go:build linux

package intercept

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// The sidecar's ports as in SPEC §2, the transparent listener's (7404), and the test's
// own: the app's two ports, a downstream port, a port excluded each way.
const (
	adminPort, inboundPort, outboundPort, syncPort, transparentPort    = 7400, 7401, 7402, 7403, 7404
	appPort, appPort2, downstreamPort, excludedOutPort, excludedInPort = 8080, 8081, 9000, 5432, 9090
	proxyUID                                                           = 65532
)

func testRules(l *lab) Rules {
	return Rules{
		ProxyUID:             proxyUID,
		OutboundPort:         transparentPort,
		InboundPort:          inboundPort,
		SidecarPorts:         []int{adminPort, outboundPort, syncPort, transparentPort},
		ExcludeInboundPorts:  []int{excludedInPort},
		ExcludeOutboundPorts: []int{excludedOutPort},
		ExcludeOutboundCIDRs: []netip.Prefix{netip.PrefixFrom(l.peerIP2, 32), netip.PrefixFrom(l.peerIP6b, 128)},
		IPv6:                 true,
	}
}

// wantSaved is what iptables-save prints of the table t installed: its lines, and the
// built-in chains' lines, each in the order the rules were given.
func wantSaved(t natTable) []string {
	var jumps, rest []string
	for _, r := range t.rules {
		if builtin(chainOf(r)) {
			jumps = append(jumps, r)
		} else {
			rest = append(rest, r)
		}
	}
	return append(jumps, rest...)
}

// savedRules returns the lines of the nat table that are the sidecar's, normalised as
// restore reads them.
func savedRules(saved string) []string {
	var out []string
	for _, r := range parseSave(saved).rules {
		out = append(out, strings.Join(fields(r), " "))
	}
	return out
}

func normalise(rules []string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = strings.Join(fields(r), " ")
	}
	return out
}

// TestInstall_RealPackets installs the rules in a namespace, with each backend, and sends
// real connections through them: the app's outbound TCP lands on the transparent
// listener with its original destination recoverable, inbound TCP for the app's ports on
// the inbound proxy; the sidecar's uid, loopback, the pod's own address, the excluded
// ports and CIDRs and the sidecar's own ports are left alone; a second install changes
// nothing, a changed configuration replaces the rules, and Remove restores direct
// traffic. IPv4 and IPv6.
func TestInstall_RealPackets(t *testing.T) {
	for _, backend := range []string{Legacy, NFT} {
		t.Run(backend, func(t *testing.T) {
			l := newLab(t)
			ctx := context.Background()
			ins := &Installer{Backend: backend, Exec: nsExec(l.pod), Logger: hclog.New(&hclog.LoggerOptions{Output: tWriter{t}})}

			// The peer: a downstream service on every address, and on the excluded port.
			serve(t, l.peer, ":"+itoa(downstreamPort), "downstream")
			serve(t, l.peer, ":"+itoa(excludedOutPort), "downstream")
			// The pod: the app, the sidecar's listeners standing in for the real ones.
			serve(t, l.pod, ":"+itoa(appPort), "app")
			serve(t, l.pod, ":"+itoa(appPort2), "app")
			serve(t, l.pod, ":"+itoa(excludedInPort), "app")
			serve(t, l.pod, ":"+itoa(inboundPort), "inbound")
			serve(t, l.pod, ":"+itoa(adminPort), "admin")
			serve(t, l.pod, ":"+itoa(syncPort), "sync")
			serve(t, l.pod, "127.0.0.1:"+itoa(transparentPort), "transparent")
			serve(t, l.pod, "[::1]:"+itoa(transparentPort), "transparent")

			r := testRules(l)
			res, err := ins.Install(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(res), 2; got != want {
				t.Fatalf("%d results, want %d: %+v", got, want, res)
			}
			for _, x := range res {
				if !x.Changed || x.Backend != backend || x.Command != binary(backend, x.Family, "restore") {
					t.Errorf("first install: %+v, want a change by %s", x, binary(backend, x.Family, "restore"))
				}
			}
			for _, f := range []Family{IPv4, IPv6} {
				saved := save(t, l.pod, backend, f)
				if got, want := strings.Join(savedRules(saved), "\n"), strings.Join(normalise(wantSaved(r.table(f))), "\n"); got != want {
					t.Errorf("%s rules read back with %s:\n%s\nwant\n%s", f, binary(backend, f, "save"), got, want)
				}
			}

			type probe struct {
				name string
				from string // namespace
				uid  int    // 0: root, in this process
				to   netip.AddrPort
				want string
			}
			check := func(stage string, probes []probe) {
				t.Helper()
				for _, p := range probes {
					var got string
					if p.uid != 0 {
						got = dialAs(t, p.from, p.uid, p.to)
					} else {
						got = dial(t, p.from, p.to)
					}
					if !strings.Contains(p.want, " ") {
						// Not redirected: the server named answers, whatever conntrack says.
						got, _, _ = strings.Cut(got, " ")
					}
					if got != p.want {
						t.Errorf("%s: %s (%s → %s): answer %q, want %q", stage, p.name, p.from, p.to, got, p.want)
					}
				}
			}
			direct := func(name string, _ netip.AddrPort) string { return name }
			installed := func(v6 bool) []probe {
				pod, peer, peer2 := l.podIP, l.peerIP, l.peerIP2
				if v6 {
					pod, peer, peer2 = l.podIP6, l.peerIP6, l.peerIP6b
				}
				loop := netip.MustParseAddr("127.0.0.1")
				if v6 {
					loop = netip.IPv6Loopback()
				}
				return []probe{
					{"app's outbound call", l.pod, 0, ap(peer, downstreamPort), "transparent " + ap(peer, downstreamPort).String()},
					{"app's outbound call as another uid", l.pod, 1000, ap(peer, downstreamPort), "transparent " + ap(peer, downstreamPort).String()},
					{"sidecar's own call (proxy uid)", l.pod, proxyUID, ap(peer, downstreamPort), direct("downstream", ap(peer, downstreamPort))},
					{"excluded destination port", l.pod, 0, ap(peer, excludedOutPort), direct("downstream", ap(peer, excludedOutPort))},
					{"excluded destination CIDR", l.pod, 0, ap(peer2, downstreamPort), direct("downstream", ap(peer2, downstreamPort))},
					{"loopback", l.pod, 0, ap(loop, appPort), direct("app", ap(loop, appPort))},
					{"the pod's own address, over lo", l.pod, 0, ap(pod, appPort), direct("app", ap(pod, appPort))},
					{"inbound to an app port", l.peer, 0, ap(pod, appPort), "inbound " + ap(pod, appPort).String()},
					{"inbound to another app port", l.peer, 0, ap(pod, appPort2), "inbound " + ap(pod, appPort2).String()},
					{"inbound to the admin port", l.peer, 0, ap(pod, adminPort), direct("admin", ap(pod, adminPort))},
					{"inbound to the sync port", l.peer, 0, ap(pod, syncPort), direct("sync", ap(pod, syncPort))},
					{"inbound to the inbound proxy itself", l.peer, 0, ap(pod, inboundPort), direct("inbound", ap(pod, inboundPort))},
					{"inbound to an excluded port", l.peer, 0, ap(pod, excludedInPort), direct("app", ap(pod, excludedInPort))},
				}
			}
			check("IPv4", installed(false))
			check("IPv6", installed(true))

			before := map[Family]string{IPv4: save(t, l.pod, backend, IPv4), IPv6: save(t, l.pod, backend, IPv6)}
			res, err = ins.Install(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range res {
				if x.Changed {
					t.Errorf("second install changed %s:\n%s", x.Family, x.Script)
				}
				// The packet counters of the chains' policies moved with the probes; the
				// rules must be the same ones, not replaced by equal ones.
				if got, want := save(t, l.pod, backend, x.Family), before[x.Family]; got != want {
					t.Errorf("second install: %s nat table\n%s\nwant it unchanged\n%s", x.Family, got, want)
				}
			}

			// A new configuration: only appPort2 is intercepted inbound, IPv6 is not.
			r2 := r
			r2.InboundPorts, r2.IPv6 = []int{appPort2}, false
			if res, err = ins.Install(ctx, r2); err != nil {
				t.Fatal(err)
			}
			for _, x := range res {
				if !x.Changed {
					t.Errorf("install of a new configuration left %s unchanged", x.Family)
				}
			}
			if got, want := strings.Join(savedRules(save(t, l.pod, backend, IPv4)), "\n"), strings.Join(normalise(wantSaved(r2.table(IPv4))), "\n"); got != want {
				t.Errorf("IPv4 rules after the change:\n%s\nwant\n%s", got, want)
			}
			if got := savedRules(save(t, l.pod, backend, IPv6)); len(got) != 0 {
				t.Errorf("IPv6 rules left after intercept.ipv6 became false:\n%s", strings.Join(got, "\n"))
			}
			check("after the change", []probe{
				{"inbound to the app port no longer listed", l.peer, 0, ap(l.podIP, appPort), direct("app", ap(l.podIP, appPort))},
				{"inbound to the listed app port", l.peer, 0, ap(l.podIP, appPort2), "inbound " + ap(l.podIP, appPort2).String()},
				{"app's outbound call", l.pod, 0, ap(l.peerIP, downstreamPort), "transparent " + ap(l.peerIP, downstreamPort).String()},
				{"app's outbound call over IPv6", l.pod, 0, ap(l.peerIP6, downstreamPort), direct("downstream", ap(l.peerIP6, downstreamPort))},
			})

			if _, err := ins.Install(ctx, r); err != nil {
				t.Fatal(err)
			}
			res, err = ins.Remove(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range res {
				if !x.Changed {
					t.Errorf("remove left %s unchanged", x.Family)
				}
				saved := save(t, l.pod, backend, x.Family)
				if strings.Contains(saved, ChainPrefix) {
					t.Errorf("after remove the %s nat table still holds the sidecar's:\n%s", x.Family, saved)
				}
			}
			var removed []probe
			for _, v6 := range []bool{false, true} {
				pod, peer := l.podIP, l.peerIP
				if v6 {
					pod, peer = l.podIP6, l.peerIP6
				}
				removed = append(removed,
					probe{"app's outbound call", l.pod, 0, ap(peer, downstreamPort), direct("downstream", ap(peer, downstreamPort))},
					probe{"inbound to an app port", l.peer, 0, ap(pod, appPort), direct("app", ap(pod, appPort))},
				)
			}
			check("after remove", removed)
			if res, err = ins.Remove(ctx); err != nil {
				t.Fatal(err)
			}
			for _, x := range res {
				if x.Changed {
					t.Errorf("second remove changed %s:\n%s", x.Family, x.Script)
				}
			}
		})
	}
}

// TestInstall_DetectsBackend checks Auto: a namespace that holds iptables-legacy rules
// gets legacy ones, any other nft ones, and a later run keeps to the flavour the rules
// are in.
func TestInstall_DetectsBackend(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before []string // a command run in the namespace first
		want   string
	}{
		{"empty namespace", nil, NFT},
		{"legacy rules present", []string{"iptables-legacy", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}, Legacy},
		{"legacy IPv6 rules present", []string{"ip6tables-legacy", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}, Legacy},
		{"nft rules present", []string{"iptables-nft", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}, NFT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			if tc.before != nil {
				if out, err := exec.Command("ip", append([]string{"netns", "exec", l.pod}, tc.before...)...).CombinedOutput(); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
			}
			ins := &Installer{Exec: nsExec(l.pod)}
			for run := range 2 {
				res, err := ins.Install(context.Background(), testRules(l))
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range res {
					if x.Backend != tc.want || x.Changed != (run == 0) {
						t.Errorf("run %d, %s: backend %q changed %v; want %q changed %v", run+1, x.Family, x.Backend, x.Changed, tc.want, run == 0)
					}
				}
			}
			if saved := save(t, l.pod, tc.want, IPv4); !strings.Contains(saved, InboundChain) {
				t.Errorf("the %s nat table holds no %s:\n%s", tc.want, InboundChain, saved)
			}
		})
	}
}

// TestInstall_ReplacesStaleChains: chains of an older sidecar (any CTXPROP_ name) and
// duplicated jumps go, the rest of the table stays.
func TestInstall_ReplacesStaleChains(t *testing.T) {
	l := newLab(t)
	stale := "*nat\n:CTXPROP_OLD - [0:0]\n:OTHER - [0:0]\n:CTXPROP_INBOUND - [0:0]\n-A CTXPROP_OLD -p tcp -j REDIRECT --to-ports 15001\n-A OUTPUT -p tcp -j CTXPROP_OLD\n" +
		"-A OUTPUT -p tcp -j OTHER\n-A OTHER -p tcp --dport 1 -j RETURN\n" +
		"-A PREROUTING -p tcp -j CTXPROP_INBOUND\n-A PREROUTING -p tcp -j CTXPROP_INBOUND\nCOMMIT\n"
	if _, err := nsExec(l.pod)(context.Background(), []byte(stale), "iptables-nft-restore", "--noflush"); err != nil {
		t.Fatal(err)
	}
	r := testRules(l)
	ins := &Installer{Backend: NFT, Exec: nsExec(l.pod)}
	if _, err := ins.Install(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	saved := save(t, l.pod, NFT, IPv4)
	if got, want := strings.Join(savedRules(saved), "\n"), strings.Join(normalise(wantSaved(r.table(IPv4))), "\n"); got != want {
		t.Errorf("rules after install over stale ones:\n%s\nwant\n%s", got, want)
	}
	for _, keep := range []string{":OTHER", "-A OUTPUT -p tcp -j OTHER", "-A OTHER -p tcp -m tcp --dport 1 -j RETURN"} {
		if !strings.Contains(saved, keep) {
			t.Errorf("install removed %q, which is not the sidecar's:\n%s", keep, saved)
		}
	}
	if strings.Contains(saved, "CTXPROP_OLD") {
		t.Errorf("CTXPROP_OLD survived:\n%s", saved)
	}
	if _, err := ins.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if saved := save(t, l.pod, NFT, IPv4); strings.Contains(saved, ChainPrefix) || !strings.Contains(saved, "-A OUTPUT -p tcp -j OTHER") {
		t.Errorf("after remove:\n%s\nwant no CTXPROP_ and the OTHER chain kept", saved)
	}
}

// TestInstall_NeedsNetAdmin: without the capability nothing runs, and the error names
// NET_ADMIN and the way out.
func TestInstall_NeedsNetAdmin(t *testing.T) {
	for _, tc := range []struct {
		backend string
		caps    uint64
		missing string
	}{
		{Auto, 1 << capNetRaw, "NET_ADMIN"},
		{NFT, 0, "NET_ADMIN"},
		{Legacy, 1 << capNetAdmin, "NET_RAW"},
		{Auto, 0, "NET_ADMIN and NET_RAW"},
	} {
		ran := false
		ins := &Installer{
			Backend:      tc.backend,
			Capabilities: func() (uint64, error) { return tc.caps, nil },
			Exec: func(context.Context, []byte, string, ...string) ([]byte, error) {
				ran = true
				return nil, nil
			},
		}
		_, err := ins.Install(context.Background(), Rules{InboundPort: 1})
		var ce *CapabilityError
		if !errorsAs(err, &ce) || !strings.Contains(err.Error(), "lacks the "+tc.missing+" capabilit") || !strings.Contains(err.Error(), "HTTP_PROXY mode") {
			t.Errorf("%s with caps %b: error %v, want a CapabilityError naming %s and the HTTP_PROXY mode", tc.backend, tc.caps, err, tc.missing)
		}
		if ran {
			t.Errorf("%s with caps %b: ran iptables without the capability", tc.backend, tc.caps)
		}
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
