package webui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
	"github.com/ctxprop/ctxprop/ops"
)

// browser starts Debian's chromium, headless with a fresh profile, and returns a tab's
// context. The browser is closed when the test ends. extra are more command-line options.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (%v): the web page is tested in a real browser; install it with `apt-get install -y chromium`", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 860),
	}
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	// The first action starts the browser, which lives as long as that action's
	// context: the bound is on the whole tab, so that a browser that never answers
	// fails the test instead of hanging it.
	bounded, cancelBound := context.WithTimeout(actx, 2*time.Minute)
	ctx, cancelTab := chromedp.NewContext(bounded, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelBound()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// jsonText is v in JSON as JSON.stringify writes it: without Go's escaping of <, > and &.
func jsonText(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string { return jsonText(s) }

// waitJS polls expr in the page until it evaluates to want, or fails the test at the
// deadline with the last value seen.
func waitJS(t *testing.T, ctx context.Context, what, expr string, want any) {
	t.Helper()
	wantJSON := jsonText(want)
	cond := fmt.Sprintf("JSON.stringify((() => { try { return %s } catch (e) { return 'error: ' + e } })()) === %s", expr, jsString(wantJSON))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
		t.Fatalf("%s: got %v, want %v (%v)", what, got, want, err)
	}
}

// Page expressions. Rows are found by their data attributes, compared in JavaScript,
// so names that hold quotes or markup need no CSS escaping.
func rowText(table, attr, value string, cell int) string {
	return fmt.Sprintf("[...document.querySelectorAll(%s)].find(r => r.dataset.%s === %s)?.cells[%d].textContent ?? null",
		jsString(table+" tbody tr"), attr, jsString(value), cell)
}

func counterText(key string) string { return rowText("#counters", "key", key, 1) }

func TestPage_Live(t *testing.T) {
	peers := staticPeers{{
		Name: "pod-b", Address: "127.0.0.1:7403", State: "alive",
		LastContact: time.Now(), Lag: 150 * time.Millisecond, BytesIn: 3 << 10, BytesOut: 5 << 20,
	}}
	flags := map[string]any{"new-checkout": map[string]any{
		"state": "ENABLED", "defaultVariant": "off",
		"variants": map[string]any{"on": true, "off": false},
	}}
	n := startNode(t, nodeOptions{peers: peers, flags: flagsDocument(map[string]any{
		"flags":    flags,
		"sources":  map[string]string{"new-checkout": "file:flags.json"},
		"problems": []map[string]string{{"source": "file:flags.json", "flag": "broken", "message": "variants: missing"}},
	})})
	n.call(t, "POST", "/v1/contexts/orders/counters/placed", `{"by":1}`)
	n.call(t, "PUT", "/v1/contexts/orders/maps/steps/pay", `{"value":"done"}`)
	n.call(t, "POST", "/v1/contexts/orders/sets/regions", `{"add":["eu-west","us-east"]}`)

	ctx := browser(t)
	watchCSP(t, ctx)
	started := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(n.url()+"/")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "contexts table", rowText("#contexts", "name", "orders", 1), "1")
	waitJS(t, ctx, "live indicator", `document.getElementById("live").textContent`, "live")
	waitJS(t, ctx, "peer lag", rowText("#peers", "address", "127.0.0.1:7403", 4), "150ms")
	waitJS(t, ctx, "peer state", rowText("#peers", "address", "127.0.0.1:7403", 2), "alive")
	waitJS(t, ctx, "flag default", rowText("#flags", "flag", "new-checkout", 2), "off → false")
	waitJS(t, ctx, "flag source", rowText("#flags", "flag", "new-checkout", 4), "file:flags.json")
	waitJS(t, ctx, "refused flag definition", `document.querySelector("#flag-problems li")?.textContent ?? null`,
		"broken (file:flags.json): variants: missing")

	// Select the context, as a user clicks it.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#contexts tbody tr[data-name="orders"] a`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "detail title", `document.getElementById("detail-title").textContent`, "orders")
	waitJS(t, ctx, "counter before", counterText("placed"), "1")
	waitJS(t, ctx, "map entry", `document.querySelector('#maps table[data-map="steps"] tr[data-key="pay"]')?.cells[1].textContent ?? null`, `"done"`)
	waitJS(t, ctx, "set members", `[...document.querySelectorAll('#sets tr[data-set="regions"] .member')].map(m => m.textContent)`, []string{"eu-west", "us-east"})

	// A mark on the window survives only if the page is never reloaded.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.__noReload = true`)); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	n.call(t, "POST", "/v1/contexts/orders/counters/placed", `{"by":41}`)
	waitJS(t, ctx, "counter after a change through the API", counterText("placed"), "42")
	t.Logf("change shown %v after the write returned", time.Since(changed).Round(time.Millisecond))
	n.call(t, "POST", "/v1/contexts/orders/counters/shipped", `{"by":7}`)
	waitJS(t, ctx, "new counter", counterText("shipped"), "7")
	waitJS(t, ctx, "counter count in contexts table", rowText("#contexts", "name", "orders", 1), "2")
	n.call(t, "DELETE", "/v1/contexts/orders/maps/steps/pay", "")
	waitJS(t, ctx, "deleted map entry", `document.querySelector('#maps table[data-map="steps"]') === null`, true)
	waitJS(t, ctx, "no reload", `window.__noReload === true`, true)

	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "webui.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("WEBUI_SCREENSHOT_DIR"); dir != "" { // keep a copy to look at
		if err := os.WriteFile(filepath.Join(dir, "webui.png"), png, 0o644); err != nil {
			t.Error(err)
		}
	}
	t.Logf("page live in %v; screenshot %s (%d bytes)", time.Since(started).Round(time.Millisecond), shot, len(png))
	checkCSP(t, ctx)
}

