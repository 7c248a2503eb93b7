//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// interceptConfig exercises every attribute of the intercept block.
const interceptConfig = `
intercept {
  inbound_ports          = [8080, 8081]
  exclude_inbound_ports  = [9090]
  exclude_outbound_ports = [5432, 6379]
  exclude_outbound_cidrs = ["169.254.169.254", "10.96.0.0/12", "fd00:10:96::/112"]
}
`

// wantDryRun is `sidecar intercept -dry-run` of interceptConfig: the README shows the
// same rules for the defaults.
const wantDryRun = `# IPv4: iptables-restore --noflush
*nat
:CTXPROP_INBOUND - [0:0]
:CTXPROP_OUTBOUND - [0:0]
-A PREROUTING -p tcp -j CTXPROP_INBOUND
-A CTXPROP_INBOUND -p tcp -m multiport --dports 7400,7401,7402,7403,7404 -m comment --comment "sidecar ports" -j RETURN
-A CTXPROP_INBOUND -p tcp -m multiport --dports 9090 -m comment --comment "intercept.exclude_inbound_ports" -j RETURN
-A CTXPROP_INBOUND -p tcp -m multiport --dports 8080,8081 -m comment --comment "intercept.inbound_ports to the inbound proxy" -j REDIRECT --to-ports 7401
-A OUTPUT -p tcp -j CTXPROP_OUTBOUND
-A CTXPROP_OUTBOUND -m owner --uid-owner 65532 -m comment --comment "intercept.proxy_uid, the sidecar itself" -j RETURN
-A CTXPROP_OUTBOUND -o lo -m comment --comment "loopback interface" -j RETURN
-A CTXPROP_OUTBOUND -d 127.0.0.0/8 -m comment --comment "loopback" -j RETURN
-A CTXPROP_OUTBOUND -d 169.254.169.254/32 -m comment --comment "intercept.exclude_outbound_cidrs" -j RETURN
-A CTXPROP_OUTBOUND -d 10.96.0.0/12 -m comment --comment "intercept.exclude_outbound_cidrs" -j RETURN
-A CTXPROP_OUTBOUND -p tcp -m multiport --dports 5432,6379 -m comment --comment "intercept.exclude_outbound_ports" -j RETURN
-A CTXPROP_OUTBOUND -p tcp -m comment --comment "to the transparent listener" -j REDIRECT --to-ports 7404
COMMIT
# IPv6: ip6tables-restore --noflush
*nat
:CTXPROP_INBOUND - [0:0]
:CTXPROP_OUTBOUND - [0:0]
-A PREROUTING -p tcp -j CTXPROP_INBOUND
-A CTXPROP_INBOUND -p tcp -m multiport --dports 7400,7401,7402,7403,7404 -m comment --comment "sidecar ports" -j RETURN
-A CTXPROP_INBOUND -p tcp -m multiport --dports 9090 -m comment --comment "intercept.exclude_inbound_ports" -j RETURN
-A CTXPROP_INBOUND -p tcp -m multiport --dports 8080,8081 -m comment --comment "intercept.inbound_ports to the inbound proxy" -j REDIRECT --to-ports 7401
-A OUTPUT -p tcp -j CTXPROP_OUTBOUND
-A CTXPROP_OUTBOUND -m owner --uid-owner 65532 -m comment --comment "intercept.proxy_uid, the sidecar itself" -j RETURN
-A CTXPROP_OUTBOUND -o lo -m comment --comment "loopback interface" -j RETURN
-A CTXPROP_OUTBOUND -d ::1/128 -m comment --comment "loopback" -j RETURN
-A CTXPROP_OUTBOUND -d fd00:10:96::/112 -m comment --comment "intercept.exclude_outbound_cidrs" -j RETURN
-A CTXPROP_OUTBOUND -p tcp -m multiport --dports 5432,6379 -m comment --comment "intercept.exclude_outbound_ports" -j RETURN
-A CTXPROP_OUTBOUND -p tcp -m comment --comment "to the transparent listener" -j REDIRECT --to-ports 7404
COMMIT
`

// newNetns makes an empty network namespace, removed with everything in it at the end.
func newNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test makes a network namespace and needs root")
	}
	for _, tool := range []string{"ip", "nsenter", "setpriv", "iptables-legacy-save", "iptables-nft-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s: run make tools (apt-get install iproute2 iptables util-linux)", tool)
		}
	}
	b := make([]byte, 3)
	rand.Read(b)
	ns := "cxic" + hex.EncodeToString(b)
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// natRules returns the rule lines of ns's nat table in both backends and both families.
func natRules(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	for _, save := range []string{"iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save"} {
		out, err := exec.Command("ip", "netns", "exec", ns, save, "-t", "nat").Output()
		if err != nil {
			t.Fatalf("%s: %v", save, err)
		}
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "-A ") {
				b.WriteString(save + ": " + line)
			}
		}
	}
	return b.String()
}

