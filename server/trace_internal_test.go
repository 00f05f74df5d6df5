package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

const callerTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// spanEngine serves a few routes behind serverSpans and traceAttributes;
// seen receives the span context each handler ran under.
func spanEngine(tp trace.TracerProvider, seen *trace.SpanContext) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.Use(serverSpans(tp.Tracer(TracerName), propagation.TraceContext{}), traceAttributes)
	e.GET("/v1/orders/:id", func(c *gin.Context) {
		*seen = trace.SpanContextFromContext(c.Request.Context())
		c.Set(ctxTenant, "acme")
		c.String(http.StatusOK, "ok")
	})
	e.GET("/boom", func(c *gin.Context) { c.Status(http.StatusServiceUnavailable) })
	e.GET("/healthz", func(c *gin.Context) { c.Status(http.StatusOK) })
	return e
}

func serve(e *gin.Engine, path string) {
	r := httptest.NewRequestWithContext(context.Background(), http.MethodGet, path, nil)
	r.Header.Set("traceparent", callerTraceparent)
	r.Header.Set("User-Agent", "test-agent")
	e.ServeHTTP(httptest.NewRecorder(), r)
}

func spanAttr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestServerSpans: a traced request gets one server span named by its
// route, continuing the caller's traceparent, with the HTTP attributes,
// the tenant and the order id; a 5xx marks it failed; a route-less request
// is named by its method; the probes get none. With a provider that does
// not record, the handler still runs under the caller's trace context.
func TestServerSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	var seen trace.SpanContext
	e := spanEngine(tp, &seen)
	const id = "0190a000-0000-7000-8000-000000000001"
	for _, p := range []string{"/v1/orders/" + id, "/boom", "/nowhere", "/healthz"} {
		serve(e, p)
	}
	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3 (none for /healthz)", len(spans))
	}
	get, boom, none := spans[0], spans[1], spans[2]
	if get.Name != "GET /v1/orders/:id" || get.SpanKind != trace.SpanKindServer || get.Parent.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" ||
		!get.Parent.IsRemote() || seen.SpanID() != get.SpanContext.SpanID() {
		t.Fatalf("span %q kind %v parent %v (handler saw %v)", get.Name, get.SpanKind, get.Parent, seen)
	}
	for key, want := range map[string]string{
		"http.request.method": "GET", "http.route": "/v1/orders/:id", "url.path": "/v1/orders/" + id, "url.scheme": "http",
		"user_agent.original": "test-agent", "network.protocol.version": "1.1", "asyncgate.tenant": "acme", "asyncgate.order.id": id,
		"http.response.status_code": "200",
	} {
		if got := spanAttr(get, key).Emit(); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if get.Status.Code == codes.Error {
		t.Errorf("a 200 marked failed: %v", get.Status)
	}
	if boom.Name != "GET /boom" || boom.Status.Code != codes.Error || spanAttr(boom, "http.response.status_code").AsInt64() != 503 {
		t.Errorf("5xx span %q status %v attributes %v", boom.Name, boom.Status, boom.Attributes)
	}
	if none.Name != "GET" || spanAttr(none, "http.response.status_code").AsInt64() != 404 || spanAttr(none, "http.route").Emit() != "" {
		t.Errorf("route-less span %q attributes %v", none.Name, none.Attributes)
	}

	seen = trace.SpanContext{}
	serve(spanEngine(noop.NewTracerProvider(), &seen), "/v1/orders/"+id)
	if seen.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("without recording, the handler ran under trace %v, want the caller's", seen.TraceID())
	}
}
