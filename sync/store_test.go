package peersync

import "github.com/ctxprop/ctxprop/localstore"

// The sidecar wires the store to the syncer in cmd/sidecar; sync imports no store.
var (
	_ WatchStore = (*localstore.Store)(nil)
	_ Retirer    = (*localstore.Store)(nil)
)
