package main

import (
	"context"
	"fmt"
	"time"

	"github.com/ctxprop/ctxprop/config"
	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// metricsExportInterval is how often metrics go to the OTLP collector.
const metricsExportInterval = 30 * time.Second

// newMeterProvider exports, over OTLP/HTTP to tracing.otlp_endpoint, every metric of reg —
// the registry /metrics serves — through the OpenTelemetry Prometheus bridge, so a
// collector and a Prometheus scrape never disagree. Nil when tracing is off.
func newMeterProvider(ctx context.Context, cfg config.Config, reg prometheus.Gatherer, interval time.Duration) (*sdkmetric.MeterProvider, error) {
	if cfg.Tracing.ModeInEffect() != config.TraceExport {
		return nil, nil
	}
	exp, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(cfg.Tracing.OTLPEndpoint), otlpmetrichttp.WithInsecure())
	if err != nil {
		return nil, fmt.Errorf("metrics: OTLP exporter for %s: %w; check tracing.otlp_endpoint", cfg.Tracing.OTLPEndpoint, err)
	}
	reader := sdkmetric.NewPeriodicReader(exp,
		sdkmetric.WithInterval(interval),
		sdkmetric.WithProducer(otelprom.NewMetricProducer(otelprom.WithGatherer(reg))))
	res := resource.NewSchemaless(semconv.ServiceName("ctxprop-sidecar"), semconv.ServiceInstanceID(cfg.Node.Name))
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res)), nil
}
