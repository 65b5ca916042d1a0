package edge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestRateLimit_FloodDoesNotDelayOthersRoundTrip: connections flooding
// frames far above EDGE_RATE_LIMIT (each is answered 429, closed 4429,
// and reconnects to flood again) do not delay another connection's round
// trips: Client/ping → Server/pong, answered by the edge, and echo, answered
// through NATS by a responder that replies to the connection like the
// dispatcher's echo handler. The round-trip figures with and without the
// flood are logged; the assertion is a generous bound, so that a loaded
// machine under -race does not flake it.
//
// One connection floods at a time. After 4429 the edge goes on reading and
// discarding the flooder's frames for the close grace (2 s) at full speed,
// so each flooding connection keeps one core busy: with as many flooders
// as cores (2 here, in the same process as the edge) every other
// connection's p50 went from 1-2 ms to 20-70 ms and its p99 to 70-300 ms.
// Raise floodConn once the edge stops paying for frames it drops.
func TestRateLimit_FloodDoesNotDelayOthersRoundTrip(t *testing.T) {
	const (
		rateLimit = 50
		floodConn = 1                      // connections flooding at once (see above)
		measurers = 3                      // connections measuring each kind of round trip
		phase     = 3 * time.Second        // measuring time with and without the flood
		interval  = 30 * time.Millisecond  // between one connection's round trips: below the limit
		p99Bound  = 250 * time.Millisecond // added by the flood to the calm p99
	)
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{
		"EDGE_RATE_LIMIT": strconv.Itoa(rateLimit), "EDGE_RATE_BURST": strconv.Itoa(rateLimit),
	})
	startEcho(t, edgetest.Connect(t, ns.ClientURL()))

	// Each kind of round trip runs on a few connections at once, for enough
	// samples in a short phase: one connection stays below the limit.
	var pingers, echoers []*edgetest.Client
	for i := range measurers {
		pingers = append(pingers, e.dial(t, map[string]any{"sub": fmt.Sprintf("pinger%d", i)}))
		echoers = append(echoers, e.dial(t, map[string]any{"sub": fmt.Sprintf("echoer%d", i)}))
	}
	measure := func() (ping, echo latencies) {
		t.Helper()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range measurers {
			wg.Go(func() {
				l := roundTrips(t, pingers[i], "Client/ping", "Server/pong", phase, interval)
				mu.Lock()
				defer mu.Unlock()
				ping = append(ping, l...)
			})
			wg.Go(func() {
				l := roundTrips(t, echoers[i], "echo", "echo", phase, interval)
				mu.Lock()
				defer mu.Unlock()
				echo = append(echo, l...)
			})
		}
		wg.Wait()
		return ping, echo
	}
	calmPing, calmEcho := measure()

	// The flood: floodConn goroutines each connect, write as fast as the
	// socket takes frames until the edge closes the connection, and
	// reconnect, for as long as the measuring lasts.
	ctx, stop := context.WithCancel(context.Background())
	var flooders sync.WaitGroup
	var floods, frames atomic.Int64
	floodErrs := make([]error, floodConn)
	for i := range floodConn {
		flooders.Go(func() { floodErrs[i] = flood(ctx, e.URL, fmt.Sprintf("flooder%d", i), &floods, &frames) })
	}
	t.Cleanup(func() { stop(); flooders.Wait() })
	edgetest.Eventually(t, "the flood rate limited", func() bool {
		return e.metricSum(t, "wsgate_edge_frames_rate_limited_total") > 0
	})
	floodStart, framesBefore := time.Now(), frames.Load()
	floodPing, floodEcho := measure()
	floodRate := float64(frames.Load()-framesBefore) / time.Since(floodStart).Seconds()
	stop()
	flooders.Wait()
	if err := errors.Join(floodErrs...); err != nil {
		t.Fatal(err)
	}
	closed4429 := e.metric(t, `wsgate_edge_closes_total{code="4429"}`)
	if closed4429 == "" {
		t.Fatal("no flooding connection was closed with 4429")
	}

	t.Logf("flood: %d connections, %.0f frames/s written against a limit of %d/s; %d closed 4429; %v frames dropped by the limiter",
		floods.Load(), floodRate, rateLimit, mustAtoi(t, closed4429), e.metricSum(t, "wsgate_edge_frames_rate_limited_total"))
	t.Logf("ping round trip without flood %v; with flood %v", calmPing, floodPing)
	t.Logf("echo round trip (via NATS) without flood %v; with flood %v", calmEcho, floodEcho)
	// The calm p99 is the machine's own noise (other tests, -race): on a
	// busy 2-core box it alone reached 100 ms.
	for name, l := range map[string][2]latencies{"ping": {calmPing, floodPing}, "echo": {calmEcho, floodEcho}} {
		_, calm, _ := l[0].summary()
		if _, p99, _ := l[1].summary(); p99 > calm+p99Bound {
			t.Errorf("%s round trip p99 under flood %v, want < %v (calm p99 %v + %v)", name, p99, calm+p99Bound, calm, p99Bound)
		}
	}
}

