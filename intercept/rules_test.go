package intercept

import (
	"slices"
	"strings"
	"testing"
)

func TestPortLists(t *testing.T) {
	many := make([]int, 0, 17)
	for p := 8000; p < 8017; p++ {
		many = append(many, p)
	}
	for _, tc := range []struct {
		name  string
		ports []int
		want  []string
	}{
		{"none", nil, nil},
		{"sorted, no duplicates or zeros", []int{8081, 0, 8080, 8081}, []string{"8080,8081"}},
		{"split at the multiport limit", many, []string{"8000,8001,8002,8003,8004,8005,8006,8007,8008,8009,8010,8011,8012,8013,8014", "8015,8016"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := portLists(tc.ports); !slices.Equal(got, tc.want) {
				t.Errorf("portLists(%v) = %q, want %q", tc.ports, got, tc.want)
			}
		})
	}
}

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		rule string
		want []string
	}{
		{`-A X -m comment --comment loopback -j RETURN`, []string{"-A", "X", "-m", "comment", "--comment", "loopback", "-j", "RETURN"}},
		{`-A X -m comment --comment "loopback" -j RETURN`, []string{"-A", "X", "-m", "comment", "--comment", "loopback", "-j", "RETURN"}},
		{`-A X --comment "sidecar  ports" -j RETURN`, []string{"-A", "X", "--comment", "sidecar  ports", "-j", "RETURN"}},
		{`-A X --comment "say \"hi\"" -j RETURN`, []string{"-A", "X", "--comment", `say "hi"`, "-j", "RETURN"}},
	} {
		if got := fields(tc.rule); !slices.Equal(got, tc.want) {
			t.Errorf("fields(%s) = %q, want %q", tc.rule, got, tc.want)
		}
	}
}

// TestPlan_OnlyTheSidecarsRules: the rules of others in the same chains do not count, a
// jump given twice is deleted once, and a stale chain goes.
func TestPlan_OnlyTheSidecarsRules(t *testing.T) {
	r := Rules{ProxyUID: 65532, OutboundPort: 7404, InboundPort: 7401}
	want := r.table(IPv4)
	saved := "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j CTXPROP_INBOUND\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:OTHER - [0:0]\n" +
		":CTXPROP_INBOUND - [0:0]\n:CTXPROP_OUTBOUND - [0:0]\n:CTXPROP_OLD - [0:0]\n" +
		"-A PREROUTING -p tcp -j OTHER\n" + strings.Join(want.rules, "\n") + "\n-A OUTPUT -p tcp -j CTXPROP_OUTBOUND\nCOMMIT\n"
	deletes, stale, same := want.plan(parseSave(saved))
	if same {
		t.Error("plan found the state the same, with a duplicated jump and a stale chain")
	}
	if got, want := deletes, []string{"-A OUTPUT -p tcp -j CTXPROP_OUTBOUND"}; !slices.Equal(got, want) {
		t.Errorf("deletes %q, want %q", got, want)
	}
	if got, want := stale, []string{"CTXPROP_OLD"}; !slices.Equal(got, want) {
		t.Errorf("stale %q, want %q", got, want)
	}
	clean := strings.Replace(strings.Replace(saved, ":CTXPROP_OLD - [0:0]\n", "", 1), "\n-A OUTPUT -p tcp -j CTXPROP_OUTBOUND\nCOMMIT", "\nCOMMIT", 1)
	if _, _, same := want.plan(parseSave(clean)); !same {
		t.Errorf("plan found a difference in\n%s", clean)
	}
}