// TestPage_EscapesUserData puts markup in every kind of name and value a user controls and
// checks that the page shows it as text and runs none of it.
func TestPage_EscapesUserData(t *testing.T) {
	const (
		key    = `<script>window.__pwned = "counter"</script>`
		mapKey = `<img src=x onerror="window.__pwned='map key'">`
		value  = `<img src=x onerror="window.__pwned='map value'">`
		member = `<b onmouseover="window.__pwned='member'">bold</b>`
	)
	n := startNode(t, nodeOptions{peers: staticPeers{{Name: `<i>pod</i>`, Address: "127.0.0.1:1", State: "suspect"}}})
	esc := func(s string) string { return urlPathEscape(s) }
	n.call(t, "POST", "/v1/contexts/xss/counters/"+esc(key), `{"by":3}`)
	n.call(t, "PUT", "/v1/contexts/xss/maps/m/"+esc(mapKey), `{"value":`+jsString(value)+`}`)
	n.call(t, "POST", "/v1/contexts/xss/sets/s", `{"add":[`+jsString(member)+`]}`)

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(n.url()+"/#/context/xss")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "counter with markup in its key", counterText(key), "3")
	waitJS(t, ctx, "map key", `document.querySelector('#maps table[data-map="m"] tbody tr')?.cells[0].textContent ?? null`, mapKey)
	waitJS(t, ctx, "map value", `document.querySelector('#maps table[data-map="m"] tbody tr')?.cells[1].textContent ?? null`, jsString(value))
	waitJS(t, ctx, "set member", `document.querySelector('#sets .member')?.textContent ?? null`, member)
	waitJS(t, ctx, "peer name", `document.querySelector('#peers tbody tr')?.cells[0].textContent ?? null`, "<i>pod</i>")
	// A live update goes through the same path.
	n.call(t, "POST", "/v1/contexts/xss/counters/"+esc(key), `{"by":1}`)
	waitJS(t, ctx, "live update of that counter", counterText(key), "4")
	waitJS(t, ctx, "no element made from data", `document.querySelectorAll("main script, main img, main b, main i").length`, 0)
	waitJS(t, ctx, "no script ran", `window.__pwned === undefined`, true)
	// No flags endpoint on this node: the section stays hidden.
	waitJS(t, ctx, "flags hidden on 404", `document.getElementById("flags-section").hidden`, true)
	// No history either: the charts make way for a note that says why.
	waitJS(t, ctx, "charts hidden on 404", `getComputedStyle(document.getElementById("charts")).display`, "none")
	waitJS(t, ctx, "note on the charts", `getComputedStyle(document.getElementById("charts-off")).display`, "block")
}

