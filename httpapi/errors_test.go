package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ctxprop/ctxprop/ctxstore"
)

// TestStoreError_Answers: every error a store reports through ctxstore's errors reaches a
// real client as its status and the one error shape, "limit" included where a limit is
// named, byte for byte.
func TestStoreError_Answers(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		body   string
	}{
		{"limit", &ctxstore.LimitError{Limit: "max_contexts", Max: 1, What: "a new context"}, 422,
			`{"error":{"code":"limit_exceeded","message":"a new context would exceed store.max_contexts = 1; raise the limit in config.hcl or remove entries","limit":"max_contexts"}}`},
		{"value too large", fmt.Errorf("put: %w", &ctxstore.LimitError{Limit: "max_value_bytes", Max: 8, What: "a value of 9 bytes"}), 413,
			`{"error":{"code":"value_too_large","message":"put: a value of 9 bytes would exceed store.max_value_bytes = 8; raise the limit in config.hcl or remove entries","limit":"max_value_bytes"}}`},
		{"range", fmt.Errorf("%w: context \"c\"", ctxstore.ErrRange), 422,
			`{"error":{"code":"out_of_range","message":"counter out of range: context \"c\"","limit":"counter_range"}}`},
		{"invalid", ctxstore.ValidName("a b"), 400,
			`{"error":{"code":"bad_request","message":"invalid: context name \"a b\": want 1-200 characters of A-Z a-z 0-9 . _ : -"}}`},
		{"not found", ctxstore.ErrNotFound, 404, `{"error":{"code":"not_found","message":"not found"}}`},
		{"closed", ctxstore.ErrClosed, 503,
			`{"error":{"code":"shutting_down","message":"the sidecar is shutting down; retry on another sidecar or once it has restarted"}}`},
		{"failed", ctxstore.ErrFailed, 503, `{"error":{"code":"store_failed","message":"store failed to commit"}}`},
		{"canceled", context.Canceled, 503,
			`{"error":{"code":"shutting_down","message":"the request ended before the write was confirmed on disk; it was applied and will be committed — read it back to check"}}`},
		{"other", io.ErrUnexpectedEOF, 500, `{"error":{"code":"internal","message":"unexpected EOF"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				WriteError(w, StoreError(tt.err))
			}))
			defer srv.Close()
			res, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			data, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := res.StatusCode, tt.status; got != want {
				t.Errorf("status %d, want %d", got, want)
			}
			if got, want := string(data), tt.body+"\n"; got != want {
				t.Errorf("body\n%s\nwant\n%s", got, want)
			}
			if got, want := res.Header.Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type %q, want %q", got, want)
			}
		})
	}
}
