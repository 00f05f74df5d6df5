package webhooks

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing: each delivery attempt is a client span "webhook.deliver" in the
// trace of the delivery task (the order's trace, carried from the fan-out),
// and the request to the receiver carries its traceparent. The span names
// the delivery, the event, the endpoint and the receiver's host, never the
// URL's path or query (they may hold a token), the body, the signature or
// the secret. The package uses the global tracer provider and propagator,
// no-ops unless the process sets them up.

// A broker destination's span names the messaging system and the exchange
// or subject instead of the HTTP method; the message carries the
// traceparent in its headers.

// TracerName is the instrumentation scope of the package's spans.
const TracerName = "github.com/asyncgate/asyncgate/webhooks"

// tracedPost makes one attempt in its own client span.
func (d *Deliverer) tracedPost(ctx context.Context, r Ref, a *attempt, now time.Time) (Attempt, time.Duration) {
	ctx, span := otel.Tracer(TracerName).Start(ctx, "webhook.deliver", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	if !span.IsRecording() {
		return d.post(ctx, r, a, now)
	}
	attrs := []attribute.KeyValue{
		attribute.String("webhook.delivery_id", r.DeliveryID),
		attribute.String("webhook.event_id", r.EventID),
		attribute.String("asyncgate.tenant", r.Tenant),
		attribute.Int("asyncgate.attempt", a.attempts+1),
	}
	if r.OrderID != "" {
		attrs = append(attrs, attribute.String("asyncgate.order.id", r.OrderID))
	}
	if r.EndpointID != "" {
		attrs = append(attrs, attribute.String("webhook.endpoint_id", r.EndpointID))
	} else {
		attrs = append(attrs, attribute.Bool("webhook.callback_url", true))
	}
	if u, err := url.Parse(a.url); err == nil {
		attrs = append(attrs, attribute.String("url.scheme", u.Scheme), attribute.String("server.address", u.Hostname()))
		if port, err := strconv.Atoi(u.Port()); err == nil {
			attrs = append(attrs, attribute.Int("server.port", port))
		}
		switch t, _ := parseTarget(u); u.Scheme {
		case "http", "https":
			attrs = append(attrs, attribute.String("http.request.method", http.MethodPost))
		case "amqp", "amqps":
			attrs = append(attrs, attribute.String("messaging.system", "rabbitmq"), attribute.String("messaging.destination.name", t.exchange),
				attribute.String("messaging.operation.type", "send"))
		case "nats", "tls":
			attrs = append(attrs, attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", t.subject),
				attribute.String("messaging.operation.type", "send"))
		}
	}
	span.SetAttributes(attrs...)
	att, retryAfter := d.post(ctx, r, a, now)
	if att.StatusCode != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", att.StatusCode))
	}
	if att.Error != "" {
		span.SetStatus(codes.Error, att.Error)
	}
	return att, retryAfter
}

// injectTrace writes the trace context of ctx into h.
func injectTrace(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
	}
}
