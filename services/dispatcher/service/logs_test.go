package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/service"
	"github.com/wsgate/wsgate/services/internal/logging"
)

// syncBuffer is a bytes.Buffer safe for the service's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLine is the part of a JSON log line the test looks at.
type logLine struct {
	Msg     string `json:"msg"`
	Action  string `json:"action"`
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
}

// findLine returns the first JSON line of logs with msg and action.
func findLine(logs, msg, action string) (logLine, error) {
	for line := range strings.Lines(logs) {
		var l logLine
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg && l.Action == action {
			return l, nil
		}
	}
	return logLine{}, fmt.Errorf("no %q line for action %s in:\n%s", msg, action, logs)
}

// TestLogs_HandlerFailuresCarryTheMessagesTraceID: when a handler fails or
// panics, the dispatcher's JSON log line names the action and carries the
// trace_id of the message's trace (the edge's, from traceparent) and the
// span_id of the handler's span, so the line and the trace find each other.
func TestLogs_HandlerFailuresCarryTheMessagesTraceID(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	var logs syncBuffer
	log, err := logging.New(logging.Settings{Level: "info", Format: "json"}, &logs)
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.RunServer(t)
	edge := natstest.Connect(t, srv)
	capture := natstest.Subscribe(t, edge, "")
	failing := func(d *dispatcher.Dispatcher) error {
		return errors.Join(
			d.Handle("test/fail", func(context.Context, *dispatcher.Message) error {
				return errors.New("downstream is down")
			}),
			d.Handle("test/panic", func(context.Context, *dispatcher.Message) error {
				panic("handler bug")
			}),
		)
	}
	r := runLogged(t, testConfig(srv.ClientURL()), log,
		service.WithTracer(tp.Tracer("dispatcher")), service.WithHandlers(failing))
	waitStatus(t, r.base+"/readyz", http.StatusOK)

	tests := []struct {
		action, msg, traceID string
	}{
		{"test/fail", "handler failed", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"test/panic", "handler panicked", "0af7651916cd43dd8448eb211c80319c"},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			hdr := nats.Header{wire.HeaderTraceparent: {"00-" + tt.traceID + "-b7ad6b7169203331-01"}}
			natstest.PublishWithHeader(t, edge, "", natstest.Envelope(tt.action, nil), hdr)
			if m := capture.Next(t); m.Outbound.Action != tt.action+":error" {
				t.Fatalf("reply %s, want %s:error", m.Data, tt.action)
			}
			var span sdktrace.ReadOnlySpan
			natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
				for _, s := range spans.GetSpans().Snapshots() {
					if s.Name() == "dispatcher handle "+tt.action {
						span = s
						return nil
					}
				}
				return fmt.Errorf("no span for %s", tt.action)
			})
			line, err := findLine(logs.String(), tt.msg, tt.action)
			if err != nil {
				t.Fatal(err)
			}
			sc := span.SpanContext()
			if sc.TraceID().String() != tt.traceID {
				t.Fatalf("span trace %s, want the edge's %s", sc.TraceID(), tt.traceID)
			}
			if line.TraceID != sc.TraceID().String() || line.SpanID != sc.SpanID().String() {
				t.Fatalf("log line has trace_id %q span_id %q, want the span's %s %s",
					line.TraceID, line.SpanID, sc.TraceID(), sc.SpanID())
			}
		})
	}
}
