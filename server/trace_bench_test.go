package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/server"
)

// BenchmarkAcceptWithTracing measures the accept path (POST /v1/orders over
// HTTP on real Redis: store the order, enqueue its task, answer 202) with
// tracing off and on, in the same run:
//
//   - off: the no-op tracer provider, as a process without OTEL_* settings;
//   - on: the SDK sampling every trace (AlwaysSample), a batch span
//     processor and an exporter that discards, and the W3C propagator: the
//     request's server span, its attributes, and the traceparent written
//     into the task's headers.
//
// As in BenchmarkAcceptWithContract, each iteration places one order each
// way and times both (which goes first alternates). "serial" is one request at a time;
// "parallel" keeps 8×GOMAXPROCS in flight. The metrics are µs per request
// off and on, their ratio, and the throughput lost with tracing on,
// 1 − off/on, in percent; the target is at most 15 %.
func BenchmarkAcceptWithTracing(b *testing.B) {
	prevProp := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	b.Cleanup(func() { otel.SetTextMapPropagator(prevProp) })
	for _, mode := range []string{"serial", "parallel"} {
		b.Run(mode, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
				sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			b.Cleanup(func() { tp.Shutdown(context.Background()) })
			off, on := tracedAcceptBench(b, noop.NewTracerProvider()), tracedAcceptBench(b, tp)
			var offNs, onNs, turn atomic.Int64
			timed := func(f func(), ns *atomic.Int64) {
				t0 := time.Now()
				f()
				ns.Add(int64(time.Since(t0)))
			}
			pair := func() {
				// Which goes first alternates: the second request of a
				// pair can find the first one's work still running.
				if turn.Add(1)%2 == 0 {
					timed(off, &offNs)
					timed(on, &onNs)
				} else {
					timed(on, &onNs)
					timed(off, &offNs)
				}
			}
			runPairs(b, mode, pair)
			n := float64(b.N)
			offUs, onUs := float64(offNs.Load())/n/1e3, float64(onNs.Load())/n/1e3
			b.ReportMetric(offUs, "off-µs/req")
			b.ReportMetric(onUs, "on-µs/req")
			b.ReportMetric(onUs/offUs, "on/off")
			b.ReportMetric(100*(1-offUs/onUs), "loss-%")
		})
	}
}

// tracedAcceptBench serves an API with the request spans of tp on a fresh
// Redis database and returns a function that places one order and fails b
// unless it gets a 202.
func tracedAcceptBench(b *testing.B, tp trace.TracerProvider) func() {
	b.Helper()
	rdb := redistest.Shared(b).NewClient(b)
	a, err := app.New(app.Config{Redis: rdb, API: true, Logger: slog.New(slog.DiscardHandler),
		Server: server.Config{APIKeys: apiKeys, TracerProvider: tp}})
	if err != nil {
		b.Fatal(err)
	}
	post := orderPoster(b, a, keyA, nil)
	return func() {
		if resp := post(); resp != nil && resp.StatusCode != http.StatusAccepted {
			b.Errorf("status %d", resp.StatusCode)
		}
	}
}
