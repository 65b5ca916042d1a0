package devstack_test

import (
	"context"
	"net"
	"net/http"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/wsgate/wsgate/services/dispatcher/service"
	"github.com/wsgate/wsgate/services/edge"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// TestTracing_OneTraceAcrossEdgeAndDispatcher: one hello round trip is one
// trace, with the edge's receive, the dispatcher's handling and the edge's
// delivery of the reply, linked through W3C trace context in NATS headers.
func TestTracing_OneTraceAcrossEdgeAndDispatcher(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
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
	defer tel.Shutdown(context.Background())
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
		done <- service.Run(ctx, dispCfg, nil, service.WithConn(nc), service.WithTracer(tp.Tracer("dispatcher")),
			service.OnListen(func(a net.Addr) { up <- a }))
	}()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}()
	<-up
	edgetest.Eventually(t, "dispatcher subscribed", func() bool {
		sz, err := ns.Subsz(&natsserver.SubszOptions{Subscriptions: true, Test: "ws.in.hello"})
		return err == nil && sz.Total == 1
	})

	c := edgetest.Dial(t, "ws://"+srv.Addr().String()+"/ws", http.Header(bearer(token(t, "alice"))))
	c.ExpectOK()
	c.Send("hello", "Hello, world!")
	c.Expect("hello")

	byName := map[string]tracetest.SpanStub{}
	edgetest.Eventually(t, "the round trip's spans", func() bool {
		for _, s := range spans.GetSpans() {
			byName[s.Name] = s
		}
		_, a := byName["ws receive hello"]
		_, b := byName["dispatcher handle hello"]
		_, d := byName["ws deliver hello"]
		return a && b && d
	})
	receive, handle, deliver := byName["ws receive hello"], byName["dispatcher handle hello"], byName["ws deliver hello"]
	if id := receive.SpanContext.TraceID(); handle.SpanContext.TraceID() != id || deliver.SpanContext.TraceID() != id {
		t.Fatalf("spans are in different traces: %s %s %s", id, handle.SpanContext.TraceID(), deliver.SpanContext.TraceID())
	}
	if handle.Parent.SpanID() != receive.SpanContext.SpanID() || deliver.Parent.SpanID() != handle.SpanContext.SpanID() {
		t.Fatal("spans are not chained receive → handle → deliver")
	}
}