func sidecarIn(t *testing.T, ns string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, buildSidecar(t)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestIntercept_DryRun runs the real `sidecar intercept -dry-run` in a namespace: it
// prints the rules, changes nothing, and prints what an install then puts there.
func TestIntercept_DryRun(t *testing.T) {
	ns := newNetns(t)
	file := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(file, []byte(interceptConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := sidecarIn(t, ns, nil, "intercept", "-dry-run", "-config", file)
	if err != nil {
		t.Fatalf("sidecar intercept -dry-run: %v\n%s", err, stderr)
	}
	if out != wantDryRun {
		t.Errorf("sidecar intercept -dry-run printed\n%s\nwant\n%s", out, wantDryRun)
	}
	if got := natRules(t, ns); got != "" {
		t.Fatalf("-dry-run changed the namespace's rules:\n%s", got)
	}

	for _, backend := range []string{"nft", "legacy"} {
		out, stderr, err := sidecarIn(t, ns, []string{"CTXPROP_INTERCEPT_BACKEND=" + backend}, "intercept", "-config", file)
		if err != nil {
			t.Fatalf("sidecar intercept (%s): %v\n%s", backend, err, stderr)
		}
		if want := "IPv4: rules installed (iptables-" + backend + "-restore)\nIPv6: rules installed (ip6tables-" + backend + "-restore)\n"; out != want {
			t.Errorf("sidecar intercept (%s) printed %q, want %q", backend, out, want)
		}
		// What iptables-save prints is what -dry-run printed, less the declarations,
		// with the jumps first, as the table lists its built-in chains first.
		var want strings.Builder
		for _, family := range []struct{ save, marker string }{{"iptables-" + backend + "-save", "# IPv4"}, {"ip6tables-" + backend + "-save", "# IPv6"}} {
			block := wantDryRun[strings.Index(wantDryRun, family.marker):]
			block = block[:strings.Index(block, "COMMIT")]
			var jumps, rest []string
			for line := range strings.Lines(block) {
				switch {
				case strings.HasPrefix(line, "-A PREROUTING"), strings.HasPrefix(line, "-A OUTPUT"):
					jumps = append(jumps, family.save+": "+line)
				case strings.HasPrefix(line, "-A "):
					rest = append(rest, family.save+": "+strings.Replace(line, `--comment "loopback"`, "--comment loopback", 1))
				}
			}
			want.WriteString(strings.Join(jumps, "") + strings.Join(rest, ""))
		}
		if got := natRules(t, ns); got != want.String() {
			t.Errorf("after sidecar intercept (%s) the nat tables hold\n%s\nwant\n%s", backend, got, want.String())
		}
		out, stderr, err = sidecarIn(t, ns, []string{"CTXPROP_INTERCEPT_BACKEND=" + backend}, "intercept", "-config", file)
		if err != nil {
			t.Fatalf("second sidecar intercept (%s): %v\n%s", backend, err, stderr)
		}
		if want := "IPv4: rules already in place (iptables-" + backend + "-restore)\nIPv6: rules already in place (ip6tables-" + backend + "-restore)\n"; out != want {
			t.Errorf("second sidecar intercept (%s) printed %q, want %q", backend, out, want)
		}
		out, stderr, err = sidecarIn(t, ns, []string{"CTXPROP_INTERCEPT_BACKEND=" + backend}, "intercept", "-remove")
		if err != nil {
			t.Fatalf("sidecar intercept -remove (%s): %v\n%s", backend, err, stderr)
		}
		if want := "IPv4: rules removed (iptables-" + backend + "-restore)\nIPv6: rules removed (ip6tables-" + backend + "-restore)\n"; out != want {
			t.Errorf("sidecar intercept -remove (%s) printed %q, want %q", backend, out, want)
		}
		if got := natRules(t, ns); got != "" {
			t.Fatalf("-remove (%s) left rules:\n%s", backend, got)
		}
	}
}

// TestIntercept_NoNetAdmin runs the real binary in a namespace without the capability,
// as an unprivileged uid and as root in a container that was not granted NET_ADMIN: it
// fails with a message naming NET_ADMIN and the HTTP_PROXY mode, and installs nothing.
func TestIntercept_NoNetAdmin(t *testing.T) {
	ns := newNetns(t)
	bin := buildSidecar(t)
	// go build wrote it in a directory only root may enter.
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"unprivileged uid", []string{"nsenter", "--net=/run/netns/" + ns, "--setuid=65533", "--setgid=65533", bin, "intercept"}},
		{"root without NET_ADMIN", []string{"ip", "netns", "exec", ns, "setpriv", "--bounding-set=-net_admin", "--inh-caps=-all", bin, "intercept"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.args[0], tc.args[1:]...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("sidecar intercept: %v, want exit code 1\n%s", err, stderr.String())
			}
			for _, want := range []string{"sidecar: this process lacks the NET_ADMIN", "capabilities.add [NET_ADMIN, NET_RAW]", "HTTP_PROXY mode", "ctxprop.io/interception: http-proxy"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr\n%s\nwant it to contain %q", stderr.String(), want)
				}
			}
			if got := natRules(t, ns); got != "" {
				t.Fatalf("rules installed without NET_ADMIN:\n%s", got)
			}
		})
	}
}

