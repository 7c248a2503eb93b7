package k8s

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Probe GETs url and returns nil on a 2xx answer. It is what the injected container's exec
// probes run (`sidecar probe -url http://127.0.0.1:7400/readyz`): the admin API listens on
// loopback only, where the kubelet's own httpGet probes cannot reach it. The caller bounds
// the time through ctx, below the probe's timeoutSeconds.
func Probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	// No proxy from the environment: the sidecar must be asked directly.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("probe %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
