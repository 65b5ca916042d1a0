package service_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/service"
)

// TestMetrics_ReliablePrefixActionsShareThePrefixSeries: reliable actions
// handled under a prefix are counted in the prefix's "<prefix>*" series,
// not one per action clients choose, and each action found under the
// prefix counts as created. Mutation that fails it: the Reliable hook
// labelled with the action itself.
func TestMetrics_ReliablePrefixActionsShareThePrefixSeries(t *testing.T) {
	srv := natstest.RunJetStream(t)
	edge := natstest.Connect(t, srv)
	natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	cfg := testConfig(srv.ClientURL())
	cfg.Inbound, cfg.InboundStream, cfg.MaxDeliver, cfg.RetryBackoff, cfg.AckWait = "memory", "WS_INBOUND", 5, "1s", 30*time.Second
	cfg.PrefixConsumersMax = 1000
	r := run(t, cfg, service.WithHandlers(func(d *dispatcher.Dispatcher) error {
		return d.HandlePrefix("shop/", func(context.Context, *dispatcher.Message) error { return nil })
	}))
	waitStatus(t, r.base+"/readyz", http.StatusOK)
	for i, action := range []string{"shop/pay", "shop/cart"} {
		natstest.PublishReliable(t, edge, "ws", natstest.Envelope(action, i), fmt.Sprintf("u1.m%d", i))
	}
	want := map[string]float64{
		`wsgate_dispatcher_reliable_total{action="shop/*",event="acked"}`:                   2,
		`wsgate_dispatcher_reliable_prefix_consumers_total{event="created",prefix="shop/"}`: 2,
		`wsgate_dispatcher_reliable_pending{action="shop/*"}`:                               0,
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		got := scrape(t, r.base)
		for s, v := range want {
			if g, ok := got[s]; !ok || g != v {
				return fmt.Errorf("%s = %v (present %v), want %v", s, g, ok, v)
			}
		}
		for s := range got {
			if strings.Contains(s, `action="shop/pay"`) || strings.Contains(s, `action="shop/cart"`) {
				return fmt.Errorf("series of its own for a prefix action: %s", s)
			}
		}
		return nil
	})
}
