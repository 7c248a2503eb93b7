package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/localstore"
)

// A workflow records its progress through the admin API, and any pod reads where to
// resume.
func ExampleClient() {
	dir, err := os.MkdirTemp("", "ctxprop-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store := localstore.New(localstore.Options{Path: filepath.Join(dir, "ctxprop.db")})
	if err := store.Open(); err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	srv := admin.New(admin.Options{Address: "127.0.0.1:0", Store: store})
	if err := srv.Open(); err != nil {
		log.Fatal(err)
	}
	defer srv.Close(context.Background())

	ctx := context.Background()
	c := admin.NewClient("http://"+srv.Addr().String(), nil)
	if _, err := c.Incr(ctx, "order-42", "attempts", 1, 0); err != nil {
		log.Fatal(err)
	}
	if err := c.Put(ctx, "order-42", "steps", "payment", json.RawMessage(`"done"`), 0); err != nil {
		log.Fatal(err)
	}
	if err := c.OpsHeader(ctx, "order-42", `put;map="steps";key="shipping";value="started"`); err != nil {
		log.Fatal(err)
	}

	steps, err := c.Map(ctx, "order-42", "steps")
	if err != nil {
		log.Fatal(err)
	}
	attempts, err := c.Counter(ctx, "order-42", "attempts")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("payment=%s shipping=%s attempts=%d\n", steps["payment"], steps["shipping"], attempts)

	_, err = c.Get(ctx, "order-43")
	fmt.Println(admin.IsNotFound(err), err)
	// Output:
	// payment="done" shipping="started" attempts=1
	// true not found: context "order-43"
}
