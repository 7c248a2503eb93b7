package config_test

import (
	"fmt"

	"github.com/ctxprop/ctxprop/config"
)

func ExampleParse() {
	c, err := config.Parse([]byte(`
node  { name = "pod-a" }
store { commit_window = "50ms" }
sync  { peers = ["10.0.0.7:7403"] }
`), "config.hcl")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Node.Name, c.Store.CommitWindow, c.Sync.Peers, c.Admin.Address)

	_, err = config.Parse([]byte("admin {\n  address = \"10.1.2.3:7400\"\n}\n"), "config.hcl")
	fmt.Println(err)
	// Output:
	// pod-a 50ms [10.0.0.7:7403] 127.0.0.1:7400
	// config.hcl:2: admin.address 10.1.2.3:7400 is not a loopback address; the admin API has no authentication — use 127.0.0.1 or set admin.allow_non_loopback = true
}
