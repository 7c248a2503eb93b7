package discovery_test

import (
	"context"
	"io"

	"github.com/ctxprop/ctxprop/sync/discovery"
)

// source is a copy of peersync.Source, the interface the sync layer consumes. This
// package may not import peersync (peersync imports it), so the copy keeps the types
// here honest at compile time.
type source interface {
	Peers(ctx context.Context) ([]string, error)
}

var (
	_ source    = (*discovery.Static)(nil)
	_ source    = (*discovery.DNS)(nil)
	_ source    = (*discovery.XDS)(nil)
	_ source    = (*discovery.Multi)(nil)
	_ io.Closer = (*discovery.XDS)(nil)
	_ io.Closer = (*discovery.Multi)(nil)

	_ interface{ Open(context.Context) error } = (*discovery.XDS)(nil)
	_ interface{ Open(context.Context) error } = (*discovery.Multi)(nil)
)
