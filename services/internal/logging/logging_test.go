package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/internal/logging"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestNew_AddsTraceAndSpanIDsFromTheContext: the services' logger gives a
// line logged with a context that carries a span that span's trace_id and
// span_id, also through With, and gives none to a line without one.
func TestNew_AddsTraceAndSpanIDsFromTheContext(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	withSpan := trace.ContextWithSpanContext(context.Background(), sc)
	tests := []struct {
		name        string
		log         func(*slog.Logger)
		trace, span string
	}{
		{"with a span", func(l *slog.Logger) { l.ErrorContext(withSpan, "handler failed", "action", "a") },
			"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"},
		{"through With", func(l *slog.Logger) { l.With("component", "x").InfoContext(withSpan, "m") },
			"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"},
		{"without a span", func(l *slog.Logger) { l.InfoContext(context.Background(), "m") }, "", ""},
		{"without a context", func(l *slog.Logger) { l.Info("m") }, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			log, err := logging.New(logging.Settings{Level: "info", Format: "json"}, &out)
			if err != nil {
				t.Fatal(err)
			}
			tt.log(log)
			var line struct {
				TraceID *string `json:"trace_id"`
				SpanID  *string `json:"span_id"`
			}
			if err := json.Unmarshal(out.Bytes(), &line); err != nil {
				t.Fatalf("%v: %s", err, out.Bytes())
			}
			switch {
			case tt.trace == "" && (line.TraceID != nil || line.SpanID != nil):
				t.Fatalf("ids without a span: %s", out.Bytes())
			case tt.trace != "" && (line.TraceID == nil || *line.TraceID != tt.trace || line.SpanID == nil || *line.SpanID != tt.span):
				t.Fatalf("got %s, want trace_id %s and span_id %s", out.Bytes(), tt.trace, tt.span)
			}
		})
	}
}

// TestNew_TextFormatAddsTheIDsToo: LOG_FORMAT=text lines carry them as well.
func TestNew_TextFormatAddsTheIDsToo(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}})
	var out bytes.Buffer
	log, err := logging.New(logging.Settings{Level: "info", Format: "text"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "m")
	want := "trace_id=" + sc.TraceID().String() + " span_id=" + sc.SpanID().String()
	if !bytes.Contains(out.Bytes(), []byte(want)) {
		t.Fatalf("got %q, want it to contain %q", out.String(), want)
	}
}

// TestRedactURL_MasksUserInformationOnly: passwords and tokens in URLs never
// reach a log line; everything else is kept.
func TestRedactURL_MasksUserInformationOnly(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"user and password", "nats://alice:s3cret@nats:4222", "nats://[redacted]@nats:4222"},
		{"token", "tls://t0ken@nats:4222", "tls://[redacted]@nats:4222"},
		{"list", "nats://a:s3cret@n1:4222,nats://n2:4222", "nats://[redacted]@n1:4222,nats://n2:4222"},
		{"unescaped @ in password", "nats://alice:p@ss@nats:4222", "nats://[redacted]@nats:4222"},
		{"no user information", "https://a.example,https://b.example", "https://a.example,https://b.example"},
		{"not a URL", "ops@example.com", "ops@example.com"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := logging.RedactURL(tt.in); got != tt.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