// startEcho answers ws.in.echo like the dispatcher's echo handler: the same
// details and ref, back to the originating connection.
func startEcho(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.Subscribe("ws.in.echo", func(m *nats.Msg) {
		var env struct {
			Details, Ref json.RawMessage
			Connection   string
		}
		if json.Unmarshal(m.Data, &env) != nil {
			return
		}
		out, _ := json.Marshal(map[string]any{"action": "echo", "details": env.Details, "ref": env.Ref})
		_ = nc.Publish("ws.send.conn."+env.Connection, out)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// roundTrips sends action with a fresh ref every interval for d and times
// each answer (reply action, same ref). It runs off the test goroutine:
// failures are reported with Errorf.
func roundTrips(t *testing.T, c *edgetest.Client, action, reply string, d, interval time.Duration) latencies {
	var out latencies
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-ticker.C {
		ref := strconv.Itoa(len(out))
		sent := time.Now()
		frame, _ := json.Marshal([]any{action, "rt", ref})
		if err := c.WS.WriteMessage(websocket.TextMessage, frame); err != nil {
			t.Errorf("%s: write: %v", action, err)
			return out
		}
		f, ok := c.Take()
		if !ok {
			t.Errorf("%s: no answer to round trip %s", action, ref)
			return out
		}
		if f.Action != reply || string(f.Ref) != strconv.Quote(ref) {
			t.Errorf("%s: answer %s, want %s with ref %q", action, f, reply, ref)
			return out
		}
		out = append(out, time.Since(sent))
	}
	return out
}

// flood connects as user and writes frames as fast as the socket takes
// them until the edge ends the connection, then reconnects, until ctx is
// done. It counts connections and frames written. The frames are encoded
// once (masked with a zero key, which leaves the payload as it is) and
// written many per system call, so that the flooder spends little CPU of
// the test process, which the edge shares.
func flood(ctx context.Context, url, user string, conns, frames *atomic.Int64) error {
	tok, err := signToken(map[string]any{"sub": user})
	if err != nil {
		return err
	}
	payload := []byte(`["flood",{"n":1}]`)
	one := append([]byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
	const perWrite = 1024
	chunk := bytes.Repeat(one, perWrite)
	for ctx.Err() == nil {
		ws, _, err := rawDial(ctx, nil, url, tok)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", user, err)
		}
		conns.Add(1)
		// Stop writing when ctx is done, even when blocked on a full socket.
		stop := context.AfterFunc(ctx, func() { _ = ws.NetConn().Close() })
		for ctx.Err() == nil {
			_ = ws.NetConn().SetWriteDeadline(time.Now().Add(edgetest.Timeout))
			n, err := ws.NetConn().Write(chunk)
			frames.Add(int64(n / len(one)))
			if err != nil {
				break // closed by the edge (4429, then the socket)
			}
		}
		stop()
		_ = ws.Close()
	}
	return nil
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}
