package webui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"time"
)

// AssetPrefix is the path under which Handler serves the page's script and style sheet.
const AssetPrefix = "/ui/"

//go:embed static/index.html static/app.js static/style.css
var static embed.FS

// contentSecurityPolicy lets the page load only its own script and style and talk only to
// its own origin: names and values on the page are user data, and should one ever reach
// the DOM as markup, no injected script or handler attribute runs.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the page at "/" and its assets under AssetPrefix; any other path is
// 404. It is safe for concurrent use.
func Handler() http.Handler {
	files := map[string]asset{
		"/":                       load("static/index.html", "text/html; charset=utf-8"),
		AssetPrefix + "app.js":    load("static/app.js", "text/javascript; charset=utf-8"),
		AssetPrefix + "style.css": load("static/style.css", "text/css; charset=utf-8"),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the web page is read-only; use GET", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		// Revalidate every load: the files change with the binary, and an ETag check on
		// loopback costs nothing.
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}

// load reads an embedded file; the names are fixed by the embed directive, so a failure
// is a broken build.
func load(name, contentType string) asset {
	b, err := static.ReadFile(name)
	if err != nil {
		panic("webui: embedded file missing: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return asset{body: b, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}
