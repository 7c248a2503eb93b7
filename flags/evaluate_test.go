package flags

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func mustFlag(t testing.TB, key, def string) *Flag {
	t.Helper()
	f, err := ParseFlag(key, []byte(def))
	if err != nil {
		t.Fatalf("ParseFlag(%s): %v", key, err)
	}
	return f
}

const colors = `"variants": {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}`

// flagd's own fractional vectors (flagd core, java-sdk-contrib and dotnet-sdk-contrib
// tests): bucketing by $flagd.flagKey + email into four quarters.
func TestFractional_FlagdVectors(t *testing.T) {
	def := `{"state": "ENABLED", ` + colors + `, "defaultVariant": "red",
		"targeting": {"fractional": [
			{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]},
			["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]}}`
	tests := []struct{ email, flag, want string }{
		{"rachel@faas.com", "headerColor", "yellow"},
		{"monica@faas.com", "headerColor", "blue"},
		{"joey@faas.com", "headerColor", "red"},
		{"ross@faas.com", "headerColor", "green"},
		{"ross@faas.com", "footerColor", "red"},
	}
	for _, tt := range tests {
		t.Run(tt.flag+"/"+tt.email, func(t *testing.T) {
			f := mustFlag(t, tt.flag, def)
			res := f.Evaluate(map[string]any{"email": tt.email}, time.Now())
			if got, want := res.Variant, tt.want; got != want {
				t.Errorf("variant = %q, want %q (%+v)", got, want, res)
			}
			if got, want := res.Reason, ReasonSplit; got != want {
				t.Errorf("reason = %q, want %q", got, want)
			}
		})
	}
}

func TestMurmur3(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
	}{
		{"", 0},
		{"hello", 0x248bfa47},
		{"test", 0xba6bd213},
		{"The quick brown fox jumps over the lazy dog", 0x2e4ff723},
	}
	for _, tt := range tests {
		if got := murmur3(tt.in); got != tt.want {
			t.Errorf("murmur3(%q) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

var _ = json.Marshal
var _ = fmt.Sprint
