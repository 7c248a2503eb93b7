package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/hashicorp/go-hclog"
)

// startCtlServer runs a real store and admin API on loopback and returns its URL.
func startCtlServer(t *testing.T) string {
	t.Helper()
	log := hclog.New(&hclog.LoggerOptions{Name: t.Name(), Output: t.Output()})
	st := localstore.New(localstore.Options{Path: filepath.Join(t.TempDir(), "ctxprop.db"), Logger: log})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	srv := admin.New(admin.Options{Address: "127.0.0.1:0", Store: st, Logger: log})
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(context.Background()); err != nil {
			t.Error(err)
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return "http://" + srv.Addr().String()
}

func TestCtl_Commands(t *testing.T) {
	addr := startCtlServer(t)
	steps := []struct {
		args    string
		want    string // stdout
		wantErr string // substring of the error; "usage" for errUsage
	}{
		{"list", "NAME  EXPIRES  COUNTERS  MAPS  SETS\n", ""},
		{"-o json list", `{"contexts":[]}` + "\n", ""},
		{"incr wf orders", "1\n", ""},
		{"incr wf orders 5 -ttl 1h", "6\n", ""},
		{"incr wf orders -2", "4\n", ""},
		{"-o json incr wf orders", `{"value":5}` + "\n", ""},
		{"put wf steps pay done", "", ""},
		{`put wf steps ship {"eta":3} -ttl 1h`, "", ""},
		{"put wf steps n 42", "", ""},
		{"get wf map steps pay", `"done"` + "\n", ""},
		{"get wf map steps n", "42\n", ""},
		{"get wf map steps", "KEY   VALUE\nn     42\npay   \"done\"\nship  {\"eta\":3}\n", ""},
		{"-o json get wf map steps", `{"entries":{"n":42,"pay":"done","ship":{"eta":3}}}` + "\n", ""},
		{"del wf steps n", "", ""},
		{"add wf regions us eu ap -ttl 1h", "ap\neu\nus\n", ""},
		{"remove wf regions ap", "eu\nus\n", ""},
		{"-o json get wf set regions", `{"members":["eu","us"]}` + "\n", ""},
		{"get wf counter orders", "5\n", ""},
		{`ops wf incr;key="orders";by=10,add;set="regions";member="sa"`, "", ""},
		{"get wf", "CONTEXT   wf\nEXPIRES   never\nREPLICAS  1\n\nTYPE     NAME     KEY   VALUE\ncounter  orders         15\nmap      steps    pay   \"done\"\nmap      steps    ship  {\"eta\":3}\nset      regions        eu, sa, us\n", ""},
		{"-o json get wf", `{"name":"wf","expires_at":null,"counters":{"orders":15},"maps":{"steps":{"pay":"done","ship":{"eta":3}}},"sets":{"regions":["eu","sa","us"]},"replicas":1}` + "\n", ""},
		{"list", "NAME  EXPIRES  COUNTERS  MAPS  SETS\nwf    never    1         1     1\n", ""},
		{"ttl wf 0", "", ""},
		{"ttl wf 1h -fixed", "", ""},
		{"peers", "ADDRESS  NAME  STATE  LAST CONTACT  LAG  BYTES IN  BYTES OUT  ERRORS\n", ""},
		{"-o json peers", `{"peers":[]}` + "\n", ""},
		{"delete wf", "", ""},
		{"get wf", "", `not found: context "wf"`},
		{"delete wf", "", `context "wf": no such context exists here`},
		{"get wf map steps pay", "", "not found"},
		{"incr bad/name k", "", "context name"},
		{"ops wf incr;key=", "", "ctx-ops"},
		{"", "", "usage"},
		{"frobnicate", "", "usage"},
		{"-o yaml list", "", "usage"},
		{"get", "", "usage"},
		{"get wf frob x", "", "usage"},
		{"incr wf k notanumber", "", "usage"},
		{"ttl wf soon", "", "usage"},
		{"del wf m", "", "usage"},
		{"list extra", "", "usage"},
		{"put wf m k v -nope", "", "usage"},
	}
	for _, st := range steps {
		t.Run(st.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"-addr", addr}, strings.Fields(st.args)...)
			err := runCtl(context.Background(), args, &stdout, &stderr)
			switch {
			case st.wantErr == "usage":
				if !errors.Is(err, errUsage) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				if !strings.Contains(stderr.String(), "usage: sidecar ctl") {
					t.Errorf("stderr lacks the usage: %q", stderr.String())
				}
			case st.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), st.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, st.wantErr)
				}
				var ae *admin.Error
				if !errors.As(err, &ae) {
					t.Errorf("err %T is not the server's *admin.Error", err)
				}
			case err != nil:
				t.Fatalf("err = %v; stderr %s", err, stderr.String())
			}
			if got := stdout.String(); got != st.want {
				t.Errorf("stdout\n got %q\nwant %q", got, st.want)
			}
		})
	}
}

