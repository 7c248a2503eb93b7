package flags

import (
	"maps"
	"net/http/httptest"
	"testing"
)

// TestFlags_Evaluations: evaluations through OFREP on a real admin listener and through
// edge pinning are counted by result, both paths summed, as the web page's chart reads them.
func TestFlags_Evaluations(t *testing.T) {
	e := newEnv(t, nil, Options{Pinned: []string{"f"}})
	if got := e.flags.Evaluations(); len(got) != 0 {
		t.Fatalf("Evaluations before any = %v, want none", got)
	}
	e.do(t, "PUT", "/v1/flags/f", def("on"))
	e.do(t, "POST", PathOFREPFlags+"/f", `{}`)
	e.do(t, "POST", PathOFREPFlags+"/f", `{}`)
	e.do(t, "POST", PathOFREPFlags+"/g", `{}`)
	e.flags.Pin(httptest.NewRequest("GET", "/", nil), nil)

	want := map[string]uint64{ReasonStatic: 3, CodeFlagNotFound: 1}
	if got := e.flags.Evaluations(); !maps.Equal(got, want) {
		t.Errorf("Evaluations = %v, want %v", got, want)
	}
}
