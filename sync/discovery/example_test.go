package discovery_test

import (
	"context"
	"fmt"
	"log"

	"github.com/ctxprop/ctxprop/sync/discovery"
)

// The sync layer builds its peer source from config sync { peers, dns, xds }, opens
// it, and polls it.
func Example() {
	ctx := context.Background()
	src, err := discovery.FromConfig(
		[]string{"10.0.0.8:7403", "10.0.0.7:7403", "10.0.0.8:7403"}, // sync.peers
		"", // sync.dns, e.g. "ctxprop-peers.default.svc.cluster.local"
		"", // sync.xds, e.g. "xds.mesh:18000"
		discovery.Options{NodeID: "pod-a"},
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := src.Open(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() {
		if err := src.Close(); err != nil {
			log.Print(err)
		}
	}()

	peers, err := src.Peers(ctx)
	fmt.Println(peers, err)
	// Output: [10.0.0.7:7403 10.0.0.8:7403] <nil>
}
