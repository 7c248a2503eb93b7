package flags

import "github.com/ctxprop/ctxprop/localstore"

// The sidecar hands the local store to Flags in cmd/sidecar; flags imports no store.
var _ Store = (*localstore.Store)(nil)
