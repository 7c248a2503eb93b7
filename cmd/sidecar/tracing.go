package main

import (
	"context"
	"fmt"

	"github.com/ctxprop/ctxprop/config"
	"github.com/ctxprop/ctxprop/proxy"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// newTracerProvider returns the SDK tracer provider the tracing block asks for, exporting
// by OTLP/HTTP, or nil when tracing is off. The caller shuts it down.
func newTracerProvider(ctx context.Context, cfg config.Config) (*sdktrace.TracerProvider, error) {
	if cfg.Tracing.ModeInEffect() != config.TraceExport {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(cfg.Tracing.OTLPEndpoint), otlptracehttp.WithInsecure())
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter for %s: %w; check tracing.otlp_endpoint", cfg.Tracing.OTLPEndpoint, err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("ctxprop-sidecar"), semconv.ServiceInstanceID(cfg.Node.Name))
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Tracing.SampleRatio))),
	), nil
}

// traceMode is the proxy's form of tracing.mode; a tracer provider (the demo's,
// which records without exporting) means spans, whatever the config.
func traceMode(t config.Tracing, tp trace.TracerProvider) proxy.TraceMode {
	switch {
	case tp != nil:
		return proxy.TraceExport
	case t.ModeInEffect() == config.TraceExport:
		// newTracerProvider made none: leave it to proxy.New to say so.
		return proxy.TraceExport
	case t.ModeInEffect() == config.TracePassthrough:
		return proxy.TracePassthrough
	}
	return proxy.TraceParticipate
}
