package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
)

// ctlCommand is one subcommand of `sidecar ctl`.
type ctlCommand struct {
	usage string // arguments, after the command name
	help  string
	// min and max bound the positional arguments; max -1 means any number.
	min, max int
	ttl      bool // takes -ttl D
	fixed    bool // takes -fixed
	run      func(c *ctl, args []string) error
}

// ctlCommands is the table of `sidecar ctl` subcommands.
func ctlCommands() map[string]ctlCommand {
	return map[string]ctlCommand{
		"list":   {"", "list the contexts with the number of counters, maps and sets", 0, 0, false, false, (*ctl).list},
		"get":    {"CTX | CTX counter KEY | CTX map MAP [KEY] | CTX set SET", "show a context, a counter, a map or entry, or a set", 1, 4, false, false, (*ctl).get},
		"incr":   {"CTX KEY [BY] [-ttl D]", "add BY (default 1, may be negative) to a counter; prints the new value", 2, 3, true, false, (*ctl).incr},
		"put":    {"CTX MAP KEY VALUE [-ttl D]", "set a map entry; VALUE is JSON, and text that is not valid JSON is stored as a JSON string", 4, 4, true, false, (*ctl).put},
		"del":    {"CTX MAP KEY", "delete a map entry", 3, 3, false, false, (*ctl).del},
		"add":    {"CTX SET MEMBER... [-ttl D]", "add members to a set; prints the members", 3, -1, true, false, (*ctl).add},
		"remove": {"CTX SET MEMBER...", "remove members from a set; prints the members", 3, -1, false, false, (*ctl).remove},
		"ttl":    {"CTX DURATION [-fixed]", "set a context's time to live (0: no expiry); -fixed stops writes from sliding it", 2, 2, false, true, (*ctl).setTTL},
		"delete": {"CTX", "delete a context on every replica; an error if this sidecar holds no such context (then nothing is stored)", 1, 1, false, false, (*ctl).deleteCtx},
		"ops":    {"CTX 'ctx-ops value'", `apply ops atomically, e.g. 'incr;key="orders";by=2, add;set="regions";member="eu"'`, 2, 2, false, false, (*ctl).ops},
		"peers":  {"", "list the replication peers", 0, 0, false, false, (*ctl).peers},
		"watch":  {"[CTX]", "print changes as they happen (of CTX, or of every context) until interrupted", 0, 1, false, false, (*ctl).watch},
	}
}

// ctl is one run of `sidecar ctl`.
type ctl struct {
	ctx    context.Context
	client *admin.Client
	addr   string
	json   bool
	ttl    time.Duration
	fixed  bool
	stdout io.Writer
}

// runCtl is `sidecar ctl [-addr URL] [-o table|json] COMMAND ARGS`.
func runCtl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	defAddr := os.Getenv("CTXPROP_ADMIN_ADDR")
	if defAddr == "" {
		defAddr = "http://127.0.0.1:7400"
	}
	addr, format := defAddr, "table"
	// The global flags are accepted before the command and again among its arguments
	// ("ctl get X -o json"), so a flag appended to a command line works like one in front.
	globalFlags := func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", addr, "admin API `URL` of the sidecar ($CTXPROP_ADMIN_ADDR)")
		fs.StringVar(&format, "o", format, "output `format`: table or json (the API's JSON)")
	}
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	globalFlags(fs)
	fs.Usage = func() { ctlUsage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: ctl: %v", errUsage, err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: ctl: no command given", errUsage)
	}
	name := fs.Arg(0)
	cmd, ok := ctlCommands()[name]
	if !ok {
		fs.Usage()
		return fmt.Errorf("%w: ctl: unknown command %q", errUsage, name)
	}
	c := &ctl{ctx: ctx, stdout: stdout}
	sub := flag.NewFlagSet("ctl "+name, flag.ContinueOnError)
	sub.SetOutput(stderr)
	globalFlags(sub) // defaults are the values given before the command
	if cmd.ttl {
		sub.DurationVar(&c.ttl, "ttl", 0, "time to live of what is written, a Go `duration` such as 90s or 1h")
	}
	if cmd.fixed {
		sub.BoolVar(&c.fixed, "fixed", false, "keep the expiry fixed: writes do not slide it")
	}
	sub.Usage = func() {
		fmt.Fprintf(stderr, "usage: sidecar ctl [-addr URL] [-o table|json] %s %s\n  %s\n", name, cmd.usage, cmd.help)
		sub.PrintDefaults()
	}
	pos, err := parseInterspersed(sub, fs.Args()[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: ctl %s: %v", errUsage, name, err)
	}
	if format != "table" && format != "json" {
		sub.Usage()
		return fmt.Errorf("%w: ctl: -o %q: want table or json", errUsage, format)
	}
	if len(pos) < cmd.min || (cmd.max >= 0 && len(pos) > cmd.max) {
		sub.Usage()
		return fmt.Errorf("%w: ctl %s: want %s", errUsage, name, strings.TrimSpace(name+" "+cmd.usage))
	}
	c.client, c.addr, c.json = admin.NewClient(addr, nil), addr, format == "json"
	defer c.client.CloseIdleConnections()
	if err := cmd.run(c, pos); err != nil {
		var ae *admin.Error
		if errors.As(err, &ae) || errors.Is(err, errUsage) {
			if errors.Is(err, errUsage) {
				sub.Usage()
			}
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("admin API at %s: %w; is the sidecar running? set -addr or CTXPROP_ADMIN_ADDR", c.addr, err)
	}
	return nil
}

func ctlUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: sidecar ctl [-addr URL] [-o table|json] COMMAND ARGS\n\ncommands:")
	cmds := ctlCommands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cmd := cmds[n]
		fmt.Fprintf(w, "  %s %s\n      %s\n", n, cmd.usage, cmd.help)
	}
	fmt.Fprintln(w, "\nflags (before the command or after its arguments):")
	fs.PrintDefaults()
}

