package edge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestSlowConsumer_ClosedWhileThousandOthersKeepReceiving: one client stops
// reading in the middle of a broadcast stream to 1,001 connections. Its
// bounded queue overflows and the edge closes it with 4500, while each of
// the 1,000 others receives every broadcast message, in order.
//
// The kernel buffers several MB per loopback socket before a writer blocks
// (send-buffer autotuning, up to net.ipv4.tcp_wmem's max of 4 MiB): a
// non-reading client absorbs about 4 MB of broadcast per connection before
// its queue starts to fill, and a stream that slow also lets the edge's
// write deadline (10 s) drop it with 1006 before the queue overflows. So the
// slow client is also the target of unicast "ballast" frames published
// after each broadcast message of the first round: they fill its socket and
// its queue overflows within that round. Nobody else receives the ballast.
//
// The publisher sends rounds of a quarter of EDGE_SEND_QUEUE and waits for
// every reader to have a round before the next: the test is about a slow
// client hurting others, not about how large a burst the queue absorbs.
func TestSlowConsumer_ClosedWhileThousandOthersKeepReceiving(t *testing.T) {
	const (
		readers  = 1000
		messages = 64 // broadcast stream, published in rounds
		round    = 16 // frames per round; every reader has a round before the next
		queue    = 64 // EDGE_SEND_QUEUE: room for 4 rounds
		pad      = 1024
		ballast  = 128 << 10 // unicast frames to the slow client...
		perTick  = 12        // ...after each broadcast message, until the 4500
	)
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_SEND_QUEUE": strconv.Itoa(queue)})

	// The 1,000 readers: one bare connection and one goroutine each, which
	// checks every frame is the next broadcast message.
	conns := make([]*websocket.Conn, readers)
	readerErrs := make([]error, readers)
	var received, failed atomic.Int64
	var readersDone sync.WaitGroup
	t.Cleanup(func() {
		for _, ws := range conns {
			if ws != nil {
				_ = ws.Close()
			}
		}
		readersDone.Wait()
	})
	defer dumpMetricsOnFailure(t, e)
	dialStart := time.Now()
	dialAll(t, readers, func(i int) error {
		tok, err := signToken(map[string]any{"sub": fmt.Sprintf("reader%d", i)})
		if err != nil {
			return err
		}
		ws, _, err := rawDial(context.Background(), nil, e.URL, tok)
		if err != nil {
			return fmt.Errorf("reader %d: %w", i, err)
		}
		conns[i] = ws
		readersDone.Add(1)
		go func() {
			defer readersDone.Done()
			// It goes on reading after the stream (answering pings) until
			// the test closes the connection; nothing more may arrive.
			for n := 0; ; n++ {
				_, data, err := ws.ReadMessage()
				if err != nil && n == messages {
					return
				}
				if err == nil {
					err = checkTick(data, n, pad)
				}
				if err != nil {
					readerErrs[i] = fmt.Errorf("reader %d, broadcast message %d: %w", i, n, err)
					failed.Add(1)
					return
				}
				received.Add(1)
			}
		}()
		return nil
	})

	dialed := time.Since(dialStart)
	// The slow client reads its ok, then never reads again. Its receive
	// buffer is small, but not below loopback's 64 KiB MSS: with a window
	// of a few KB, the data left after the close drains at a few KB per
	// zero-window probe, and the final read would take minutes.
	tok := token(t, map[string]any{"sub": "slow"})
	slow, _, err := rawDial(context.Background(), smallReceiveBuffer(64<<10), e.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Close() })
	edgetest.Eventually(t, "1,001 authenticated connections", func() bool {
		return e.metric(t, `wsgate_edge_connections{state="authenticated"}`) == strconv.Itoa(readers+1)
	})

	padding := strings.Repeat("x", pad)
	heavy := []byte(`{"action":"ballast","details":"` + strings.Repeat("y", ballast) + `"}`)
	slowClosedAt := 0 // broadcast messages published when the 4500 close was counted
	start := time.Now()
	for sent := 0; sent < messages; {
		for i := 0; i < round && sent < messages; i++ {
			publish(t, nc, "ws.send.all", fmt.Sprintf(`{"action":"tick","details":[%d,"%s"]}`, sent, padding))
			for range perTick {
				if slowClosedAt != 0 {
					break // closing: the rest would be dropped anyway
				}
				if err := nc.Publish("ws.send.user.slow", heavy); err != nil {
					t.Fatal(err)
				}
			}
			sent++
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		edgetest.EventuallyWithin(t, roundTimeout, fmt.Sprintf("every reader has %d broadcast messages", sent), func() bool {
			return failed.Load() > 0 || received.Load() == int64(readers*sent)
		})
		if failed.Load() > 0 {
			t.Fatal(errors.Join(readerErrs...))
		}
		if slowClosedAt == 0 && e.metricSum(t, "wsgate_edge_slow_consumer_closes_total") > 0 {
			slowClosedAt = sent
		}
	}
	took := time.Since(start)
	if slowClosedAt == 0 || slowClosedAt == messages {
		t.Fatalf("slow consumer closed after %d of %d broadcast messages; want it closed mid-stream", slowClosedAt, messages)
	}

	// Server side: one 4500 close, and only the slow client is gone.
	edgetest.Eventually(t, "close 4500 counted", func() bool {
		return e.metric(t, `wsgate_edge_closes_total{code="4500"}`) == "1"
	})
	edgetest.Eventually(t, "1,000 connections left", func() bool {
		return e.metric(t, `wsgate_edge_connections{state="authenticated"}`) == strconv.Itoa(readers)
	})
	if v := e.metricSum(t, "wsgate_edge_slow_consumer_closes_total"); v != 1 {
		t.Fatalf("slow consumer closes %v, want 1 (only the client that stopped reading)", v)
	}
	if failed.Load() > 0 {
		t.Fatal(errors.Join(readerErrs...))
	}

	// Client side: once it reads again, the slow client finds the frames the
	// kernel held, then a 4500 close frame or the end of the connection.
	_ = slow.SetReadDeadline(time.Now().Add(edgetest.Timeout))
	frames := 0
	for {
		_, _, err = slow.ReadMessage()
		if err != nil {
			break
		}
		frames++
	}
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce) && ce.Code == 4500:
	case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("slow client: connection still open after %d frames", frames)
	case errors.As(err, &ce):
		t.Fatalf("slow client: close %d, want 4500", ce.Code)
	}
	t.Logf("%d readers dialed in %v", readers, dialed.Round(time.Millisecond))
	t.Logf("%d readers received all %d broadcast messages (%d B each) in order in %v; "+
		"slow consumer closed 4500 after %d of them; it then read %d buffered frames and %v",
		readers, messages, pad, took.Round(time.Millisecond), slowClosedAt, frames, err)
}

