package jobs

import (
	"context"
	"encoding/json"
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

// Tracing, after OpenTelemetry's messaging conventions. The package uses
// the OpenTelemetry API only: the global tracer provider and propagator,
// which stay no-ops unless the process sets them up (internal/telemetry).
// Every enqueue is a producer span "send <queue>" whose trace context
// (traceparent, tracestate) goes into the task's headers; the worker's
// middleware continues it in a consumer span "asynq.process <type>", a
// child of the producer span, one per attempt, so that the attempts of a
// retried task are sibling spans of one trace. The saga adds a span per
// step. Every span of an order's tasks carries asyncgate.order.id and
// asyncgate.tenant, and so do the downstream calls made under them, so
// that a search by order id finds them all.
//
// The consumer span is the producer span's child, not the HTTP server
// span's: the server span ends with the 202, usually before the consumer
// starts, and a child that starts after its parent ended is what Jaeger's
// clock skew adjuster warns about when the two come from different
// processes; the producer span ends as soon as the task is in Redis.
//
// The reconciler's re-enqueues run outside any request: their producer
// spans start new traces.

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

// messagingSystem is the messaging.system of the task queues' spans.
const messagingSystem = "asynq"

// message is a task about to be enqueued.
type message struct {
	typ, queue, id  string
	tenant, orderID string // the order it is about
}

// send enqueues a task in a producer span "send <queue>", whose trace
// context goes into the task's headers (over those given): the consumer
// span continues from it.
func send(ctx context.Context, c *asynq.Client, m message, body []byte, headers map[string]string, opts ...asynq.Option) error {
	ctx, span := startSend(ctx, m)
	defer span.End()
	t := asynq.NewTaskWithHeaders(m.typ, body, traceHeaders(ctx, headers), append(opts, asynq.TaskID(m.id), asynq.Queue(m.queue))...)
	err := enqueue(ctx, c, t)
	endSpan(span, err)
	return err
}

// startSend starts the producer span of m.
func startSend(ctx context.Context, m message) (context.Context, trace.Span) {
	// Named by the kind of queue, not the shard: a span name stays one of
	// a few whatever --queue-shards; the attribute names the shard.
	kind := m.queue
	if k, _, ok := ParseShardQueue(m.queue); ok {
		kind = k
	}
	ctx, span := tracer().Start(ctx, "send "+kind, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(append(orderAttrs(m.tenant, m.orderID),
			attribute.String("messaging.system", messagingSystem),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.operation.name", "enqueue"),
			attribute.String("messaging.destination.name", m.queue),
			attribute.String("messaging.message.id", m.id),
			attribute.String("asynq.task.type", m.typ),
		)...)
	}
	return ctx, span
}

// taskOrder reads the order a task is about from its payload: every task
// type has the tenant in "t", and the order id in "id" (order and fan-out
// tasks) or "o" (deliveries).
func taskOrder(t *asynq.Task) (tenant, orderID string) {
	var p struct {
		T  string `json:"t"`
		ID string `json:"id"`
		O  string `json:"o"`
	}
	if json.Unmarshal(t.Payload(), &p) != nil {
		return "", ""
	}
	if p.O != "" {
		return p.T, p.O
	}
	return p.T, p.ID
}

// orderAttrs are the attributes that name a span's order; none when the
// task names none.
func orderAttrs(tenant, orderID string) []attribute.KeyValue {
	var out []attribute.KeyValue
	if orderID != "" {
		out = append(out, attribute.String("asyncgate.order.id", orderID))
	}
	if tenant != "" {
		out = append(out, attribute.String("asyncgate.tenant", tenant))
	}
	return out
}

// TraceTasks is the worker's Asynq middleware: it continues the trace
// context found in the task's headers (the producer span) in a consumer
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
			tenant, orderID := taskOrder(t)
			span.SetAttributes(append(orderAttrs(tenant, orderID),
				attribute.String("messaging.system", messagingSystem),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", queue),
				attribute.String("messaging.message.id", id),
				attribute.String("asynq.task.type", t.Type()),
				attribute.Int("asynq.retry_count", retried),
			)...)
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
		if span.IsRecording() {
			span.SetAttributes(append(orderAttrs(taskOrder(t)), attribute.String("asynq.task.type", t.Type()))...)
		}
		err := h(ctx, t)
		endSpan(span, err)
		return err
	}
}
