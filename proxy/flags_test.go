package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ctxprop/ctxprop/headers"
)

// pinAll pins one flag on every request that lacks it, as *flags.Flags does at the edge.
type pinAll struct{ name, value string }

func (p pinAll) Pin(r *http.Request, pinned []headers.Flag) []headers.Flag {
	for _, f := range pinned {
		if f.Name == p.name {
			return pinned
		}
	}
	return append(append([]headers.Flag{}, pinned...), headers.Flag{Name: p.name, Value: p.value})
}

// Pinnable allows the one flag, as flags.pinned = [name] does.
func (p pinAll) Pinnable(name string) bool { return name == p.name }

var _ Flags = pinAll{}

func TestInbound_FlagsPinnedAtTheEdge(t *testing.T) {
	seen := make(chan http.Header, 2)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	defer app.Close()
	p := startProxy(t, Options{InboundAddress: "127.0.0.1:0", App: hostOf(app.URL), Flags: pinAll{"beta", "on"}, TrustedSources: loopback})
	for _, tc := range []struct {
		name    string
		baggage string
		want    string
	}{
		{"edge: evaluated and pinned", "ctx.name=c1", "on"},
		{"downstream: the pinned value wins", "ctx.name=c1,ctx.flag.beta=off", "off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+p.InboundAddr().String()+"/", nil)
			req.Header.Set("baggage", tc.baggage)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := (<-seen).Get("Ctx-Flag-Beta"); got != tc.want {
				t.Errorf("app got ctx-flag-beta %q, want %q", got, tc.want)
			}
		})
	}
}
