package server

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracing is the middleware that makes a server span of each request,
// named by its route template ("POST /v1/orders/:id/cancel", a route-less
// request only by its method), continuing a caller's traceparent, and
// stamps the tenant and the order id on it. The health, readiness and
// metrics routes are not traced. The request's context carries the span:
// the enqueue writes it into the order task's headers, so the worker
// continues the same trace.
//
// The server span is made here, not by otelgin (decision 89): the same
// span, name, kind and HTTP attributes, but the attributes are computed
// only for a span that records, after it started (a sampler no longer sees
// them), and no HTTP metrics are recorded (otelgin's went to the global
// meter provider, which asyncgate never sets: they were dropped).
func (s *Server) tracing() []gin.HandlerFunc {
	tp := s.cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return []gin.HandlerFunc{serverSpans(tp.Tracer(TracerName), otel.GetTextMapPropagator()), traceAttributes}
}

// TracerName is the instrumentation scope of the API's server spans.
const TracerName = "github.com/asyncgate/asyncgate/server"

// serverSpans is the middleware that starts and ends each traced
// request's server span.
func serverSpans(tracer trace.Tracer, prop propagation.TextMapPropagator) gin.HandlerFunc {
	return func(c *gin.Context) {
		r := c.Request
		if !traced(r) {
			c.Next()
			return
		}
		saved := r.Context()
		ctx := prop.Extract(saved, propagation.HeaderCarrier(r.Header))
		route := c.FullPath()
		name := r.Method
		if route != "" {
			name += " " + route
		}
		ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
		c.Request = r.WithContext(ctx)
		defer func() {
			span.End()
			c.Request = c.Request.WithContext(saved)
		}()
		recording := span.IsRecording()
		if recording {
			span.SetAttributes(requestAttrs(c, route)...)
		}
		c.Next()
		if !recording {
			return
		}
		status := c.Writer.Status()
		span.SetAttributes(attribute.Int("http.response.status_code", status),
			attribute.Int("http.response.body.size", max(0, c.Writer.Size())))
		if status >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, "")
		}
		if len(c.Errors) > 0 {
			span.SetStatus(codes.Error, c.Errors.String())
			for _, e := range c.Errors {
				span.RecordError(e.Err)
			}
		}
	}
}

// requestAttrs are a server span's attributes of the request, after
// OpenTelemetry's HTTP semantic conventions.
func requestAttrs(c *gin.Context, route string) []attribute.KeyValue {
	r := c.Request
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs := make([]attribute.KeyValue, 0, 9)
	attrs = append(attrs,
		attribute.String("http.request.method", r.Method),
		attribute.String("url.scheme", scheme),
		attribute.String("url.path", r.URL.Path),
		attribute.String("server.address", hostOnly(r.Host)),
		attribute.String("client.address", c.ClientIP()),
		attribute.String("network.protocol.version", fmt.Sprintf("%d.%d", r.ProtoMajor, r.ProtoMinor)),
	)
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, attribute.String("user_agent.original", ua))
	}
	if route != "" {
		attrs = append(attrs, attribute.String("http.route", route))
	}
	return attrs
}

// hostOnly is host without its port.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
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
