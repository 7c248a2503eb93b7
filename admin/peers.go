package admin

import "github.com/ctxprop/ctxprop/ctxstore"

// PeerStatus is one replication peer as GET /v1/peers shows it (ctxstore.PeerStatus: the
// replication backends report it without importing the API). In JSON, Lag is a Go
// duration string ("150ms") and a zero LastContact is omitted.
type PeerStatus = ctxstore.PeerStatus
