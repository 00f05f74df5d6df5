package jobs

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncgate/asyncgate/orders"
)

// Tracing. The package uses the OpenTelemetry API only: the global tracer
// provider and propagator, which stay no-ops unless the process sets them up
// (internal/telemetry). Every enqueue writes the trace context of its ctx
// (traceparent, tracestate) into the task's headers; the worker's middleware
// continues it in a consumer span "asynq.process <type>", one per attempt,
// so that the attempts of a retried task are sibling spans of one trace.
// The saga adds a span per step.
//
// The reconciler's re-enqueues carry no trace context (it runs outside any
// request): their consumer spans start new traces.

// TracerName is the instrumentation scope of the package's spans.
const TracerName = "github.com/asyncgate/asyncgate/jobs"

// tracer is looked up at each use, not kept: a process (or a test) may set
// the global provider after this package was loaded.
func tracer() trace.Tracer { return otel.Tracer(TracerName) }

// traceHeaders returns headers with the trace context of ctx written in.
// When ctx carries no span it returns headers unchanged, without a copy;
// otherwise a copy, so a task's own headers (passed on by a handler) are
// never written to.
func traceHeaders(ctx context.Context, headers map[string]string) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return headers
	}
	h := make(map[string]string, len(headers)+2)
	maps.Copy(h, headers)
	otel.GetTextMapPropagator().Inject(ctx, propagation.MapCarrier(h))
	return h
}

// TraceTasks is the worker's Asynq middleware: it continues the trace
// context found in the task's headers (the enqueuer's span) in a consumer
// span per attempt, named "asynq.process <task type>", and marks it failed
// when the handler failed (a postponement is no failure).
func TraceTasks(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if h := t.Headers(); len(h) > 0 {
			ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(h))
		}
		ctx, span := tracer().Start(ctx, "asynq.process "+t.Type(), trace.WithSpanKind(trace.SpanKindConsumer))
		defer span.End()
		if span.IsRecording() {
			id, _ := asynq.GetTaskID(ctx)
			queue, _ := asynq.GetQueueName(ctx)
			retried, _ := asynq.GetRetryCount(ctx)
			span.SetAttributes(
				attribute.String("messaging.system", "asynq"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", queue),
				attribute.String("messaging.message.id", id),
				attribute.String("asynq.task.type", t.Type()),
				attribute.Int("asynq.retry_count", retried),
			)
		}
		err := next.ProcessTask(ctx, t)
		endSpan(span, err)
		return err
	})
}

// endSpan records err on span: a postponement as an event, anything else
// as the span's error.
func endSpan(span trace.Span, err error) {
	if err == nil || !span.IsRecording() {
		return
	}
	if p, ok := errors.AsType[*Postponed](err); ok {
		span.AddEvent("postponed", trace.WithAttributes(
			attribute.String("asyncgate.postponed.delay", p.Delay.Round(time.Millisecond).String()),
			attribute.String("asyncgate.postponed.reason", errString(p.Err))))
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// stepName names the saga step that leaves status st.
func stepName(st orders.Status) string {
	switch st {
	case orders.Pending:
		return "saga.validate"
	case orders.Validated:
		return "saga.reserve_funds"
	case orders.FundsReserved:
		return "saga.execute"
	}
	return "saga.step"
}

// tracedStep runs one step of the order in its own span.
func (s *Saga) tracedStep(ctx context.Context, l *orders.Lease, log *slog.Logger) error {
	ctx, span := tracer().Start(ctx, stepName(l.Order.Status))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("asyncgate.order.id", l.ID), attribute.String("asyncgate.tenant", l.Tenant))
	}
	err := s.step(ctx, l, log)
	if err == nil && span.IsRecording() {
		span.SetAttributes(attribute.String("asyncgate.order.status", string(l.Order.Status)))
	}
	endSpan(span, err)
	return err
}

// tracedTask runs a handler in a span of its own, a step of the saga
// under the task's consumer span.
func tracedTask(name string, h asynq.HandlerFunc) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		ctx, span := tracer().Start(ctx, name)
		defer span.End()
		err := h(ctx, t)
		endSpan(span, err)
		return err
	}
}
