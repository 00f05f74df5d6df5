package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Keys of the trace attributes that LogHandler adds.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// LogHandler wraps a slog.Handler: every record logged with a context that
// carries a valid OpenTelemetry span context (the *Context logging methods,
// or Log/LogAttrs with a ctx) gets trace_id and span_id attributes, so that
// a log line leads to its trace. They sit at the top level of the record,
// also under a logger's WithGroup.
type LogHandler struct {
	// base is the wrapped handler before the first group was opened; ops
	// replays what came after it (groups, and attributes within them) when
	// the trace ids must go in front of them. Without groups, ops is empty
	// and next is base.
	base slog.Handler
	ops  []groupOp
	next slog.Handler
}

type groupOp struct {
	group string // a WithGroup, or
	attrs []slog.Attr
}

// NewLogHandler wraps h.
func NewLogHandler(h slog.Handler) *LogHandler {
	if lh, ok := h.(*LogHandler); ok {
		return lh
	}
	return &LogHandler{base: h, next: h}
}

// Enabled reports whether the wrapped handler handles records at level.
func (h *LogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds the trace ids of ctx's span, if any, and passes r on.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.next.Handle(ctx, r)
	}
	ids := [2]slog.Attr{
		slog.String(TraceIDKey, sc.TraceID().String()),
		slog.String(SpanIDKey, sc.SpanID().String()),
	}
	if len(h.ops) == 0 {
		r.AddAttrs(ids[:]...)
		return h.next.Handle(ctx, r)
	}
	// Under a group: the ids go on the handler before the group (this
	// costs the rebuild of the chain, only for loggers with groups).
	next := h.base.WithAttrs(ids[:])
	for _, op := range h.ops {
		if op.attrs != nil {
			next = next.WithAttrs(op.attrs)
		} else {
			next = next.WithGroup(op.group)
		}
	}
	return next.Handle(ctx, r)
}

// WithAttrs returns a handler whose records carry attrs too.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	if len(h.ops) == 0 {
		next := h.next.WithAttrs(attrs)
		return &LogHandler{base: next, next: next}
	}
	return &LogHandler{base: h.base, ops: appendOp(h.ops, groupOp{attrs: attrs}), next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a handler that puts the records' attributes in a group.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &LogHandler{base: h.base, ops: appendOp(h.ops, groupOp{group: name}), next: h.next.WithGroup(name)}
}

// appendOp appends to a copy: handlers derived from the same parent must
// not share the tail of its slice.
func appendOp(ops []groupOp, op groupOp) []groupOp {
	out := make([]groupOp, len(ops), len(ops)+1)
	copy(out, ops)
	return append(out, op)
}
