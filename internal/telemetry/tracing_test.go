package telemetry

// These tests change the global tracer provider and propagator: none of
// them runs in parallel, and each puts the globals back (SetupTracing's
// shutdown does).

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func setup(t *testing.T, cfg TracingConfig) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	shutdown, err := SetupTracing(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

func TestTracingOffByDefault(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"empty environment":    {},
		"sdk disabled":         {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
		"traces exporter none": {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
	} {
		t.Run(name, func(t *testing.T) {
			before := otel.GetTracerProvider()
			setup(t, TracingConfig{Getenv: env(vars)})
			if otel.GetTracerProvider() != before {
				t.Fatal("tracing off installed a tracer provider")
			}
			_, span := otel.Tracer("test").Start(context.Background(), "x")
			defer span.End()
			if span.IsRecording() {
				t.Fatal("a span records with tracing off")
			}
		})
	}
}

func TestTracingStdout(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "")
	var buf bytes.Buffer
	shutdown, err := SetupTracing(context.Background(), TracingConfig{Stdout: &buf, Logger: quiet(), Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "stdout-span")
	if !span.IsRecording() {
		t.Fatal("span not recording with --trace-stdout")
	}
	span.End()
	if err := shutdown(context.Background()); err != nil { // flushes the batch
		t.Fatal(err)
	}
	var got struct {
		Name     string
		Resource []struct {
			Key   string
			Value struct{ Value any }
		}
	}
	if err := json.NewDecoder(&buf).Decode(&got); err != nil {
		t.Fatalf("decode %q: %v", buf.String(), err)
	}
	if got.Name != "stdout-span" {
		t.Fatalf("exported span %q", got.Name)
	}
	service := ""
	for _, kv := range got.Resource {
		if kv.Key == "service.name" {
			service, _ = kv.Value.Value.(string)
		}
	}
	if service != DefaultServiceName {
		t.Fatalf("service.name = %q, want %q", service, DefaultServiceName)
	}
	if _, s := otel.Tracer("test").Start(context.Background(), "after"); s.IsRecording() {
		t.Fatal("shutdown left a recording provider installed")
	}
}

// TestTracingOTLPFromEnvironment: the standard variables alone turn tracing
// on; spans go to the endpoint over http/protobuf, under OTEL_SERVICE_NAME,
// sampled by OTEL_TRACES_SAMPLER.
func TestTracingOTLPFromEnvironment(t *testing.T) {
	got := make(chan *http.Request, 10)
	bodies := make(chan []byte, 10)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	vars := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
		"OTEL_SERVICE_NAME":           "gateway-under-test",
		"OTEL_TRACES_SAMPLER":         "traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "1",
	}
	for k, v := range vars {
		t.Setenv(k, v) // the SDK reads the process environment
	}
	shutdown, err := SetupTracing(context.Background(), TracingConfig{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "otlp-span")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		body := <-bodies
		if r.Method != "POST" || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Fatalf("collector got %s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		for _, want := range []string{"otlp-span", "gateway-under-test"} {
			if !bytes.Contains(body, []byte(want)) {
				t.Fatalf("exported batch lacks %q", want)
			}
		}
	case <-ctx.Done():
		t.Fatal("the collector got nothing")
	}
}

func TestTracingSamplerFromEnvironment(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	exp := tracetest.NewInMemoryExporter()
	setup(t, TracingConfig{Exporter: exp, Sync: true})
	_, span := otel.Tracer("test").Start(context.Background(), "dropped")
	span.End()
	if span.IsRecording() || len(exp.GetSpans()) != 0 {
		t.Fatalf("OTEL_TRACES_SAMPLER=always_off ignored: %d spans", len(exp.GetSpans()))
	}
}

func TestTracingBadSettings(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"protocol": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		"exporter": {"OTEL_TRACES_EXPORTER": "zipkin"},
	} {
		t.Run(name, func(t *testing.T) {
			before := otel.GetTracerProvider()
			shutdown, err := SetupTracing(context.Background(), TracingConfig{Getenv: env(vars), Logger: quiet()})
			if err == nil || !strings.Contains(err.Error(), "not supported") {
				t.Fatalf("err = %v, want not supported", err)
			}
			if shutdown == nil || otel.GetTracerProvider() != before {
				t.Fatal("a failed setup must leave the globals and return a usable shutdown")
			}
		})
	}
}

func TestTracingGRPCProtocol(t *testing.T) {
	// The exporter connects lazily: setup succeeds without a collector.
	setup(t, TracingConfig{Getenv: env(map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
	})})
	if _, span := otel.Tracer("test").Start(context.Background(), "x"); !span.IsRecording() {
		t.Fatal("grpc protocol did not turn tracing on")
	}
}

// TestPropagatorRoundTrip: the installed propagator writes traceparent and
// reads it back into the same trace.
func TestPropagatorRoundTrip(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	setup(t, TracingConfig{Exporter: exp, Sync: true})
	ctx, span := otel.Tracer("test").Start(context.Background(), "parent")
	defer span.End()
	h := http.Header{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
	tp := h.Get("traceparent")
	want := span.SpanContext()
	if !strings.Contains(tp, want.TraceID().String()) || !strings.Contains(tp, want.SpanID().String()) {
		t.Fatalf("traceparent %q does not carry %s/%s", tp, want.TraceID(), want.SpanID())
	}
	back := trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(context.Background(), propagation.HeaderCarrier(h)))
	if !back.IsRemote() || back.TraceID() != want.TraceID() || back.SpanID() != want.SpanID() {
		t.Fatalf("extracted %v, want %v", back, want)
	}
}