// TestIntercept_Refusals: flags and configurations that cannot work are refused before
// anything runs, with what to do.
func TestIntercept_Refusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		config string
		want   string
	}{
		{"dry-run and remove", []string{"-dry-run", "-remove"}, "", "-dry-run and -remove together"},
		{"an argument", []string{"now"}, "", `unexpected argument "now"`},
		{"inbound proxy on loopback", []string{"-dry-run"}, "inbound {\n  address = \"127.0.0.1:7401\"\n}\n", "inbound.address 127.0.0.1:7401 is not every address (0.0.0.0)"},
		{"inbound proxy on port 0", []string{"-dry-run"}, "inbound {\n  address = \"0.0.0.0:0\"\n}\n", `inbound.address "0.0.0.0:0" has port "0"; sidecar intercept redirects to a fixed port`},
		{"transparent listener elsewhere", []string{"-dry-run"}, "outbound {\n  transparent_address = \"10.0.0.9:7404\"\n}\n", "outbound.transparent_address 10.0.0.9:7404 is not a loopback address"},
		{"bad intercept block", []string{"-dry-run"}, "intercept {\n  proxy_uid = 0\n}\n", "intercept.proxy_uid is 0 (root)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"intercept"}, tc.args...)
			if tc.config != "" {
				file := filepath.Join(t.TempDir(), "config.hcl")
				if err := os.WriteFile(file, []byte(tc.config), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "-config", file)
			}
			var stdout, stderr bytes.Buffer
			err := Run(context.Background(), args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("sidecar %s: %v, want an error containing %q", strings.Join(args, " "), err, tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %q before refusing", stdout.String())
			}
		})
	}
}

// TestIntercept_NoTransparentListener: with outbound.transparent_address "" only the
// inbound side is redirected.
func TestIntercept_NoTransparentListener(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(file, []byte("outbound {\n  transparent_address = \"\"\n}\nintercept {\n  ipv6 = false\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := Run(context.Background(), []string{"intercept", "-dry-run", "-config", file}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	want := `# IPv4: iptables-restore --noflush
*nat
:CTXPROP_INBOUND - [0:0]
-A PREROUTING -p tcp -j CTXPROP_INBOUND
-A CTXPROP_INBOUND -p tcp -m multiport --dports 7400,7401,7402,7403 -m comment --comment "sidecar ports" -j RETURN
-A CTXPROP_INBOUND -p tcp -m comment --comment "every other port to the inbound proxy" -j REDIRECT --to-ports 7401
COMMIT
# IPv6: no rules
`
	if got := stdout.String(); got != want {
		t.Errorf("printed\n%s\nwant\n%s", got, want)
	}
}

// TestIntercept_README keeps the rules README.md shows equal to what -dry-run prints for
// the defaults.
func TestIntercept_README(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const intro = "With the defaults, `-dry-run` prints (IPv6 is the same, with `::1/128`):\n\n```\n"
	i := bytes.Index(readme, []byte(intro))
	if i < 0 {
		t.Fatalf("README.md has no %q", intro)
	}
	shown := string(readme[i+len(intro):])
	shown = shown[:strings.Index(shown, "```")]
	var stdout, stderr bytes.Buffer
	if err := Run(context.Background(), []string{"intercept", "-dry-run"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	v4 := out[:strings.Index(out, "COMMIT\n")+len("COMMIT\n")]
	if shown != v4 {
		t.Errorf("README.md shows\n%s\nsidecar intercept -dry-run prints\n%s", shown, v4)
	}
	v6 := strings.ReplaceAll(strings.ReplaceAll(v4, "IPv4: iptables", "IPv6: ip6tables"), "127.0.0.0/8", "::1/128")
	if got := out[len(v4):]; got != v6 {
		t.Errorf("the IPv6 rules are not the IPv4 ones with ::1/128, as README.md says:\n%s", got)
	}
}
