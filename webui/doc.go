// Package webui is the sidecar's web page (SPEC §9): charts of the last minutes (requests
// and errors per second by context, the latency distribution, replication lag by peer,
// flag evaluations by result), the contexts with their counters, maps and sets, the feature
// flags, and the replication peers with their lag, kept live through the admin API's watch
// stream.
//
// The page is three static files embedded in the binary (no build step, no library: the
// charts are SVG drawn by app.js, coloured by the style sheet, so the page works offline
// under a Content-Security-Policy that allows only its own script and style). It reads
// nothing but the admin API of SPEC §3a from the browser. It only reads: every change goes
// through the API or `sidecar ctl`. Mount it on the admin listener:
//
//	ui := webui.Handler()
//	adminServer.Handle("GET /{$}", ui)
//	adminServer.Handle("GET "+webui.AssetPrefix, ui)
//
// "GET /{$}" matches the root alone, so the admin API keeps its JSON 404 for unknown
// paths.
//
// The charts need history from before the page loaded, so the sidecar keeps it: a History
// samples the store's per-context telemetry, the peers and the flag counts every interval
// into a bounded ring and serves it on GET /v1/history:
//
//	h, err := webui.NewHistory(webui.HistoryOptions{Store: store, Peers: peers, Flags: f, Max: 50})
//	// Open, and Close at shutdown
//	adminServer.Handle("GET "+webui.HistoryPath, h)
//
// Without it the page says that it has no charts and shows the rest.
package webui
