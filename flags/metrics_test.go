package flags

import (
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

func TestCollector(t *testing.T) {
	e := newEnv(t, nil, Options{Pinned: []string{"f"}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(e.flags))

	e.do(t, "PUT", "/v1/flags/f", def("on"))
	e.do(t, "POST", PathOFREPFlags+"/f", `{}`)
	e.do(t, "POST", PathOFREPFlags+"/g", `{}`)
	e.do(t, "POST", PathOFREPFlags, `{"context":1}`)
	e.flags.Pin(httptest.NewRequest("GET", "/", nil), nil)

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ctxprop_flags_evaluations_total", map[string]string{"via": "ofrep", "feature_flag_result_reason": "STATIC", "error_type": ""}, 1},
		{"ctxprop_flags_evaluations_total", map[string]string{"via": "ofrep", "feature_flag_result_reason": "ERROR", "error_type": "FLAG_NOT_FOUND"}, 1},
		{"ctxprop_flags_evaluations_total", map[string]string{"via": "ofrep", "feature_flag_result_reason": "ERROR", "error_type": "INVALID_CONTEXT"}, 1},
		{"ctxprop_flags_evaluations_total", map[string]string{"via": "pin", "feature_flag_result_reason": "STATIC", "error_type": ""}, 1},
		{"ctxprop_flags_serving", nil, 1},
		{"ctxprop_flags_refused", nil, 0},
		{"ctxprop_flags_configuration_changes_total", nil, 1},
	}
	for _, tt := range tests {
		if got := metricValue(t, reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}
