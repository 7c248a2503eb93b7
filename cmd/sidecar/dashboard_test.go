package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	gfdashboard "github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/flags"
)

// dashboardPath is the Grafana dashboard shipped for the sidecar's metrics.
const dashboardPath = "../../deploy/grafana/ctxprop-fleet.json"

// The parts of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatalf("the Grafana dashboard: %v", err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// TestDashboard_GrafanaSchema decodes the dashboard with the types Grafana publishes for
// its dashboard schema (grafana-foundation-sdk, generated from Grafana's own CUE schema),
// strictly: an unknown field, a wrong type or a missing required field anywhere, panel
// options and field config included, fails here rather than on a user's import. The panel
// types must be ones a stock Grafana has, since the SDK decodes unknown types loosely.
func TestDashboard_GrafanaSchema(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatalf("the Grafana dashboard: %v", err)
	}
	plugins.RegisterDefaultPlugins()
	var d gfdashboard.Dashboard
	// UnmarshalJSONStrict returns a nil cog.BuildErrors as a non-nil error when all is
	// well (v0.0.22), so what counts is whether it says anything.
	if err := d.UnmarshalJSONStrict(raw); err != nil && err.Error() != "" {
		t.Fatalf("%s does not match Grafana's dashboard schema:\n%v", dashboardPath, err)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	core := map[string]bool{"row": true, "timeseries": true, "stat": true, "gauge": true,
		"bargauge": true, "table": true, "heatmap": true, "histogram": true, "text": true,
		"piechart": true, "barchart": true, "statetimeline": true, "statushistory": true}
	for _, p := range loadDashboard(t).Panels {
		if !core[p.Type] {
			t.Errorf("panel %q: type %q is not a core Grafana panel", p.Title, p.Type)
		}
	}

	// The check has teeth: a stray field and a wrongly typed one are refused.
	bad := strings.Replace(string(raw), `"showLegend": true`, `"showLegend": true, "bogus": 1`, 1)
	if err := new(gfdashboard.Dashboard).UnmarshalJSONStrict([]byte(bad)); err == nil || err.Error() == "" {
		t.Error("a legend with an unknown field decoded without an error")
	}
}

// TestDashboard_Structure checks what Grafana needs to import the dashboard and what makes
// it usable on any Prometheus: a uid and schemaVersion, a datasource variable that every
// panel and query uses, a context variable, unique panel ids and panels that fit the
// 24-column grid without overlapping.
func TestDashboard_Structure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || len(d.UID) > 40 {
		t.Errorf("uid %q: want 1 to 40 characters (Grafana's limit), stable across imports", d.UID)
	}
	if d.Title == "" {
		t.Error("no title")
	}
	if d.SchemaVersion < 36 { // datasource references by uid
		t.Errorf("schemaVersion %d, want at least 36", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "datasource" && string(v.Query) != `"prometheus"` {
			t.Errorf("variable %s: query %s, want \"prometheus\"", v.Name, v.Query)
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s: datasource %+v, want uid ${datasource}", v.Name, v.Datasource)
		}
	}
	if vars["datasource"] != "datasource" || vars["context"] != "query" {
		t.Errorf("template variables %v, want datasource (a datasource) and context (a query)", vars)
	}
	ids := map[int]string{}
	type rect struct {
		title      string
		x, y, w, h int
	}
	var placed []rect
	queries := 0
	for _, p := range d.Panels {
		if p.ID <= 0 {
			t.Errorf("panel %q: id %d, want a positive one", p.Title, p.ID)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		r := rect{p.Title, g.X, g.Y, g.W, g.H}
		for _, o := range placed {
			if r.x < o.x+o.w && o.x < r.x+r.w && r.y < o.y+o.h && o.y < r.y+r.h {
				t.Errorf("panels %q %+v and %q overlap", r.title, g, o.title)
			}
		}
		placed = append(placed, r)
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			queries++
			if q.Datasource == nil || q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s: datasource %+v, want uid ${datasource}", p.Title, q.RefID, q.Datasource)
			}
			if q.RefID == "" || refs[q.RefID] {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, q.RefID)
			}
			refs[q.RefID] = true
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q query %s: no expr", p.Title, q.RefID)
			}
		}
	}
	if queries == 0 {
		t.Error("no queries at all")
	}
}