func TestCtl_AddrFromEnvironment(t *testing.T) {
	t.Setenv("CTXPROP_ADMIN_ADDR", startCtlServer(t))
	var stdout, stderr bytes.Buffer
	if err := runCtl(context.Background(), []string{"incr", "env", "k"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if got, want := stdout.String(), "1\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
}

func TestCtl_Unreachable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runCtl(context.Background(), []string{"-addr", "http://127.0.0.1:1", "list"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "is the sidecar running? set -addr or CTXPROP_ADMIN_ADDR") {
		t.Errorf("err = %v, want a hint to set -addr", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the watch goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCtl_Watch(t *testing.T) {
	addr := startCtlServer(t)
	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			want := `"context":"w",`
			if format == "table" {
				want = "\tw\tcounter n="
			}
			watchUntilEvent(t, addr, []string{"-addr", addr, "-o", format, "watch", "w"}, want)
		})
	}
}

// watchUntilEvent runs `sidecar ctl` with args (a watch of context w) until its output
// shows want, writing to w meanwhile since the watch may not be in place yet, then
// interrupts it and wants it to end cleanly.
func watchUntilEvent(t *testing.T, addr string, args []string, want string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- runCtl(ctx, args, &out, &out) }()
	c := admin.NewClient(addr, nil)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("watch ended with %v before an event; output %q", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event %q in %q", want, out.String())
		}
		if _, err := c.Incr(context.Background(), "w", "n", 1, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // pace the writes while polling
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("watch ended with %v, want nil on interrupt", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not stop on interrupt")
	}
}

// TestCtl_FlagsAfterArguments runs every ctl command with the global flags (-addr, -o) in
// front of the command, after its arguments, and between, and wants the same output: a
// user appends "-o json" to a command line they just ran.
func TestCtl_FlagsAfterArguments(t *testing.T) {
	steps := []struct {
		cmd  string
		want string
	}{
		{"list", `{"contexts":[]}` + "\n"},
		{"incr c n 2 -ttl 1h", `{"value":2}` + "\n"},
		{"put c m k v", ""},
		{"get c map m k", `{"value":"v"}` + "\n"},
		{"add c s a b", `{"members":["a","b"]}` + "\n"},
		{"remove c s a", `{"members":["b"]}` + "\n"},
		{"del c m k", ""},
		{`ops c incr;key="n";by=3`, ""},
		{"get c counter n", `{"value":5}` + "\n"},
		{"ttl c 1h -fixed", ""},
		{"peers", `{"peers":[]}` + "\n"},
		{"delete c", ""},
		{"list", `{"contexts":[]}` + "\n"},
	}
	orders := []struct {
		name string
		args func(addr string, cmd []string) []string
	}{
		{"before", func(addr string, cmd []string) []string {
			return append([]string{"-addr", addr, "-o", "json"}, cmd...)
		}},
		{"after", func(addr string, cmd []string) []string {
			return append(cmd, "-addr", addr, "-o", "json")
		}},
		{"between", func(addr string, cmd []string) []string {
			return append([]string{"-addr", addr, cmd[0], "-o", "json"}, cmd[1:]...)
		}},
	}
	for _, order := range orders {
		t.Run(order.name, func(t *testing.T) {
			addr := startCtlServer(t) // each order on its own store: the outputs are equal
			for _, st := range steps {
				t.Run(st.cmd, func(t *testing.T) {
					var stdout, stderr bytes.Buffer
					err := runCtl(context.Background(), order.args(addr, strings.Fields(st.cmd)), &stdout, &stderr)
					if err != nil {
						t.Fatalf("err = %v; stderr %s", err, stderr.String())
					}
					if got := stdout.String(); got != st.want {
						t.Errorf("stdout\n got %q\nwant %q", got, st.want)
					}
				})
			}
			t.Run("watch", func(t *testing.T) {
				watchUntilEvent(t, addr, order.args(addr, []string{"watch", "w"}), `"context":"w",`)
			})
		})
	}
}

// TestCtl_BadFlagAfterArguments wants a usage error that names the flag and lists the
// flags the command takes, wherever the flag is.
func TestCtl_BadFlagAfterArguments(t *testing.T) {
	addr := startCtlServer(t)
	cases := []struct {
		args    string
		wantErr string
	}{
		{"get c -json", "flag provided but not defined: -json"},
		{"get c counter n -o yaml", `-o "yaml": want table or json`},
		{"list -o", "flag needs an argument: -o"},
		{"put c m k v -fixed", "flag provided but not defined: -fixed"},
		{"incr c n -ttl soon", `invalid value "soon" for flag -ttl`},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runCtl(context.Background(), append([]string{"-addr", addr}, strings.Fields(tc.args)...), &stdout, &stderr)
			if !errors.Is(err, errUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if got := stderr.String(); !strings.Contains(got, "usage: sidecar ctl") || !strings.Contains(got, "-o format") {
				t.Errorf("stderr lacks the usage with the -o flag: %q", got)
			}
			if got := stdout.String(); got != "" {
				t.Errorf("stdout %q, want nothing", got)
			}
		})
	}
}
