package admin

import "github.com/ctxprop/ctxprop/localstore"

// The sidecar hands the local store to the API in cmd/sidecar; admin imports no store.
var _ Store = (*localstore.Store)(nil)
