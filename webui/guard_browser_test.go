package webui_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ctxprop/ctxprop/localstore"
)

// The admin API against a real browser (SPEC §4a): an operator's Chromium, with the admin
// port forwarded to its machine, visits pages that try to write to it.

// metric returns the value of one line of the admin's /metrics, "" if it is absent.
func (n *node) metric(t *testing.T, series string) string {
	t.Helper()
	resp, err := http.Get(n.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// stored reports whether the store holds context name.
func (n *node) stored(t *testing.T, name string) bool {
	t.Helper()
	_, err := n.store.Get(name)
	if err != nil && !errors.Is(err, localstore.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestBrowser_CrossOriginSimplePost: a page of another origin on the same machine (another
// loopback port) sends the one write a page may send anywhere without a CORS preflight, a
// no-cors POST of text/plain. The request reaches the admin API, which refuses it.
func TestBrowser_CrossOriginSimplePost(t *testing.T) {
	n := startNode(t, nodeOptions{})
	page := fmt.Sprintf(`<!doctype html><title>attacker</title><script>
window.__result = "pending";
fetch(%s + "/v1/contexts/x/ops", {method: "POST", mode: "no-cors", headers: {"content-type": "text/plain"}, body: 'incr;key="pwned"'})
  .then(r => { window.__result = "sent " + r.type }, e => { window.__result = "error: " + e });
</script>`, jsString(n.url()))
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	}))
	t.Cleanup(attacker.Close)
	if !strings.HasPrefix(attacker.URL, "http://127.0.0.1:") || attacker.URL == n.url() {
		t.Fatalf("attacker page at %s, want another loopback origin than %s", attacker.URL, n.url())
	}

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(attacker.URL+"/")); err != nil {
		t.Fatal(err)
	}
	// An opaque answer: the browser sent the request and hides the answer from the page.
	waitJS(t, ctx, "fetch from the attacker page", `window.__result`, "sent opaque")

	// The request reached the API: it was either refused or applied.
	const refused = `ctxprop_admin_refused_total{reason="origin"}`
	deadline := time.Now().Add(10 * time.Second)
	for n.metric(t, refused) != "1" && !n.stored(t, "x") {
		if time.Now().After(deadline) {
			t.Fatalf("the request never reached the admin API: %s = %q", refused, n.metric(t, refused))
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if n.stored(t, "x") {
		t.Fatal("a page of another origin wrote context x through the admin API")
	}
	if got, want := n.metric(t, refused), "1"; got != want {
		t.Errorf("%s = %q, want %q", refused, got, want)
	}
}

// TestBrowser_DNSRebinding: a page at a name the attacker controls, rebound to 127.0.0.1
// (here by the browser's resolver rules), is same-origin with the admin port as far as the
// browser knows. The API refuses its Host: the page is not served, and a JSON write from
// that origin, which the browser sends without a preflight, writes nothing.
func TestBrowser_DNSRebinding(t *testing.T) {
	rebound := chromedp.Flag("host-resolver-rules", "MAP rebind.test 127.0.0.1")
	write := `(async () => {
  window.__status = "pending";
  try {
    const r = await fetch("/v1/contexts/x/ops", {method: "POST", headers: {"content-type": "application/json"}, body: '[{"op":"incr","key":"pwned"}]'});
    window.__status = r.status;
  } catch (e) { window.__status = "error: " + e }
})()`

	t.Run("refused", func(t *testing.T) {
		n := startNode(t, nodeOptions{})
		_, port, _ := net.SplitHostPort(n.admin.Addr().String())
		ctx := browser(t, rebound)
		if err := chromedp.Do(ctx, chromedp.Navigate("http://rebind.test:"+port+"/")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "the page at the rebound name", `document.body.innerText.includes("host_not_allowed") && document.body.innerText.includes("rebind.test:`+port+`")`, true)
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](write)); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "same-origin JSON write from the rebound page", `window.__status`, 403)
		if n.stored(t, "x") {
			t.Fatal("a page at a rebound name wrote context x through the admin API")
		}
	})

	// The control: the resolver rule works, and a name the operator lists is served.
	t.Run("allowed name", func(t *testing.T) {
		n := startNode(t, nodeOptions{allowedHosts: []string{"rebind.test"}})
		_, port, _ := net.SplitHostPort(n.admin.Addr().String())
		ctx := browser(t, rebound)
		if err := chromedp.Do(ctx, chromedp.Navigate("http://rebind.test:"+port+"/")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "live indicator", `document.getElementById("live")?.textContent ?? null`, "live")
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](write)); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, "same-origin JSON write from the page", `window.__status`, 204)
		if !n.stored(t, "x") {
			t.Error("the write from the allowed name was not stored")
		}
	})
}
