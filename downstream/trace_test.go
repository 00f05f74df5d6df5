package downstream

// TestTraceAttemptSpans installs a global tracer provider: it does not run
// in parallel (the package's parallel tests start after it ended).

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/asyncgate/asyncgate/internal/oteltest"
	"github.com/asyncgate/asyncgate/internal/sim"
)

func TestRouteTemplate(t *testing.T) {
	for path, want := range map[string]string{
		"/executions":                   "/executions",
		"/reservations":                 "/reservations",
		"/portfolios/acc%2F1":           "/portfolios/{id}",
		"/reservations/r-1/release":     "/reservations/{id}/release",
		"/reservations/release/release": "/reservations/release/release", // an id that looks like a word stays
	} {
		if got := routeTemplate(path); got != want {
			t.Errorf("routeTemplate(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestSafeURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:pass@portfolio:8080/base/?token=s3cret#frag": "http://portfolio:8080/base",
		"https://execution.internal":                              "https://execution.internal",
	} {
		if got := safeURL(in); got != want || strings.Contains(got, "s3cret") || strings.Contains(got, "pass") {
			t.Errorf("safeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTraceAttemptSpans: each HTTP attempt of a call is a client span whose
// traceparent the downstream receives; an attempt the open breaker rejects
// is a short span with an error, and nothing is sent.
func TestTraceAttemptSpans(t *testing.T) {
	exp := oteltest.Install(t)

	var mu sync.Mutex
	var got []string // traceparents, in order
	tb := setup(t, func(s *sim.Sim) http.Handler {
		h := afterRequests(2, s, s.ClearFaults)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			got = append(got, r.Header.Get("traceparent"))
			mu.Unlock()
			h.ServeHTTP(w, r)
		})
	}, nil)
	tb.setFaults(t, sim.Execution, sim.Faults{ErrorRate: 1})

	ctx, parent := otel.Tracer("test").Start(context.Background(), "saga.execute")
	if _, err := tb.execution.Execute(ctx, order("e1", "AAPL")); err != nil {
		t.Fatal(err)
	}
	parent.End()
	spans := exp.GetSpans()
	if len(spans) != 4 { // three attempts and the parent
		t.Fatalf("%d spans, want 4", len(spans))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("the simulator got %d requests, want 3", len(got))
	}
	for i, s := range spans[:3] {
		if s.Name != "POST /executions" || s.Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("attempt %d: span %q under %v", i+1, s.Name, s.Parent.SpanID())
		}
		want := "00-" + parent.SpanContext().TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
		if got[i] != want {
			t.Fatalf("attempt %d: traceparent %q, want %q", i+1, got[i], want)
		}
		failed := i < 2
		if (s.Status.Code == codes.Error) != failed || attrOf(s, "asyncgate.attempt") != string(rune('1'+i)) ||
			attrOf(s, "peer.service") != "execution" || attrOf(s, "http.response.status_code") == "" {
			t.Fatalf("attempt %d: status %v, attributes %v", i+1, s.Status, s.Attributes)
		}
	}

	exp.Reset()
	tb.execution.c.breaker.ForceOpenUntil(time.Now().Add(time.Minute))
	if _, err := tb.execution.Execute(context.Background(), order("e2", "AAPL")); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("err = %v, want breaker open", err)
	}
	spans = exp.GetSpans()
	if len(spans) != 1 || spans[0].Status.Code != codes.Error || attrOf(spans[0], "asyncgate.rejected") != "true" ||
		attrOf(spans[0], "http.response.status_code") != "" {
		t.Fatalf("rejected call: %d spans %v", len(spans), spans)
	}
	if len(got) != 3 {
		t.Fatal("the open breaker let a request through")
	}
}

func attrOf(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}
