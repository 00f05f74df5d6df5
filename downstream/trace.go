package downstream

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing: every attempt of a call is a client span of its own, named
// "<method> <route>" (such as "POST /reservations/{id}/release"), so the
// retries of one call are sibling spans. An attempt the breaker or the
// bulkhead rejected without sending anything is a short span with an
// error. Each request carries the span's trace context (traceparent). The
// package uses the global tracer provider and propagator, no-ops unless the
// process sets them up.

// TracerName is the instrumentation scope of the package's spans.
const TracerName = "github.com/asyncgate/asyncgate/downstream"

// tracedAttempt makes attempt n of req in its own client span.
func (c *client) tracedAttempt(ctx, budget context.Context, req request, body []byte, handle func(*http.Response) error, n int) error {
	route := routeTemplate(req.path)
	ctx, span := otel.Tracer(TracerName).Start(ctx, req.method+" "+route, trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	if !span.IsRecording() {
		return c.attempt(ctx, trace.ContextWithSpan(budget, span), req, body, handle)
	}
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", req.method),
		attribute.String("url.full", safeURL(c.base)+req.path),
		attribute.String("url.template", route),
		attribute.String("peer.service", c.name),
		attribute.Int("asyncgate.attempt", n),
	}
	if n > 1 {
		attrs = append(attrs, attribute.Int("http.request.resend_count", n-1))
	}
	// The order and tenant the call is for, so that a search of the
	// traces by order id finds the call.
	if req.order != "" {
		attrs = append(attrs, attribute.String("asyncgate.order.id", req.order))
	}
	if req.tenant != "" {
		attrs = append(attrs, attribute.String("asyncgate.tenant", req.tenant))
	}
	span.SetAttributes(attrs...)
	status := 0
	err := c.attempt(ctx, trace.ContextWithSpan(budget, span), req, body, func(resp *http.Response) error {
		status = resp.StatusCode
		return handle(resp)
	})
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	switch {
	case err == nil:
	case status == 0 && (errors.Is(err, ErrBreakerOpen) || errors.Is(err, ErrBulkheadFull)):
		// Nothing went out.
		span.SetAttributes(attribute.Bool("asyncgate.rejected", true))
		span.SetStatus(codes.Error, err.Error())
	case goodAnswer(err):
		// A business answer (insufficient funds, refused): the call worked.
		span.SetAttributes(attribute.String("asyncgate.answer", err.Error()))
	default:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// injectTrace writes the trace context of ctx into h.
func injectTrace(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// routeTemplate replaces the ids in a downstream path by "{id}":
// "/reservations/r-1/release" is "/reservations/{id}/release". Span names
// stay few however many orders there are.
func routeTemplate(path string) string {
	if !strings.Contains(strings.TrimPrefix(path, "/"), "/") {
		return path // "/reservations", "/executions"
	}
	segs := strings.Split(path, "/")
	for i, s := range segs {
		switch s {
		case "", "portfolios", "reservations", "release", "executions":
		default:
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// safeURL is a base URL without user info, query or fragment: nothing a
// span should carry.
func safeURL(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return strings.TrimRight(u.String(), "/")
}
