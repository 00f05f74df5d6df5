package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/asyncgate/asyncgate/internal/telemetry"
)

var (
	traceID = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID  = trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
)

func spanCtx() context.Context {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

// logLines logs with f on a JSON logger wrapped by LogHandler and returns
// the decoded lines.
func logLines(t *testing.T, f func(*slog.Logger)) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	f(slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	lines := logLines(t, func(l *slog.Logger) {
		l.InfoContext(spanCtx(), "with span", "order_id", "o1")
		l.InfoContext(context.Background(), "without span")
		l.Info("no context")
		l.LogAttrs(spanCtx(), slog.LevelDebug, "attrs", slog.String("k", "v"))
	})
	if len(lines) != 4 {
		t.Fatalf("got %d lines", len(lines))
	}
	for _, i := range []int{0, 3} {
		if lines[i][telemetry.TraceIDKey] != traceID.String() || lines[i][telemetry.SpanIDKey] != spanID.String() {
			t.Errorf("line %d: %v: want trace_id %s and span_id %s", i, lines[i], traceID, spanID)
		}
	}
	if lines[0]["order_id"] != "o1" || lines[3]["k"] != "v" {
		t.Errorf("attributes lost: %v %v", lines[0], lines[3])
	}
	for _, i := range []int{1, 2} {
		if _, ok := lines[i][telemetry.TraceIDKey]; ok {
			t.Errorf("line %d has a trace id without a span: %v", i, lines[i])
		}
	}
}

func TestLogHandlerKeepsAttrsAndGroups(t *testing.T) {
	lines := logLines(t, func(l *slog.Logger) {
		base := l.With("tenant", "acme")
		g := base.WithGroup("req").With("route", "/v1/orders")
		g.InfoContext(spanCtx(), "grouped", "status", 202)
		base.InfoContext(spanCtx(), "sibling", "x", 1) // g must not have changed base
		g.WithGroup("inner").InfoContext(context.Background(), "nested, no span", "y", 2)
	})
	if len(lines) != 3 {
		t.Fatalf("got %d lines", len(lines))
	}
	g := lines[0]
	req, _ := g["req"].(map[string]any)
	if g["tenant"] != "acme" || req["route"] != "/v1/orders" || req["status"] != float64(202) {
		t.Errorf("grouped line lost attributes: %v", g)
	}
	if g[telemetry.TraceIDKey] != traceID.String() || g[telemetry.SpanIDKey] != spanID.String() {
		t.Errorf("trace ids are not at the top level under a group: %v", g)
	}
	if _, ok := req[telemetry.TraceIDKey]; ok {
		t.Errorf("trace id inside the group: %v", g)
	}
	s := lines[1]
	if s["tenant"] != "acme" || s["x"] != float64(1) || s["req"] != nil || s[telemetry.TraceIDKey] != traceID.String() {
		t.Errorf("sibling line: %v", s)
	}
	n := lines[2]
	inner, _ := n["req"].(map[string]any)["inner"].(map[string]any)
	if inner["y"] != float64(2) || n[telemetry.TraceIDKey] != nil {
		t.Errorf("nested line: %v", n)
	}
}

func TestLogHandlerEnabledFollowsWrapped(t *testing.T) {
	h := telemetry.NewLogHandler(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("Enabled does not follow the wrapped handler's level")
	}
	if telemetry.NewLogHandler(h) != h {
		t.Error("wrapping twice should return the same handler")
	}
}

func BenchmarkLogHandler(b *testing.B) {
	l := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(discard{}, nil))).With("order_id", "o1", "tenant", "acme")
	ctx := spanCtx()
	b.ReportAllocs()
	for b.Loop() {
		l.InfoContext(ctx, "order step done", "status", "validated")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