// parseInterspersed parses flags that may come between and after positional arguments
// ("incr CTX KEY -ttl 1h"); an argument that is a negative number is positional ("incr
// CTX KEY -2").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if _, err := strconv.ParseFloat(args[0], 64); err == nil {
			pos = append(pos, args[0])
			args = args[1:]
			continue
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	return pos, nil
}

// emit prints v as the API's JSON with -o json, else calls table.
func (c *ctl) emit(v any, table func(w io.Writer)) error {
	if c.json {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "%s\n", data)
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func (c *ctl) list(args []string) error {
	list, err := c.client.List(c.ctx)
	if err != nil {
		return err
	}
	return c.emit(map[string]any{"contexts": list}, func(w io.Writer) {
		fmt.Fprintln(w, "NAME\tEXPIRES\tCOUNTERS\tMAPS\tSETS")
		for _, s := range list {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\n", s.Name, expires(s.ExpiresAt), s.Counters, s.Maps, s.Sets)
		}
	})
}

func expires(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func (c *ctl) get(args []string) error {
	name := args[0]
	if len(args) == 1 {
		snap, err := c.client.Get(c.ctx, name)
		if err != nil {
			return err
		}
		return c.emit(snap, func(w io.Writer) { printSnapshot(w, snap) })
	}
	kind, rest := args[1], args[2:]
	switch {
	case kind == "counter" && len(rest) == 1:
		v, err := c.client.Counter(c.ctx, name, rest[0])
		if err != nil {
			return err
		}
		return c.emit(map[string]int64{"value": v}, func(w io.Writer) { fmt.Fprintln(w, v) })
	case kind == "map" && len(rest) == 1:
		entries, err := c.client.Map(c.ctx, name, rest[0])
		if err != nil {
			return err
		}
		return c.emit(map[string]any{"entries": entries}, func(w io.Writer) {
			fmt.Fprintln(w, "KEY\tVALUE")
			for _, k := range sortedKeys(entries) {
				fmt.Fprintf(w, "%s\t%s\n", k, entries[k])
			}
		})
	case kind == "map" && len(rest) == 2:
		v, err := c.client.MapGet(c.ctx, name, rest[0], rest[1])
		if err != nil {
			return err
		}
		return c.emit(map[string]json.RawMessage{"value": v}, func(w io.Writer) { fmt.Fprintf(w, "%s\n", v) })
	case kind == "set" && len(rest) == 1:
		members, err := c.client.Set(c.ctx, name, rest[0])
		if err != nil {
			return err
		}
		return c.printMembers(members)
	}
	return fmt.Errorf("%w: ctl get: want get CTX, get CTX counter KEY, get CTX map MAP [KEY] or get CTX set SET", errUsage)
}

func printSnapshot(w io.Writer, snap localstore.Snapshot) {
	fmt.Fprintf(w, "CONTEXT\t%s\n", snap.Name)
	fmt.Fprintf(w, "EXPIRES\t%s\n", expires(snap.ExpiresAt))
	fmt.Fprintf(w, "REPLICAS\t%d\n\n", snap.Replicas)
	fmt.Fprintln(w, "TYPE\tNAME\tKEY\tVALUE")
	for _, k := range sortedKeys(snap.Counters) {
		fmt.Fprintf(w, "counter\t%s\t\t%d\n", k, snap.Counters[k])
	}
	for _, m := range sortedKeys(snap.Maps) {
		for _, k := range sortedKeys(snap.Maps[m]) {
			fmt.Fprintf(w, "map\t%s\t%s\t%s\n", m, k, snap.Maps[m][k])
		}
	}
	for _, s := range sortedKeys(snap.Sets) {
		fmt.Fprintf(w, "set\t%s\t\t%s\n", s, strings.Join(snap.Sets[s], ", "))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (c *ctl) printMembers(members []string) error {
	return c.emit(map[string][]string{"members": members}, func(w io.Writer) {
		for _, m := range members {
			fmt.Fprintln(w, m)
		}
	})
}

func (c *ctl) incr(args []string) error {
	by := int64(1)
	if len(args) == 3 {
		var err error
		if by, err = strconv.ParseInt(args[2], 10, 64); err != nil {
			return fmt.Errorf("%w: ctl incr: BY %q is not an integer", errUsage, args[2])
		}
	}
	v, err := c.client.Incr(c.ctx, args[0], args[1], by, c.ttl)
	if err != nil {
		return err
	}
	return c.emit(map[string]int64{"value": v}, func(w io.Writer) { fmt.Fprintln(w, v) })
}

func (c *ctl) put(args []string) error {
	return c.client.Put(c.ctx, args[0], args[1], args[2], jsonValue(args[3]), c.ttl)
}

// jsonValue takes text that is valid JSON as it is ("42", "true", `{"a":1}`, `"x"`) and
// anything else as a string, so `put c m k done` stores "done".
func jsonValue(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	data, _ := json.Marshal(s) // a string always marshals
	return data
}

func (c *ctl) del(args []string) error {
	return c.client.Del(c.ctx, args[0], args[1], args[2])
}

func (c *ctl) add(args []string) error {
	members, err := c.client.UpdateSet(c.ctx, args[0], args[1], args[2:], nil, c.ttl)
	if err != nil {
		return err
	}
	return c.printMembers(members)
}

func (c *ctl) remove(args []string) error {
	members, err := c.client.UpdateSet(c.ctx, args[0], args[1], nil, args[2:], 0)
	if err != nil {
		return err
	}
	return c.printMembers(members)
}

func (c *ctl) setTTL(args []string) error {
	d, err := time.ParseDuration(args[1])
	if err != nil || d < 0 {
		return fmt.Errorf("%w: ctl ttl: DURATION %q: want a Go duration such as 90s or 1h, or 0 for no expiry", errUsage, args[1])
	}
	return c.client.SetTTL(c.ctx, args[0], d, c.fixed)
}

func (c *ctl) deleteCtx(args []string) error {
	return c.client.Delete(c.ctx, args[0])
}

func (c *ctl) ops(args []string) error {
	return c.client.OpsHeader(c.ctx, args[0], args[1])
}

func (c *ctl) peers(args []string) error {
	peers, err := c.client.Peers(c.ctx)
	if err != nil {
		return err
	}
	return c.emit(map[string]any{"peers": peers}, func(w io.Writer) {
		fmt.Fprintln(w, "ADDRESS\tNAME\tSTATE\tLAST CONTACT\tLAG\tBYTES IN\tBYTES OUT\tERRORS")
		for _, p := range peers {
			last := "never"
			if !p.LastContact.IsZero() {
				last = p.LastContact.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", p.Address, p.Name, p.State, last, p.Lag, p.BytesIn, p.BytesOut, p.Errors)
		}
	})
}

// watch prints one line per event until ctx ends (Ctrl-C), which is not an error.
func (c *ctl) watch(args []string) error {
	name := ""
	if len(args) == 1 {
		name = args[0]
	}
	w, err := c.client.Watch(c.ctx, name, 0)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		if err != nil {
			if c.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("the sidecar ended the watch (it is shutting down); run watch again to continue")
			}
			return err
		}
		if err := c.printEvent(ev); err != nil {
			return err
		}
	}
}

func (c *ctl) printEvent(ev admin.WatchEvent) error {
	if c.json {
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		// The API's event data, with the SSE id and event type added.
		head := fmt.Sprintf(`{"id":%d,"type":%q,`, ev.ID, ev.Type)
		_, err = fmt.Fprintf(c.stdout, "%s%s\n", head, data[1:])
		return err
	}
	var parts []string
	if ev.Type == admin.EventReset {
		parts = append(parts, "reset ("+ev.Reason+"): events were missed; reread the context")
	}
	if ev.Cleared {
		parts = append(parts, "cleared")
	}
	for _, k := range sortedKeys(ev.Counters) {
		parts = append(parts, fmt.Sprintf("counter %s=%d", k, ev.Counters[k]))
	}
	for _, m := range sortedKeys(ev.Maps) {
		for _, k := range sortedKeys(ev.Maps[m]) {
			parts = append(parts, fmt.Sprintf("map %s[%s]=%s", m, k, ev.Maps[m][k]))
		}
	}
	for _, s := range sortedKeys(ev.Sets) {
		parts = append(parts, fmt.Sprintf("set %s={%s}", s, strings.Join(ev.Sets[s], ", ")))
	}
	when := "-"
	if !ev.Time.IsZero() {
		when = ev.Time.UTC().Format(time.RFC3339Nano)
	}
	ctxName := ev.Context
	if ctxName == "" {
		ctxName = "*"
	}
	_, err := fmt.Fprintf(c.stdout, "%d\t%s\t%s\t%s\n", ev.ID, when, ctxName, strings.Join(parts, "; "))
	return err
}
