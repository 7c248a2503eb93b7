package flags

import (
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ctxprop/ctxprop/headers"
)

func pinFlags(t *testing.T) *Flags {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flags.json")
	writeFile(t, path, `{"flags": {
		"checkout": {"state":"ENABLED","variants":{"new":"v2","old":"v1"},"defaultVariant":"old",
			"targeting":{"if":[{"==":[{"var":"plan"},"gold"]},"new"]}},
		"rollout": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
			"targeting":{"fractional":[["on",100],["off",0]]}},
		"tenant-ui": {"state":"ENABLED","variants":{"a":{"cols":2},"b":{"cols":3}},"defaultVariant":"a",
			"targeting":{"if":[{"starts_with":[{"var":"tenant"},"acme"]},"b"]}},
		"limit": {"state":"ENABLED","variants":{"n":25},"defaultVariant":"n"},
		"retired": {"state":"DISABLED","variants":{"on":true},"defaultVariant":"on"},
		"bad-value": {"state":"ENABLED","variants":{"x":"a\nb"},"defaultVariant":"x"}
	}}`)
	f := New(Options{
		Files:              []string{path},
		Pinned:             []string{"checkout", "rollout", "tenant-ui", "limit", "retired", "bad-value", "absent"},
		TargetingKeyHeader: "X-User-Id",
		ContextHeaders:     map[string]string{"plan": "X-Plan"},
		ContextBaggage:     map[string]string{"tenant": "tenant.id"},
		Logger:             testLogger(t),
	})
	if err := f.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestPin(t *testing.T) {
	f := pinFlags(t)
	tests := []struct {
		name   string
		header map[string]string
		pinned []headers.Flag
		want   []headers.Flag
	}{
		{"edge, anonymous", nil, nil, []headers.Flag{
			{Name: "checkout", Value: "v1"}, {Name: "limit", Value: "25"}, {Name: "tenant-ui", Value: `{"cols":2}`},
		}},
		{"edge, user with attributes", map[string]string{"X-User-Id": "u-7", "X-Plan": "gold", "Baggage": "tenant.id=acme-eu,other=1"}, nil, []headers.Flag{
			{Name: "checkout", Value: "v2"}, {Name: "limit", Value: "25"}, {Name: "rollout", Value: "true"}, {Name: "tenant-ui", Value: `{"cols":3}`},
		}},
		{"downstream hop keeps the pinned values", map[string]string{"X-User-Id": "u-7", "X-Plan": "gold"}, []headers.Flag{
			{Name: "checkout", Value: "v1"}, {Name: "limit", Value: "9"}, {Name: "rollout", Value: "false"}, {Name: "tenant-ui", Value: "x"},
		}, []headers.Flag{
			{Name: "checkout", Value: "v1"}, {Name: "limit", Value: "9"}, {Name: "rollout", Value: "false"}, {Name: "tenant-ui", Value: "x"},
		}},
		{"partly pinned", nil, []headers.Flag{{Name: "limit", Value: "9"}, {Name: "unrelated", Value: "u"}}, []headers.Flag{
			{Name: "checkout", Value: "v1"}, {Name: "limit", Value: "9"}, {Name: "tenant-ui", Value: `{"cols":2}`}, {Name: "unrelated", Value: "u"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://app/", nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			in := append([]headers.Flag(nil), tt.pinned...)
			got := f.Pin(r, in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Pin =\n %v\nwant\n %v", got, tt.want)
			}
			if !reflect.DeepEqual(in, tt.pinned) && len(tt.pinned) > 0 {
				t.Errorf("Pin modified its argument: %v", in)
			}
		})
	}
}

func TestPin_NothingConfigured(t *testing.T) {
	f := New(Options{})
	in := []headers.Flag{{Name: "a", Value: "b"}}
	if got := f.Pin(httptest.NewRequest("GET", "/", nil), in); !reflect.DeepEqual(got, in) {
		t.Errorf("Pin = %v, want %v", got, in)
	}
}
