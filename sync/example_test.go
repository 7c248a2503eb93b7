package peersync_test

import (
	"fmt"
	"time"

	peersync "github.com/ctxprop/ctxprop/sync"
)

// Simulate runs the production Engine on an in-memory network with a fake clock: the same
// seed gives the same run, so its figures can be asserted.
func ExampleSimulate() {
	r, err := peersync.Simulate(peersync.SimOptions{
		Nodes:           10,
		Seed:            1,
		Loss:            0.01, // 1% of messages lost
		WritesPerSecond: 50,
		Duration:        5 * time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("converged:", r.Converged)
	fmt.Println("every update reached every node:", r.NotVisible == 0)
	fmt.Println("p99 within one second:", r.VisibleP99 <= time.Second)
	// Output:
	// converged: true
	// every update reached every node: true
	// p99 within one second: true
}