// TestPage_Reconnects stops the admin server under the page, then starts another on the
// same address: the indicator leaves "live", comes back, and the page shows what changed
// while it was away.
func TestPage_Reconnects(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.call(t, "POST", "/v1/contexts/jobs/counters/done", `{"by":1}`)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(n.url()+"/#/context/jobs")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "live indicator", `document.getElementById("live").textContent`, "live")
	waitJS(t, ctx, "counter", counterText("done"), "1")

	addr := n.admin.Addr().String()
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.admin.Close(cctx); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "indicator after the server stopped", `document.getElementById("live").className === "status live"`, false)

	// Written while no server runs: no event can carry it, the page rereads on reconnect.
	if _, err := n.store.Apply(context.Background(), "jobs", []ops.Op{{Kind: ops.Incr, Key: "done", By: 9}}, localstore.Durable); err != nil {
		t.Fatal(err)
	}
	n.admin = startAdmin(t, n, addr)
	waitJS(t, ctx, "indicator after the server came back", `document.getElementById("live").textContent`, "live")
	waitJS(t, ctx, "counter written while away", counterText("done"), "10")
	n.call(t, "POST", "/v1/contexts/jobs/counters/done", `{"by":5}`)
	waitJS(t, ctx, "live update after reconnecting", counterText("done"), "15")
}

var _ admin.Peers = staticPeers(nil)

// watchCSP records, from the next page load on, every Content-Security-Policy violation
// the page reports, in window.__csp. The recorder is put in by the DevTools protocol, which
// the page's policy does not govern.
func watchCSP(t *testing.T, ctx context.Context) {
	t.Helper()
	const recorder = `window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => { window.__csp.push(e.violatedDirective + " " + (e.blockedURI || e.sample)); });`
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recorder})
		return err
	}))
	if err != nil {
		t.Fatal(err)
	}
}

// checkCSP fails the test if the page broke its Content-Security-Policy, then shows that
// the recorder of watchCSP catches a breach: an inline style attribute.
func checkCSP(t *testing.T, ctx context.Context) {
	t.Helper()
	waitJS(t, ctx, "Content-Security-Policy violations", `window.__csp`, []string{})
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.body.insertAdjacentHTML("beforeend", '<p id="csp-probe" style="color: red">probe</p>')`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the recorder sees an inline style refused", `window.__csp.length > 0 && window.__csp[0].startsWith("style-src")`, true)
}

// plotPixels takes a screenshot of the viewport and counts, in the plot area of the chart
// sel, the pixels of a line's colour: saturated ones, where the grid, the axes and the
// text are grey. It returns the count and the PNG.
func plotPixels(t *testing.T, ctx context.Context, sel string) (int, []byte) {
	t.Helper()
	box, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => {
  const r = document.querySelector(`+jsString(sel+" .plot-area")+`).getBoundingClientRect();
  return [r.left, r.top, r.width, r.height, window.innerWidth];
})()`))
	if err != nil {
		t.Fatalf("the plot area of %s: %v", sel, err)
	}
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("decoding the screenshot: %v", err)
	}
	scale := float64(img.Bounds().Dx()) / box[4] // device pixels per CSS pixel
	area := image.Rect(int(box[0]*scale), int(box[1]*scale), int((box[0]+box[2])*scale), int((box[1]+box[3])*scale))
	if area.Dx() < 100 || area.Dy() < 50 || !area.In(img.Bounds()) {
		t.Fatalf("the plot area of %s is %v in a %v screenshot; want it whole and at least 100×50", sel, area, img.Bounds())
	}
	n := 0
	for y := area.Min.Y; y < area.Max.Y; y++ {
		for x := area.Min.X; x < area.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if max(r, g, b)-min(r, g, b) > 60<<8 {
				n++
			}
		}
	}
	return n, shot
}

