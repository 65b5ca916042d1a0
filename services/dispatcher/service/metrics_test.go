package service_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/service"
)

// scrape returns the samples of GET /metrics, keyed by series as the text
// format writes it (name{labels}).
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics: bad sample line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples
}

// TestMetrics_DispatcherCountsMessagesByActionAndOutcome: /metrics of a
// running dispatcher counts real messages from NATS by action and outcome
// (ok, refused, error, panic), with zero series from the start, times them in the
// handler duration histogram, and counts undecodable envelopes.
func TestMetrics_DispatcherCountsMessagesByActionAndOutcome(t *testing.T) {
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
			d.Handle("test/refuse", func(context.Context, *dispatcher.Message) error {
				return dispatcher.NewError(404, "no such item")
			}),
		)
	}
	r := run(t, testConfig(srv.ClientURL()), service.WithHandlers(failing))
	waitStatus(t, r.base+"/readyz", http.StatusOK)

	const (
		messages = "wsgate_dispatcher_messages_total"
		duration = "wsgate_dispatcher_handler_duration_seconds"
	)
	series := func(name, action, more string) string {
		return fmt.Sprintf(`%s{action=%q%s}`, name, action, more)
	}
	before := scrape(t, r.base)
	for _, action := range []string{"echo", "test/fail", "test/panic", "test/refuse"} {
		for _, outcome := range []string{"ok", "refused", "error", "panic"} {
			s := series(messages, action, `,outcome="`+outcome+`"`)
			if v, ok := before[s]; !ok || v != 0 {
				t.Errorf("before any message: %s = %v (present %v), want 0", s, v, ok)
			}
		}
		if s := series(duration+"_count", action, ""); before[s] != 0 {
			t.Errorf("before any message: %s = %v, want none", s, before[s])
		}
	}
	if v, ok := before["wsgate_dispatcher_decode_errors_total"]; !ok || v != 0 {
		t.Errorf("before any message: decode errors %v (present %v), want 0", v, ok)
	}
	if _, ok := before["wsgate_dispatcher_handlers_in_flight"]; !ok {
		t.Error("no wsgate_dispatcher_handlers_in_flight gauge")
	}

	// Each message gets its reply (the echo, or the [500, ...] error reply)
	// before the next is sent; then one envelope that is not one.
	for _, action := range []string{"echo", "echo", "test/fail", "test/panic", "test/refuse"} {
		natstest.Publish(t, edge, "", natstest.Envelope(action, "x"))
		want := action
		if action != "echo" {
			want = action + ":error"
		}
		if m := capture.Next(t); m.Outbound.Action != want {
			t.Fatalf("reply to %s: %s, want %s", action, m.Data, want)
		}
	}
	natstest.PublishRaw(t, edge, "ws.in.echo", []byte("not json"))

	want := map[string]float64{
		series(messages, "echo", `,outcome="ok"`):              2,
		series(messages, "echo", `,outcome="error"`):           0,
		series(messages, "test/fail", `,outcome="error"`):      1,
		series(messages, "test/fail", `,outcome="ok"`):         0,
		series(messages, "test/panic", `,outcome="panic"`):     1,
		series(messages, "test/panic", `,outcome="error"`):     0,
		series(messages, "test/refuse", `,outcome="refused"`):  1,
		series(messages, "test/refuse", `,outcome="error"`):    0,
		series(duration+"_count", "echo", ""):                  2,
		series(duration+"_bucket", "echo", `,le="+Inf"`):       2,
		series(duration+"_count", "test/fail", ""):             1,
		series(duration+"_bucket", "test/panic", `,le="+Inf"`): 1,
		"wsgate_dispatcher_decode_errors_total":                1,
		"wsgate_dispatcher_handlers_in_flight":                 0,
	}
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		got := scrape(t, r.base)
		for s, v := range want {
			if got[s] != v {
				return fmt.Errorf("%s = %v, want %v", s, got[s], v)
			}
		}
		if s := got[series(duration+"_sum", "echo", "")]; s <= 0 {
			return fmt.Errorf("echo's duration sum is %v, want > 0", s)
		}
		return nil
	})
}
