package webhooks_test

// TestDeliverTraceSpans installs a global tracer provider: it does not run
// in parallel (the package's parallel tests start after it ended).

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncgate/asyncgate/internal/oteltest"
)

// TestDeliverTraceSpans: each delivery attempt is a client span under the
// caller's, the receiver gets its traceparent, and no span holds the
// secret, the signature, the body or the URL's path and query.
func TestDeliverTraceSpans(t *testing.T) {
	exp := oteltest.Install(t)

	b := setup(t)
	rcv := newReceiver(t)
	rcv.answer(status(http.StatusInternalServerError))
	ep, secret := b.endpoint(t, "acme", rcv.URL+"/in/tok-path-secret?token=query-secret")
	_, refs := b.publish(t, "acme", "")
	r := one(t, refs)

	ctx, parent := otel.Tracer("test").Start(context.Background(), "asynq.process webhook:deliver")
	attempt := func() (tracetest.SpanStub, request) {
		t.Helper()
		exp.Reset()
		if _, err := b.deliverer.Deliver(ctx, r); err != nil {
			t.Fatal(err)
		}
		spans := exp.GetSpans()
		if len(spans) != 1 {
			t.Fatalf("%d spans, want 1", len(spans))
		}
		return spans[0], rcv.next(t)
	}
	failed, req1 := attempt()
	b.clock.advance(time.Minute) // the test schedule's first wait
	rcv.answer(nil)
	ok, req2 := attempt()
	parent.End()

	for i, c := range []struct {
		span   tracetest.SpanStub
		req    request
		status string
		failed bool
	}{{failed, req1, "500", true}, {ok, req2, "200", false}} {
		s := c.span
		if s.Name != "webhook.deliver" || s.SpanKind != trace.SpanKindClient || s.Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("attempt %d: span %q kind %v parent %v", i+1, s.Name, s.SpanKind, s.Parent.SpanID())
		}
		want := "00-" + parent.SpanContext().TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
		if got := c.req.header.Get("traceparent"); got != want {
			t.Fatalf("attempt %d: receiver's traceparent %q, want %q", i+1, got, want)
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if attrs["http.response.status_code"] != c.status || attrs["asyncgate.attempt"] != string(rune('1'+i)) ||
			attrs["webhook.endpoint_id"] != ep.ID || attrs["webhook.delivery_id"] != r.DeliveryID || attrs["server.address"] != "127.0.0.1" ||
			(s.Status.Code == codes.Error) != c.failed {
			t.Fatalf("attempt %d: status %v, attributes %v", i+1, s.Status, attrs)
		}
		for k, v := range attrs {
			for what, secret := range map[string]string{
				"secret": secret.String(), "signature": c.req.header.Get("webhook-signature"), "body": string(c.req.body),
				"path": "tok-path-secret", "query": "query-secret",
			} {
				if strings.Contains(v, secret) {
					t.Fatalf("attribute %s carries the %s", k, what)
				}
			}
		}
	}
}
