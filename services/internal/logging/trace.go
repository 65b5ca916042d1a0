package logging

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// traceHandler adds trace_id and span_id to the records logged with a
// context that carries a valid span context.
type traceHandler struct {
	next slog.Handler
}

var _ slog.Handler = traceHandler{}

// WithTrace wraps h so that a record logged with a context carrying a valid
// OpenTelemetry span context (logger.InfoContext(ctx, ...)) gets its ids as
// the trace_id and span_id attributes, which tie the line to its trace.
// Inside a group (Logger.WithGroup) they are in the group, like any
// attribute of the record.
func WithTrace(h slog.Handler) slog.Handler { return traceHandler{next: h} }

// Enabled reports whether the wrapped handler handles level.
func (h traceHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds the ids of ctx's span context, if valid, to r and hands it on.
func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone() // the caller's record may share its attributes' storage
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns the wrapped handler with attrs, still adding the ids.
func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns the wrapped handler with the group, still adding the ids.
func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{next: h.next.WithGroup(name)}
}