// roundTimeout bounds the wait for 1,000 readers to take one round: longer
// than edgetest.Timeout, for busy machines under -race.
const roundTimeout = 30 * time.Second

// dumpMetricsOnFailure logs the edge's close, drop and delivery counters
// when the test failed, to tell a lost reader's story.
func dumpMetricsOnFailure(t *testing.T, e *testEdge) {
	if !t.Failed() {
		return
	}
	for _, l := range strings.Split(e.body(t, "/metrics"), "\n") {
		for _, p := range []string{"wsgate_edge_closes", "wsgate_edge_dead_peers", "wsgate_edge_slow_consumer", "wsgate_edge_deliveries", "wsgate_edge_connections", "wsgate_edge_frames_rate", "wsgate_edge_nats", "wsgate_edge_outbound"} {
			if strings.HasPrefix(l, p) {
				t.Log(l)
			}
		}
	}
}

// checkTick checks data is ["tick",[want,"<pad x>"]].
func checkTick(data []byte, want, pad int) error {
	rest, ok := bytes.CutPrefix(data, []byte(`["tick",[`))
	if !ok {
		return fmt.Errorf("unexpected frame %.80s", data)
	}
	digits, rest, ok := bytes.Cut(rest, []byte(","))
	if seq, err := strconv.Atoi(string(digits)); !ok || err != nil || seq != want {
		return fmt.Errorf("got sequence number %q, want %d", digits, want)
	}
	if len(rest) != pad+4 || string(rest[:1]) != `"` || string(rest[len(rest)-3:]) != `"]]` {
		return fmt.Errorf("details of %d bytes, want %d", len(rest), pad+4)
	}
	return nil
}

// dialAll runs dial(0..n-1) on a few goroutines and fails the test with
// the first error.
func dialAll(t *testing.T, n int, dial func(i int) error) {
	t.Helper()
	const parallel = 16
	next := atomic.Int64{}
	errs := make([]error, parallel)
	var wg sync.WaitGroup
	for w := range parallel {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := dial(i); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
