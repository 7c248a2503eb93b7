package intercept

import (
	"bufio"
	"slices"
	"strconv"
	"strings"
)

// state is what a namespace's nat table holds of the sidecar's, read from iptables-save:
// the CTXPROP_ chains, and the rules in them or jumping to them, as saved.
type state struct {
	chains []string
	rules  []string
}

// parseSave reads the nat table out of iptables-save output.
func parseSave(out string) state {
	var s state
	inNat := false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
		case !inNat:
		case strings.HasPrefix(line, ":"+ChainPrefix):
			name, _, _ := strings.Cut(line[1:], " ")
			s.chains = append(s.chains, name)
		case strings.HasPrefix(line, "-A "):
			if ours(line) {
				s.rules = append(s.rules, line)
			}
		}
	}
	return s
}

// ours reports whether a saved rule is in a CTXPROP_ chain or jumps to one.
func ours(rule string) bool {
	f := fields(rule)
	if len(f) >= 2 && strings.HasPrefix(f[1], ChainPrefix) {
		return true
	}
	for i := 0; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g") && strings.HasPrefix(f[i+1], ChainPrefix) {
			return true
		}
	}
	return false
}

// fields splits a rule as iptables-restore does: on spaces, a double-quoted string being
// one field. Comparing fields rather than text makes "--comment x" and "--comment \"x\""
// equal, whichever way a version of iptables-save writes them.
func fields(rule string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(rule); i++ {
		c := rule[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(rule):
			i++
			cur.WriteByte(rule[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case c == ' ' && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

func key(rule string) string { return strconv.Quote(strings.Join(fields(rule), "\x00")) }

// chainOf names the chain a rule is appended to.
func chainOf(rule string) string {
	if f := fields(rule); len(f) >= 2 {
		return f[1]
	}
	return ""
}

func builtin(chain string) bool { return !strings.HasPrefix(chain, ChainPrefix) }

// plan compares the table the sidecar wants with the state found. It returns the rules to
// delete (jumps from built-in chains that are not wanted, or wanted only once) and the
// chains to remove, and whether the state is already the one wanted.
func (t natTable) plan(cur state) (deletes, stale []string, same bool) {
	same = true
	wantJumps := map[string]int{}
	for _, r := range t.rules {
		if builtin(chainOf(r)) {
			wantJumps[key(r)]++
		}
	}
	seen := map[string]int{}
	for _, r := range cur.rules {
		if !builtin(chainOf(r)) {
			continue
		}
		k := key(r)
		seen[k]++
		if seen[k] > wantJumps[k] {
			deletes = append(deletes, r)
			same = false
		}
	}
	for k, n := range wantJumps {
		if seen[k] < n {
			same = false
		}
	}
	for _, c := range cur.chains {
		if !slices.Contains(t.chains, c) {
			stale = append(stale, c)
			same = false
		}
	}
	for _, c := range t.chains {
		if !slices.Contains(cur.chains, c) {
			same = false
			continue
		}
		var want, got []string
		for _, r := range t.rules {
			if chainOf(r) == c {
				want = append(want, key(r))
			}
		}
		for _, r := range cur.rules {
			if chainOf(r) == c {
				got = append(got, key(r))
			}
		}
		if !slices.Equal(want, got) {
			same = false
		}
	}
	return deletes, stale, same
}

// script returns the input of iptables-restore --noflush that turns cur into t in one
// transaction: the sidecar's chains are declared, which creates them or empties them,
// and filled again; jumps are added where missing and removed where not wanted; chains
// no longer wanted are emptied and deleted. Nothing else in the table is touched.
func (t natTable) script(cur *state) string {
	var deletes, stale []string
	var have state
	if cur != nil {
		deletes, stale, _ = t.plan(*cur)
		have = *cur
	}
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, c := range append(slices.Clone(t.chains), stale...) {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, r := range deletes {
		b.WriteString("-D" + strings.TrimPrefix(r, "-A") + "\n")
	}
	present := map[string]bool{}
	for _, r := range have.rules {
		if builtin(chainOf(r)) {
			present[key(r)] = true
		}
	}
	for _, r := range t.rules {
		if builtin(chainOf(r)) && present[key(r)] {
			continue
		}
		b.WriteString(r + "\n")
	}
	for _, c := range stale {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
