// Package storetest opens real stores for the tests of the packages that replicate them
// (sync, relay): a bbolt file in the test's temporary directory, closed when the test
// ends.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/ctxprop/ctxprop/localstore"
)

// Open opens a store on a fresh file under t.TempDir, logging to log, and closes it when
// t ends, failing t if the close fails.
func Open(t testing.TB, log hclog.Logger) *localstore.Store {
	t.Helper()
	st := localstore.New(localstore.Options{Path: filepath.Join(t.TempDir(), "ctx.db"), Logger: log})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return st
}
