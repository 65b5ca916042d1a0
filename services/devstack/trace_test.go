package devstack_test

import (
	"context"
	"net"
	"net/http"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/wsgate/wsgate/services/dispatcher/service"
	"github.com/wsgate/wsgate/services/edge"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// TestTracing_OneTraceAcrossEdgeAndDispatcher: one round trip is one trace,
// with the edge's receive, the dispatcher's handling and the edge's delivery
// of the answer, linked through W3C trace context in NATS headers: for a
// message sent with the Sender (hello) and for a Reply (echo).
func TestTracing_OneTraceAcrossEdgeAndDispatcher(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	c := startTracedStack(t, tp, tp.Tracer("dispatcher"))
	c.Send("hello", "Hello, world!")
	c.Expect("hello")
	c.Send("echo", "ping", "r1")
	c.Expect("echo")
	for _, action := range []string{"hello", "echo"} {
		s := roundTripSpans(t, spans, action, true)
		receive, handle, deliver := s["ws receive "+action], s["dispatcher handle "+action], s["ws deliver "+action]
		if id := receive.SpanContext.TraceID(); handle.SpanContext.TraceID() != id || deliver.SpanContext.TraceID() != id {
			t.Fatalf("%s: spans are in different traces: %s %s %s", action, id, handle.SpanContext.TraceID(), deliver.SpanContext.TraceID())
		}
		if handle.Parent.SpanID() != receive.SpanContext.SpanID() || deliver.Parent.SpanID() != handle.SpanContext.SpanID() {
			t.Fatalf("%s: spans are not chained receive → handle → deliver", action)
		}
	}
}

// TestTracing_UntracedDispatcherKeepsTheEdgesTrace: a dispatcher without
// tracing passes the edge's trace context on, so the reply's delivery is a
// child of the client message's receive.
func TestTracing_UntracedDispatcherKeepsTheEdgesTrace(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	c := startTracedStack(t, tp, tracenoop.NewTracerProvider().Tracer(""))
	c.Send("echo", "ping", "r1")
	c.Expect("echo")
	s := roundTripSpans(t, spans, "echo", false)
	receive, deliver := s["ws receive echo"], s["ws deliver echo"]
	if deliver.SpanContext.TraceID() != receive.SpanContext.TraceID() || deliver.Parent.SpanID() != receive.SpanContext.SpanID() {
		t.Fatalf("the reply's delivery (trace %s, parent %s) is not a child of the receive (trace %s, span %s)",
			deliver.SpanContext.TraceID(), deliver.Parent.SpanID(), receive.SpanContext.TraceID(), receive.SpanContext.SpanID())
	}
}

// roundTripSpans waits for the spans of action's round trip (the dispatcher's
// too when withHandle) and returns them by name.
func roundTripSpans(t *testing.T, spans *tracetest.InMemoryExporter, action string, withHandle bool) map[string]tracetest.SpanStub {
	t.Helper()
	byName := map[string]tracetest.SpanStub{}
	edgetest.Eventually(t, action+"'s spans", func() bool {
		for _, s := range spans.GetSpans() {
			byName[s.Name] = s
		}
		_, a := byName["ws receive "+action]
		_, b := byName["dispatcher handle "+action]
		_, d := byName["ws deliver "+action]
		return a && (b || !withHandle) && d
	})
	return byName
}

// startTracedStack runs NATS, an edge traced by tp and a dispatcher traced
// by dispatcherTracer, and returns an authenticated client of the edge.
func startTracedStack(t *testing.T, tp trace.TracerProvider, dispatcherTracer trace.Tracer) *edgetest.Client {
	t.Helper()
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())

	t.Setenv("EDGE_JWT_SECRET", secret)
	t.Setenv("EDGE_ADDR", "127.0.0.1:0")
	t.Setenv("EDGE_DRAIN_TIMEOUT", "100ms")
	t.Setenv("DISPATCHER_ADDR", "127.0.0.1:0")
	t.Setenv("LOG_LEVEL", "error")
	edgeCfg, err := edge.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	dispCfg, err := service.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tel, err := telemetry.Setup(ctx, telemetry.OTLP{}, "edge", telemetry.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	srv, err := edge.New(edgeCfg, nil, edge.WithNATS(nc), edge.WithTelemetry(tel))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	up := make(chan net.Addr, 1)
	go func() { done <- srv.Serve(ctx) }()
	go func() {
		done <- service.Run(ctx, dispCfg, nil, service.WithConn(nc), service.WithTracer(dispatcherTracer),
			service.OnListen(func(a net.Addr) { up <- a }))
	}()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
	<-up
	edgetest.Eventually(t, "dispatcher subscribed", func() bool {
		sz, err := ns.Subsz(&natsserver.SubszOptions{Subscriptions: true, Test: "ws.in.hello"})
		return err == nil && sz.Total == 1
	})

	c := edgetest.Dial(t, "ws://"+srv.Addr().String()+"/ws", http.Header(bearer(token(t, "alice"))))
	c.ExpectOK()
	return c
}
