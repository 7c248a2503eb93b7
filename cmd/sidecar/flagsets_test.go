package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRun_FlagSets: `sidecar run` with flag files in its config serves flagd's flag sets
// over OFREP on the admin listener, as a flagd provider asks for them: the Flagd-Selector
// header narrows the single and the bulk evaluation to one flag set, and the bulk answer
// carries that set's metadata at its top.
func TestRun_FlagSets(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	payments := write("payments.json", `{
	  "metadata": {"flagSetId": "payments", "version": "v3"},
	  "flags": {"checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}
	}`)
	shop := write("shop.json", `{
	  "metadata": {"flagSetId": "webshop", "version": "v9"},
	  "flags": {"checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}
	}`)
	cfg := write("sidecar.hcl", `flags {
  files = ["`+payments+`", "`+shop+`"]
}
`)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"run", "-config", cfg}, &stderr, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ready := regexp.MustCompile(`sidecar ready: admin=(127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(20 * time.Second)
	var m []string
	for m = ready.FindStringSubmatch(stderr.String()); m == nil; m = ready.FindStringSubmatch(stderr.String()) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Run ended before ready: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	post := func(path, selector string, v any) int {
		t.Helper()
		req, err := http.NewRequest("POST", "http://"+m[1]+path, strings.NewReader(`{"context":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if selector != "" {
			req.Header.Set("Flagd-Selector", selector)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s: %d %s: %v", path, res.StatusCode, body, err)
		}
		return res.StatusCode
	}

	type result struct {
		Value    any            `json:"value"`
		Metadata map[string]any `json:"metadata"`
	}
	for selector, want := range map[string]result{
		"":                   {false, map[string]any{"flagSetId": "webshop", "version": "v9"}}, // the later file
		"flagSetId=payments": {true, map[string]any{"flagSetId": "payments", "version": "v3"}},
		"flagSetId=webshop":  {false, map[string]any{"flagSetId": "webshop", "version": "v9"}},
	} {
		var got result
		if status := post("/ofrep/v1/evaluate/flags/checkout", selector, &got); status != 200 || !reflect.DeepEqual(got, want) {
			t.Errorf("selector %q: %d %+v, want %+v", selector, status, got, want)
		}
		var bulk struct {
			Flags    []result       `json:"flags"`
			Metadata map[string]any `json:"metadata"`
		}
		if status := post("/ofrep/v1/evaluate/flags", selector, &bulk); status != 200 || len(bulk.Flags) != 1 || !reflect.DeepEqual(bulk.Flags[0], want) {
			t.Errorf("bulk, selector %q: %d %+v, want one flag %+v", selector, status, bulk, want)
		}
		if !reflect.DeepEqual(bulk.Metadata, want.Metadata) {
			t.Errorf("bulk, selector %q: top-level metadata %v, want the flag set's %v", selector, bulk.Metadata, want.Metadata)
		}
	}
	var missing struct{ ErrorCode string }
	if status := post("/ofrep/v1/evaluate/flags/checkout", "flagSetId=experiments", &missing); status != 404 || missing.ErrorCode != "FLAG_NOT_FOUND" {
		t.Errorf("a set without the flag: %d %+v, want 404 FLAG_NOT_FOUND", status, missing)
	}
}
