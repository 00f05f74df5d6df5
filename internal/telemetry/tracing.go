package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// DefaultServiceName names the service in traces unless OTEL_SERVICE_NAME
// (or service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise.
const DefaultServiceName = "asyncgate"

// TracingConfig configures SetupTracing. The zero value reads the standard
// OpenTelemetry environment and leaves tracing off unless it names an OTLP
// endpoint.
type TracingConfig struct {
	// Stdout, when not nil, turns tracing on and writes the spans there
	// as JSON (`asyncgate dev --trace-stdout`), instead of OTLP.
	Stdout io.Writer
	// Exporter, when not nil, turns tracing on and receives the spans
	// (tests, benchmarks). It wins over Stdout and the environment.
	Exporter sdktrace.SpanExporter
	// Sync exports each span as it ends instead of in batches: for tests
	// that look at spans at once. Production keeps the batches.
	Sync bool
	// Sampler overrides OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG,
	// which the SDK reads when it is nil (default: parentbased_always_on).
	Sampler sdktrace.Sampler
	// ServiceVersion is recorded as service.version when not empty.
	ServiceVersion string
	// Logger receives the SDK's errors (an unreachable collector) and a
	// line saying where spans go. Defaults to slog.Default().
	Logger *slog.Logger
	// Getenv reads the environment to decide whether tracing is on and how
	// to export. Defaults to os.Getenv. The SDK itself reads the process
	// environment for the rest (endpoint details, headers, sampler,
	// resource attributes).
	Getenv func(string) string
}

// SetupTracing installs the global OpenTelemetry tracer provider and the
// W3C trace-context and baggage propagators, when tracing is on:
//
//   - cfg.Exporter or cfg.Stdout is set, or
//   - OTEL_TRACES_EXPORTER is "otlp" or "console", or
//   - OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
//     set: OTLP over OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, "http/protobuf"
//     by default, or "grpc".
//
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none keep it off. Off, it
// installs nothing: the global provider stays the API's no-op and spans cost
// next to nothing. The shutdown function flushes the spans still buffered
// and stops the provider, and puts the previous global provider and
// propagator back; call it before the process exits. It is never nil.
func SetupTracing(ctx context.Context, cfg TracingConfig) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	exp, where, err := tracingExporter(ctx, cfg)
	if err != nil || exp == nil {
		return noop, err
	}
	res, err := tracingResource(ctx, cfg)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return noop, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.Sync {
		opts = append(opts, sdktrace.WithSyncer(exp))
	} else {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	if cfg.Sampler != nil {
		opts = append(opts, sdktrace.WithSampler(cfg.Sampler))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	log := cfg.Logger
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry error", "err", err)
	}))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(Propagator())
	log.Info("tracing on", "export", where)
	return func(ctx context.Context) error {
		err := tp.Shutdown(ctx)
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		return err
	}, nil
}

// Propagator is the W3C trace-context and baggage propagator that
// SetupTracing installs.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// tracingExporter picks the exporter; nil when tracing stays off. where
// says where the spans go, for the log.
func tracingExporter(ctx context.Context, cfg TracingConfig) (exp sdktrace.SpanExporter, where string, err error) {
	env := func(k string) string { return strings.TrimSpace(cfg.Getenv(k)) }
	switch {
	case cfg.Exporter != nil:
		return cfg.Exporter, "custom exporter", nil
	case strings.EqualFold(env("OTEL_SDK_DISABLED"), "true"):
		return nil, "", nil
	case cfg.Stdout != nil:
		return stdoutExporter(cfg.Stdout)
	}
	kind := strings.ToLower(env("OTEL_TRACES_EXPORTER"))
	switch kind {
	case "none":
		return nil, "", nil
	case "console":
		return stdoutExporter(os.Stdout)
	case "", "otlp":
	default:
		return nil, "", fmt.Errorf("OTEL_TRACES_EXPORTER %q is not supported: use otlp, console or none", kind)
	}
	if kind == "" && env("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, "", nil // off by default
	}
	proto := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = env("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	// The exporters read the endpoint, headers, TLS and timeout settings
	// from the environment themselves.
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
		where = "otlp http/protobuf"
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
		where = "otlp grpc"
	default:
		return nil, "", fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q is not supported: use http/protobuf or grpc", proto)
	}
	if err != nil {
		return nil, "", fmt.Errorf("otlp trace exporter: %w", err)
	}
	return exp, where, nil
}

func stdoutExporter(w io.Writer) (sdktrace.SpanExporter, string, error) {
	exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
	if err != nil {
		return nil, "", fmt.Errorf("stdout trace exporter: %w", err)
	}
	return exp, "stdout", nil
}

// tracingResource describes the process: service.name "asyncgate" unless
// the environment names it, then OTEL_RESOURCE_ATTRIBUTES.
func tracingResource(ctx context.Context, cfg TracingConfig) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{attribute.String("service.name", DefaultServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...), // first: the environment overrides it
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if errors.Is(err, resource.ErrPartialResource) && res != nil {
		return res, nil // a detector failed; keep what the others found
	}
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return res, nil
}
