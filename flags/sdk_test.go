package flags_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/open-feature/go-sdk/openfeature"

	"github.com/ctxprop/ctxprop/admin"
	"github.com/ctxprop/ctxprop/flags"
	"github.com/ctxprop/ctxprop/localstore"
)

// ofrepProvider is a minimal OFREP provider for the OpenFeature Go SDK, written from the
// OFREP OpenAPI definition: the go-sdk-contrib OFREP module does not resolve from the
// module proxy. It uses single-flag evaluation, as dynamic-context (server) providers do.
type ofrepProvider struct {
	base   string
	client *http.Client
}

var _ openfeature.FeatureProvider = (*ofrepProvider)(nil)

func (p *ofrepProvider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: "ofrep"} }
func (p *ofrepProvider) Hooks() []openfeature.Hook      { return nil }

type ofrepAnswer struct {
	Value        json.RawMessage `json:"value"`
	Variant      string          `json:"variant"`
	Reason       string          `json:"reason"`
	ErrorCode    string          `json:"errorCode"`
	ErrorDetails string          `json:"errorDetails"`
	Metadata     map[string]any  `json:"metadata"`
}

// resolve evaluates flag; a nil value with no error means "use the default" (DISABLED).
func (p *ofrepProvider) resolve(ctx context.Context, flag string, flat openfeature.FlattenedContext) (json.RawMessage, openfeature.ProviderResolutionDetail) {
	body, _ := json.Marshal(map[string]any{"context": map[string]any(flat)})
	req, err := http.NewRequestWithContext(ctx, "POST", p.base+"/ofrep/v1/evaluate/flags/"+flag, bytes.NewReader(body))
	if err != nil {
		return nil, errDetail(openfeature.NewGeneralResolutionError(err.Error()))
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := p.client.Do(req)
	if err != nil {
		return nil, errDetail(openfeature.NewGeneralResolutionError(err.Error()))
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var a ofrepAnswer
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, errDetail(openfeature.NewParseErrorResolutionError(fmt.Sprintf("status %d: %s", res.StatusCode, data)))
	}
	switch {
	case res.StatusCode == http.StatusNotFound:
		return nil, errDetail(openfeature.NewFlagNotFoundResolutionError(a.ErrorDetails))
	case res.StatusCode == http.StatusBadRequest:
		switch a.ErrorCode {
		case "TARGETING_KEY_MISSING":
			return nil, errDetail(openfeature.NewTargetingKeyMissingResolutionError(a.ErrorDetails))
		case "INVALID_CONTEXT":
			return nil, errDetail(openfeature.NewInvalidContextResolutionError(a.ErrorDetails))
		case "PARSE_ERROR":
			return nil, errDetail(openfeature.NewParseErrorResolutionError(a.ErrorDetails))
		}
		return nil, errDetail(openfeature.NewGeneralResolutionError(a.ErrorDetails))
	case res.StatusCode != http.StatusOK:
		return nil, errDetail(openfeature.NewGeneralResolutionError(fmt.Sprintf("status %d", res.StatusCode)))
	}
	return a.Value, openfeature.ProviderResolutionDetail{Reason: openfeature.Reason(a.Reason), Variant: a.Variant, FlagMetadata: a.Metadata}
}

func errDetail(err openfeature.ResolutionError) openfeature.ProviderResolutionDetail {
	return openfeature.ProviderResolutionDetail{ResolutionError: err, Reason: openfeature.ErrorReason}
}

// typed decodes the value into T, or gives the default with the detail.
func typed[T any](raw json.RawMessage, d openfeature.ProviderResolutionDetail, def T) (T, openfeature.ProviderResolutionDetail) {
	if raw == nil {
		return def, d
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return def, errDetail(openfeature.NewTypeMismatchResolutionError(fmt.Sprintf("value %s: %v", raw, err)))
	}
	return v, d
}

func (p *ofrepProvider) BooleanEvaluation(ctx context.Context, flag string, def bool, flat openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	v, d := typedOf[bool](p.resolve(ctx, flag, flat))(def)
	return openfeature.BoolResolutionDetail{Value: v, ProviderResolutionDetail: d}
}

func (p *ofrepProvider) StringEvaluation(ctx context.Context, flag string, def string, flat openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	v, d := typedOf[string](p.resolve(ctx, flag, flat))(def)
	return openfeature.StringResolutionDetail{Value: v, ProviderResolutionDetail: d}
}

func (p *ofrepProvider) FloatEvaluation(ctx context.Context, flag string, def float64, flat openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	v, d := typedOf[float64](p.resolve(ctx, flag, flat))(def)
	return openfeature.FloatResolutionDetail{Value: v, ProviderResolutionDetail: d}
}

func (p *ofrepProvider) IntEvaluation(ctx context.Context, flag string, def int64, flat openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	f, d := typedOf[float64](p.resolve(ctx, flag, flat))(float64(def))
	if f != math.Trunc(f) {
		return openfeature.IntResolutionDetail{Value: def, ProviderResolutionDetail: errDetail(openfeature.NewTypeMismatchResolutionError(fmt.Sprintf("%v is not an integer", f)))}
	}
	return openfeature.IntResolutionDetail{Value: int64(f), ProviderResolutionDetail: d}
}

func (p *ofrepProvider) ObjectEvaluation(ctx context.Context, flag string, def any, flat openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	v, d := typedOf[any](p.resolve(ctx, flag, flat))(def)
	return openfeature.InterfaceResolutionDetail{Value: v, ProviderResolutionDetail: d}
}

// typed's two results feed a function of the default: Go cannot spread a call's results
// into a call with more arguments.
func typedOf[T any](raw json.RawMessage, d openfeature.ProviderResolutionDetail) func(T) (T, openfeature.ProviderResolutionDetail) {
	return func(def T) (T, openfeature.ProviderResolutionDetail) { return typed(raw, d, def) }
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// The OpenFeature Go SDK, through an OFREP provider, evaluates flags served by a real admin
// server on loopback over a real store; a change through the flag API shows in the next
// evaluation.
func TestOpenFeatureSDK(t *testing.T) {
	log := hclog.New(&hclog.LoggerOptions{Output: tWriter{t}, Level: hclog.Info})
	st := localstore.New(localstore.Options{Path: filepath.Join(t.TempDir(), "ctxprop.db"), Logger: log})
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	f := flags.New(flags.Options{Store: st, Logger: log})
	if err := f.Open(); err != nil {
		t.Fatal(err)
	}
	srv := admin.New(admin.Options{Address: "127.0.0.1:0", Store: st, Logger: log})
	f.Register(srv)
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		openfeature.Shutdown()
		f.Close()
		if err := srv.Close(context.Background()); err != nil {
			t.Error(err)
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	base := "http://" + srv.Addr().String()
	put := func(key, def string) {
		t.Helper()
		req, _ := http.NewRequest("PUT", base+"/v1/flags/"+key, strings.NewReader(def))
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNoContent {
			t.Fatalf("PUT %s: %d", key, res.StatusCode)
		}
	}
	put("new-checkout", `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
		"targeting":{"if":[{"ends_with":[{"var":"email"},"@example.com"]},"on"]}}`)
	put("theme", `{"state":"ENABLED","variants":{"dark":"dark","light":"light"},"defaultVariant":"light"}`)
	put("max-items", `{"state":"ENABLED","variants":{"few":10,"many":100},"defaultVariant":"few",
		"targeting":{"if":[{"sem_ver":[{"var":"appVersion"},">=","2.0.0"]},"many"]}}`)
	put("ratio", `{"state":"ENABLED","variants":{"half":0.5},"defaultVariant":"half"}`)
	put("limits", `{"state":"ENABLED","variants":{"std":{"rps":5}},"defaultVariant":"std"}`)
	put("rollout", `{"state":"ENABLED","variants":{"a":"a","b":"b"},"defaultVariant":"a","targeting":{"fractional":[["a",50],["b",50]]}}`)
	put("retired", `{"state":"DISABLED","variants":{"on":true},"defaultVariant":"on"}`)

	if err := openfeature.SetProviderAndWait(&ofrepProvider{base: base, client: &http.Client{Timeout: 5 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	client := openfeature.NewDefaultClient()
	ctx := context.Background()
	staff := openfeature.NewEvaluationContext("user-1", map[string]any{"email": "ann@example.com", "appVersion": "2.1.0"})
	guest := openfeature.NewEvaluationContext("user-2", map[string]any{"email": "bob@else.org", "appVersion": "1.9.0"})

	d, err := client.BooleanValueDetails(ctx, "new-checkout", false, staff)
	if err != nil || !d.Value || d.Reason != openfeature.TargetingMatchReason || d.Variant != "on" {
		t.Errorf("new-checkout for staff: %+v, %v", d, err)
	}
	if v, err := client.BooleanValue(ctx, "new-checkout", true, guest); err != nil || v {
		t.Errorf("new-checkout for a guest = %v, %v; want the default variant false", v, err)
	}
	if v, err := client.StringValue(ctx, "theme", "none", guest); err != nil || v != "light" {
		t.Errorf("theme = %q, %v", v, err)
	}
	if v, err := client.IntValue(ctx, "max-items", 0, staff); err != nil || v != 100 {
		t.Errorf("max-items for app 2.1.0 = %d, %v", v, err)
	}
	if v, err := client.FloatValue(ctx, "ratio", 0, guest); err != nil || v != 0.5 {
		t.Errorf("ratio = %v, %v", v, err)
	}
	if v, err := client.ObjectValue(ctx, "limits", nil, guest); err != nil || fmt.Sprint(v) != "map[rps:5]" {
		t.Errorf("limits = %v, %v", v, err)
	}
	sd, err := client.StringValueDetails(ctx, "rollout", "none", staff)
	if err != nil || sd.Reason != openfeature.SplitReason || (sd.Value != "a" && sd.Value != "b") {
		t.Errorf("rollout = %+v, %v", sd, err)
	}
	// Disabled: the SDK returns the code default. A single evaluation answers it as flagd
	// does, 404 FLAG_NOT_FOUND saying it is DISABLED (the published server providers refuse
	// a success without a value), so the reason is ERROR.
	bd, err := client.BooleanValueDetails(ctx, "retired", false, staff)
	if bd.Value || bd.ErrorCode != openfeature.FlagNotFoundCode || !strings.Contains(bd.ErrorMessage, "DISABLED") {
		t.Errorf("retired = %+v, %v; want the code default false, FLAG_NOT_FOUND saying it is DISABLED", bd, err)
	}
	// Errors reach the application as OpenFeature error codes, with the default value.
	if d, err := client.BooleanValueDetails(ctx, "no-such-flag", true, staff); err == nil || !d.Value || d.ErrorCode != openfeature.FlagNotFoundCode {
		t.Errorf("unknown flag = %+v, %v; want FLAG_NOT_FOUND and the default", d, err)
	}
	if d, err := client.StringValueDetails(ctx, "rollout", "none", openfeature.NewTargetlessEvaluationContext(nil)); err == nil || d.ErrorCode != openfeature.TargetingKeyMissingCode {
		t.Errorf("rollout without a targeting key = %+v, %v; want TARGETING_KEY_MISSING", d, err)
	}
	if d, err := client.StringValueDetails(ctx, "theme", "none", staff); err != nil || d.Reason != openfeature.StaticReason {
		t.Errorf("theme details = %+v, %v; want STATIC", d, err)
	}
	if d, err := client.IntValueDetails(ctx, "theme", 7, staff); err == nil || d.Value != 7 || d.ErrorCode != openfeature.TypeMismatchCode {
		t.Errorf("theme as an int = %+v, %v; want TYPE_MISMATCH and the default", d, err)
	}

	put("theme", `{"state":"ENABLED","variants":{"dark":"dark","light":"light"},"defaultVariant":"dark"}`)
	if v, err := client.StringValue(ctx, "theme", "none", guest); err != nil || v != "dark" {
		t.Errorf("theme after the change = %q, %v; want dark", v, err)
	}
}