// TestPage_Charts starts a node with an app behind its inbound proxy, loads the page, and
// sends traffic through the proxy in two waves: the request, error and latency charts
// plot exactly that traffic per context (the SVG path of a context changes after each
// wave), the lag chart the peer's lag, the flag chart the OFREP evaluations; a screenshot
// shows the request chart's plot area empty before the traffic and drawn after. The page
// breaks none of its Content-Security-Policy.
func TestPage_Charts(t *testing.T) {
	peers := staticPeers{{Name: "pod-b", Address: "127.0.0.1:7403", State: "alive", LastContact: time.Now(), Lag: 150 * time.Millisecond}}
	n := startNode(t, nodeOptions{charts: true, peers: peers, chartInterval: 100 * time.Millisecond})
	n.call(t, "PUT", "/v1/flags/new-checkout", flagDefinition)

	ctx := browser(t)
	watchCSP(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(n.url()+"/")); err != nil {
		t.Fatal(err)
	}
	const (
		requests = `document.getElementById("chart-requests")`
		errs     = `document.getElementById("chart-errors")`
		latency  = `document.getElementById("chart-latency")`
	)
	line := func(chart, series, attr string) string {
		return fmt.Sprintf(`document.querySelector(%s)?.dataset.%s ?? null`, jsString(chart+` path[data-series="`+series+`"]`), attr)
	}
	waitJS(t, ctx, "samples charted", `Number(`+requests+`.dataset.samples) > 1`, true)
	waitJS(t, ctx, "no request line before traffic", requests+`.dataset.lines`, "0")
	waitJS(t, ctx, "peer lag", line("#chart-lag", "127.0.0.1:7403", "last"), "0.15")
	waitJS(t, ctx, "peer in the lag legend", `document.querySelector('#chart-lag li[data-series="127.0.0.1:7403"]')?.textContent ?? null`, "pod-b 127.0.0.1:7403150ms")
	before, _ := plotPixels(t, ctx, "#chart-requests")

	for range 10 {
		n.send(t, "shop", "/")
	}
	for range 4 {
		n.send(t, "cart", "/")
	}
	waitJS(t, ctx, "shop's requests, first wave", line("#chart-requests", "shop", "sum"), "10")
	waitJS(t, ctx, "cart's requests", line("#chart-requests", "cart", "sum"), "4")
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#chart-requests path[data-series="shop"]').getAttribute("d")`))
	if err != nil {
		t.Fatal(err)
	}

	for range 20 {
		n.send(t, "shop", "/")
	}
	for range 5 {
		n.send(t, "shop", "/fail")
	}
	for range 2 {
		n.send(t, "shop", "/slow")
	}
	for range 3 {
		if got, want := n.evaluate(t, "new-checkout"), 200; got != want {
			t.Fatalf("OFREP evaluation: %d, want %d", got, want)
		}
	}
	waitJS(t, ctx, "shop's requests, both waves", line("#chart-requests", "shop", "sum"), "37")
	waitJS(t, ctx, "shop's errors", line("#chart-errors", "shop", "sum"), "5")
	waitJS(t, ctx, "no error line for cart", `document.querySelector('#chart-errors path[data-series="cart"]')`, nil)
	waitJS(t, ctx, "requests in the latency chart", latency+`.dataset.requests`, "41")
	waitJS(t, ctx, "flag evaluations", line("#chart-flags", "STATIC", "sum"), "3")
	waitJS(t, ctx, "legend of the request chart", `[...`+requests+`.querySelectorAll("li")].map(li => li.dataset.series)`, []string{"shop", "cart"})
	waitJS(t, ctx, "shop's line changed", `document.querySelector('#chart-requests path[data-series="shop"]').getAttribute("d") !== `+jsString(first), true)
	waitJS(t, ctx, "error chart drawn", errs+`.dataset.lines`, "1")

	// The latency chart follows the selected context.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#contexts tbody tr[data-name="shop"] a`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "latency of the selected context", `document.getElementById("latency-of").textContent`, "shop")
	waitJS(t, ctx, "its requests", latency+`.dataset.requests`, "37")
	waitJS(t, ctx, "its slow requests above 100 ms", `[...`+latency+`.querySelectorAll("rect.bar")].slice(3).reduce((s, r) => s + Number(r.dataset.count), 0) >= 2`, true)

	after, shot := plotPixels(t, ctx, "#chart-requests")
	t.Logf("request chart: %d line pixels before the traffic, %d after", before, after)
	if before != 0 {
		t.Errorf("the request chart's plot area has %d line pixels before any traffic, want 0", before)
	}
	if after < 200 {
		t.Errorf("the request chart's plot area has %d line pixels after the traffic, want at least 200", after)
	}
	if dir := os.Getenv("WEBUI_SCREENSHOT_DIR"); dir != "" { // keep a copy to look at
		if err := os.WriteFile(filepath.Join(dir, "webui-charts.png"), shot, 0o644); err != nil {
			t.Error(err)
		}
	}
	checkCSP(t, ctx)
}
