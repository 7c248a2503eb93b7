// Package webui is the sidecar's web page (SPEC §9): the contexts with their counters,
// maps and sets, the feature flags, and the replication peers with their lag, kept live
// through the admin API's watch stream.
//
// The page is three static files embedded in the binary (no build step) and reads
// nothing but the admin API of SPEC §3a from the browser, so it needs no server state of
// its own. It only reads: every change goes through the API or `sidecar ctl`. Mount it
// on the admin listener:
//
//	ui := webui.Handler()
//	adminServer.Handle("GET /{$}", ui)
//	adminServer.Handle("GET "+webui.AssetPrefix, ui)
//
// "GET /{$}" matches the root alone, so the admin API keeps its JSON 404 for unknown
// paths.
package webui