// promqlNames returns the metric names a PromQL expression selects and the label names it
// uses (in matchers and in by, without, on, ignoring and group_left/right lists), with
// Grafana variables ($x, ${x}, [$__rate_interval]) allowed where Grafana puts them.
func promqlNames(expr string) (metrics, labels []string, err error) {
	keywords := map[string]bool{"bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true}
	grouping := map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	i := 0
	ident := func() string {
		s := i
		for i < len(expr) && isPart(expr[i]) {
			i++
		}
		return expr[s:i]
	}
	skipSpace := func() {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
	}
	str := func() error { // at a quote: skip the string literal
		q := expr[i]
		for i++; i < len(expr); i++ {
			if expr[i] == '\\' && q != '`' {
				i++
				continue
			}
			if expr[i] == q {
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	// labelList reads "(a, b)" after a grouping keyword.
	labelList := func() error {
		skipSpace()
		if i >= len(expr) || expr[i] != '(' {
			return fmt.Errorf("no label list after a grouping keyword at %d in %q", i, expr)
		}
		i++
		for {
			skipSpace()
			if i < len(expr) && expr[i] == ')' {
				i++
				return nil
			}
			if i >= len(expr) || !isStart(expr[i]) {
				return fmt.Errorf("bad label list at %d in %q", i, expr)
			}
			labels = append(labels, ident())
			skipSpace()
			if i < len(expr) && expr[i] == ',' {
				i++
			}
		}
	}
	// matchers reads "{a="x", b!~"y"}".
	matchers := func() error {
		i++
		for {
			skipSpace()
			if i < len(expr) && expr[i] == '}' {
				i++
				return nil
			}
			if i >= len(expr) || !isStart(expr[i]) {
				return fmt.Errorf("bad matcher at %d in %q", i, expr)
			}
			labels = append(labels, ident())
			skipSpace()
			for i < len(expr) && strings.ContainsRune("=!~", rune(expr[i])) {
				i++
			}
			skipSpace()
			if i >= len(expr) || !strings.ContainsRune("\"'`", rune(expr[i])) {
				return fmt.Errorf("matcher without a string value at %d in %q", i, expr)
			}
			if err := str(); err != nil {
				return err
			}
			skipSpace()
			if i < len(expr) && expr[i] == ',' {
				i++
			}
		}
	}
	depth := 0
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := str(); err != nil {
				return nil, nil, err
			}
		case c == '[': // a range or subquery: durations and Grafana's interval variables
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, nil, fmt.Errorf("unclosed [ in %q", expr)
			}
			i += end + 1
		case c == '{':
			if err := matchers(); err != nil {
				return nil, nil, err
			}
		case c == '$': // a Grafana variable outside a string
			i++
			if i < len(expr) && expr[i] == '{' {
				end := strings.IndexByte(expr[i:], '}')
				if end < 0 {
					return nil, nil, fmt.Errorf("unclosed ${ in %q", expr)
				}
				i += end + 1
			} else {
				ident()
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.' || (expr[i] == '-' || expr[i] == '+') && (expr[i-1] == 'e' || expr[i-1] == 'E')) {
				i++
			}
		case isStart(c):
			name := ident()
			skipSpace()
			switch {
			case grouping[name]:
				if err := labelList(); err != nil {
					return nil, nil, err
				}
			case i < len(expr) && expr[i] == '(': // a function or an aggregation
			case strings.HasPrefix(expr[i:], "by") || strings.HasPrefix(expr[i:], "without"):
				// An aggregation with its grouping first: "sum by (a) (...)". The
				// keyword is read next; a metric named by… would be followed by
				// neither space nor "(" here, so it is not taken for one.
				if j := strings.IndexFunc(expr[i:], func(r rune) bool { return !isPart(byte(r)) }); j < 0 || !grouping[expr[i:i+j]] {
					metrics = append(metrics, name)
				}
			case keywords[strings.ToLower(name)]:
			default:
				metrics = append(metrics, name)
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			i++
		case c == '}' || c == ']':
			return nil, nil, fmt.Errorf("unbalanced %c at %d in %q", c, i, expr)
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, nil, fmt.Errorf("unbalanced parentheses in %q", expr)
	}
	return metrics, labels, nil
}

// TestPromqlNames checks the extraction on the forms the dashboard uses and on the errors
// it must not let through.
func TestPromqlNames(t *testing.T) {
	tests := []struct {
		expr            string
		metrics, labels string
		fails           bool
	}{
		{`max by (context) (rate(a_total{context=~"$context"}[$__rate_interval]))`, "a_total", "context context", false},
		{`histogram_quantile(0.99, sum by (direction, le) (rate(b_bucket[5m])))`, "b_bucket", "direction le", false},
		{`rate(x[1m]) / (rate(y[1m]) + rate(z{a="}",b!~'q'}[1m]))`, "x y z", "a b", false},
		{`sum without(instance) (up offset 5m) > bool 1e-3`, "up", "instance", false},
		{`a * on(job) group_left(name) b`, "a b", "job name", false},
		{`max(ctxprop_flags_serving)`, "ctxprop_flags_serving", "", false},
		{`sum(rate(a{b="c"[1m]))`, "", "", true},
		{`sum(rate(a[1m])`, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			m, l, err := promqlNames(tt.expr)
			if got, want := err != nil, tt.fails; got != want {
				t.Fatalf("error %v, want one: %v", err, want)
			}
			if tt.fails {
				return
			}
			if got, want := strings.Join(m, " "), tt.metrics; got != want {
				t.Errorf("metrics %q, want %q", got, want)
			}
			if got, want := strings.Join(l, " "), tt.labels; got != want {
				t.Errorf("labels %q, want %q", got, want)
			}
		})
	}
}

// exported parses a /metrics body into the label names of each series name (a histogram
// gives its _bucket, _sum and _count).
func exported(body string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	series := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$`)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	for _, line := range strings.Split(body, "\n") {
		m := series.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if out[m[1]] == nil {
			out[m[1]] = map[string]bool{}
		}
		for _, l := range label.FindAllStringSubmatch(m[2], -1) {
			out[m[1]][l[1]] = true
		}
	}
	return out
}

// dashboardProblems lists the queries of d that name a metric the scrape lacks, or a
// label none of their metrics has. le is every histogram's; instance and job are the
// labels Prometheus adds to what it scrapes.
func dashboardProblems(d dashboard, scrape map[string]map[string]bool) []string {
	var problems []string
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			metrics, labels, err := promqlNames(q.Expr)
			if err != nil {
				problems = append(problems, fmt.Sprintf("panel %q: %v", p.Title, err))
				continue
			}
			if len(metrics) == 0 {
				problems = append(problems, fmt.Sprintf("panel %q query %s names no metric: %s", p.Title, q.RefID, q.Expr))
			}
			has := map[string]bool{"le": true, "instance": true, "job": true}
			for _, m := range metrics {
				if scrape[m] == nil {
					problems = append(problems, fmt.Sprintf("panel %q: %s is not on /metrics", p.Title, m))
				}
				for l := range scrape[m] {
					has[l] = true
				}
			}
			for _, l := range labels {
				if !has[l] {
					problems = append(problems, fmt.Sprintf("panel %q: label %s is on none of %v", p.Title, l, metrics))
				}
			}
		}
	}
	return problems
}

// TestDashboard_QueriesNameExportedMetrics starts two peered sidecars in this process,
// sends traffic that touches every metric family (inbound requests in a context, some
// failing, outbound ones, an OFREP evaluation, replication between the two), scrapes
// /metrics and checks that every metric and label every query of the Grafana dashboard
// names is there. The checker itself is shown to catch a renamed label and an unknown
// metric.
func TestDashboard_QueriesNameExportedMetrics(t *testing.T) {
	d := loadDashboard(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	// Two sidecars that replicate to each other, with per-peer metrics: the dashboard's
	// lag per peer needs them.
	syncAddrs := []string{freePort(t), freePort(t)}
	var nodes []*node
	for i, addr := range syncAddrs {
		cfg := config.DefaultConfig()
		cfg.Node.Name = fmt.Sprintf("dash-%d", i)
		cfg.Store.Path = filepath.Join(t.TempDir(), "ctxprop.db")
		cfg.Store.CommitWindow = 20 * time.Millisecond
		cfg.Admin.Address = "127.0.0.1:0"
		cfg.Inbound.Address = "127.0.0.1:0"
		cfg.Inbound.App = app.Listener.Addr().String()
		cfg.Inbound.ContextBaggage = "ctx.name"
		cfg.Outbound.Address = "127.0.0.1:0"
		cfg.Outbound.TransparentAddress = "" // two sidecars in one process
		cfg.Sync.Address = addr
		cfg.Sync.Peers = syncAddrs
		cfg.Sync.PeerMetrics = true
		n, err := startNode(cfg, hclog.New(&hclog.LoggerOptions{Name: cfg.Node.Name, Output: t.Output()}), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.close(context.Background()); err != nil {
				t.Error(err)
			}
		})
		nodes = append(nodes, n)
	}
	n := nodes[0]
	base := "http://" + n.admin.Addr().String()
	hc := &http.Client{Timeout: 10 * time.Second}
	do := func(c *http.Client, method, target string, header map[string]string, body string) {
		t.Helper()
		req, err := http.NewRequest(method, target, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	for _, path := range []string{"/", "/", "/fail"} {
		do(hc, "GET", "http://"+n.proxy.InboundAddr().String()+path, map[string]string{"Baggage": "ctx.name=orders"}, "")
	}
	out := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: n.proxy.OutboundAddr().String()})}}
	do(out, "GET", app.URL+"/", nil, "")
	do(hc, "POST", base+flags.PathOFREPFlags+"/no-such-flag", map[string]string{"Content-Type": "application/json"}, `{"context":{"targetingKey":"u"}}`)

	// Poll until the telemetry of orders is exported and the peer's lag has a series.
	var scrape map[string]map[string]bool
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		body = scrapeAdmin(t, base)
		scrape = exported(body)
		_, lag := scrape["ctxprop_sync_peer_lag_seconds"]
		if strings.Contains(body, `ctxprop_context_requests_total{context="orders"} 3`) && lag {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 20 s no per-context telemetry of orders or no per-peer lag on /metrics:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, problem := range dashboardProblems(d, scrape) {
		t.Error(problem)
	}

	// The checker catches a label renamed back and a metric that does not exist.
	var bad dashboard
	bad.Panels = []dashboardPanel{{Title: "old"}}
	bad.Panels[0].Targets = append(bad.Panels[0].Targets, d.Panels[len(d.Panels)-1].Targets[0])
	bad.Panels[0].Targets[0].Expr = `sum by (side) (rate(ctxprop_proxy_requests_total[5m])) + rate(ctxprop_proxy_latency_us_total[5m])`
	got := dashboardProblems(bad, scrape)
	if len(got) != 2 || !strings.Contains(strings.Join(got, "\n"), "label side") || !strings.Contains(strings.Join(got, "\n"), "ctxprop_proxy_latency_us_total") {
		t.Errorf("problems of a query with an old label and an unknown metric: %q, want both named", got)
	}
}
