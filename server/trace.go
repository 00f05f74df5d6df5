package server

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/contrib/instrumentation/github.com/gin-gonic/gin/otelgin"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// tracing is the middleware that makes a server span of each request
// (otelgin), named by its route template ("POST /v1/orders/:id/cancel", a
// route-less request only by its method), continuing a caller's
// traceparent, and stamps the tenant and the order id on it. The health,
// readiness and metrics routes are not traced. The request's context
// carries the span: the enqueue writes it into the order task's headers,
// so the worker continues the same trace.
func (s *Server) tracing() []gin.HandlerFunc {
	tp := s.cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return []gin.HandlerFunc{
		otelgin.Middleware("", otelgin.WithTracerProvider(tp), otelgin.WithFilter(traced)),
		traceAttributes,
	}
}

// traced says whether a request gets a span: not the probes and scrapes.
func traced(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		return false
	}
	return true
}

// traceAttributes adds the tenant and the order id to the request's span
// once the handler ran (attributes of a trace, never metric labels).
func traceAttributes(c *gin.Context) {
	span := trace.SpanFromContext(c.Request.Context())
	c.Next()
	if !span.IsRecording() {
		return
	}
	// One call: each grows the span's attribute slice.
	attrs := make([]attribute.KeyValue, 0, 2)
	if tenant := c.GetString(ctxTenant); tenant != "" {
		attrs = append(attrs, attribute.String("asyncgate.tenant", tenant))
	}
	if id := orderID(c); id != "" {
		attrs = append(attrs, attribute.String("asyncgate.order.id", id))
	}
	if len(attrs) > 0 {
		span.SetAttributes(attrs...)
	}
}

// orderID is the order a request is about: the :id of an order route, or
// the order a POST /v1/orders accepted (its Location).
func orderID(c *gin.Context) string {
	route := c.FullPath()
	if !strings.HasPrefix(route, "/v1/orders") {
		return ""
	}
	if id := c.Param("id"); id != "" {
		return id
	}
	if route == "/v1/orders" && c.Request.Method == http.MethodPost {
		return strings.TrimPrefix(c.Writer.Header().Get("Location"), "/v1/orders/")
	}
	return ""
}
