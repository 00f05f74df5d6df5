package jobs

// These tests install a global tracer provider and propagator: they do not
// run in parallel, and put the previous ones back.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncgate/asyncgate/internal/oteltest"
)

func TestTraceHeadersWithoutSpanAreUntouched(t *testing.T) {
	oteltest.Install(t)
	h := map[string]string{"x": "1"}
	if got := traceHeaders(context.Background(), h); len(got) != 1 || got["x"] != "1" {
		t.Fatalf("headers without a span = %v", got)
	}
	if got := traceHeaders(context.Background(), nil); got != nil {
		t.Fatalf("nil headers without a span = %v, want nil", got)
	}
}

// TestTraceHeadersRoundTrip: the enqueuer's span context travels in the
// task headers and the worker's consumer span is its child, in the same
// trace; the task's own headers are copied, not written to.
func TestTraceHeadersRoundTrip(t *testing.T) {
	exp := oteltest.Install(t)
	ctx, parent := otel.Tracer("test").Start(context.Background(), "enqueue")
	own := map[string]string{"k": "v"}
	h := traceHeaders(ctx, own)
	parent.End()
	if len(own) != 1 {
		t.Fatalf("the task's own headers were written to: %v", own)
	}
	if h["k"] != "v" || h["traceparent"] == "" {
		t.Fatalf("headers = %v, want k and traceparent", h)
	}

	var inHandler trace.SpanContext
	task := asynq.NewTaskWithHeaders(TypeProcessOrder, []byte(`{}`), h)
	err := TraceTasks(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		inHandler = trace.SpanContextFromContext(ctx)
		return nil
	})).ProcessTask(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	consumer := spans[1]
	if consumer.Name != "asynq.process "+TypeProcessOrder || consumer.SpanKind != trace.SpanKindConsumer {
		t.Fatalf("consumer span %q kind %v", consumer.Name, consumer.SpanKind)
	}
	if consumer.SpanContext.TraceID() != parent.SpanContext().TraceID() || consumer.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("consumer span is not the enqueuer's child: parent %v, want %v", consumer.Parent, parent.SpanContext())
	}
	if inHandler.SpanID() != consumer.SpanContext.SpanID() {
		t.Fatal("the handler's ctx does not carry the consumer span")
	}
	if !hasAttr(consumer.Attributes, attribute.String("messaging.system", "asynq")) ||
		!hasAttr(consumer.Attributes, attribute.Int("asynq.retry_count", 0)) {
		t.Fatalf("consumer attributes %v", consumer.Attributes)
	}
}

func TestTraceTasksMarksFailuresNotPostponements(t *testing.T) {
	exp := oteltest.Install(t)
	run := func(err error) sdktrace.ReadOnlySpan {
		t.Helper()
		exp.Reset()
		got := TraceTasks(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return err })).
			ProcessTask(context.Background(), asynq.NewTask(TypeCompensate, nil))
		if !errors.Is(got, err) {
			t.Fatalf("middleware returned %v, want %v", got, err)
		}
		spans := exp.GetSpans().Snapshots()
		if len(spans) != 1 {
			t.Fatalf("%d spans", len(spans))
		}
		return spans[0]
	}
	failed := run(errors.New("downstream said 500"))
	if failed.Status().Code != codes.Error || len(failed.Events()) != 1 || failed.Events()[0].Name != "exception" {
		t.Fatalf("failure: status %v, events %v", failed.Status(), failed.Events())
	}
	postponed := run(&Postponed{Delay: time.Second, Err: errors.New("breaker open")})
	if postponed.Status().Code == codes.Error || len(postponed.Events()) != 1 || postponed.Events()[0].Name != "postponed" {
		t.Fatalf("postponement: status %v, events %v", postponed.Status(), postponed.Events())
	}
	if ok := run(nil); ok.Status().Code == codes.Error || ok.Parent().IsValid() {
		t.Fatalf("success: status %v, parent %v (a task without headers starts a trace)", ok.Status(), ok.Parent())
	}
}

func hasAttr(attrs []attribute.KeyValue, want attribute.KeyValue) bool {
	for _, a := range attrs {
		if a == want {
			return true
		}
	}
	return false
}
