package edge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// Soak parameters. The default duration keeps the package's tests fast;
// the longer run is
//
//	WSGATE_SOAK=60s go test -race -count=1 -run TestSoak ./services/edge
const (
	soakDefault = 15 * time.Second
	soakWorkers = 50
	soakGroups  = 8
	soakTick    = 10 * time.Millisecond // the publisher's period

	// What the process may hold after the churn, above its baseline.
	soakGoroutineMargin = 10
	soakFDMargin        = 10
	soakHeapMargin      = 8 << 20
)

// TestSoak_ResourcesReturnToBaseline: thousands of connections churn for a
// while (WSGATE_SOAK, default 15s): each connects with a token for a new
// user, session and two groups, receives unicast, session, group and
// broadcast traffic from a NATS publisher, sends frames, and goes away:
// with a close handshake, by dropping its TCP connection after the
// traffic, or by dropping it at once. Afterwards the edge holds no
// connection and no user, group or session subscription (nor does the NATS
// server), every connection's lifecycle ended with one Client/disconnection,
// and the process is back to its baseline of goroutines, open files and
// heap (the in-process figures count the clients too, all closed by then).
func TestSoak_ResourcesReturnToBaseline(t *testing.T) {
	d := soakDefault
	if v := os.Getenv("WSGATE_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("WSGATE_SOAK: %v", err)
		}
	}
	ns := edgetest.RunNATS(t)
	pub := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	defer dumpMetricsOnFailure(t, e)

	// Lifecycle events, to prove every connection's session ended once:
	// lifecycle[connection] counts its authentications up and its
	// disconnections down.
	var authenticated, disconnected, chats atomic.Int64
	var lifecycleMu sync.Mutex
	lifecycle := map[string]int{}
	lastEvent := map[string]string{}
	sink := edgetest.Connect(t, ns.ClientURL())
	sub, err := sink.Subscribe("ws.in.>", func(m *nats.Msg) {
		var env struct{ Connection, User string }
		switch m.Subject {
		case "ws.in.Client/authentication":
			authenticated.Add(1)
		case "ws.in.Client/disconnection":
			disconnected.Add(1)
		case "ws.in.chat":
			chats.Add(1)
			return
		default:
			return
		}
		_ = json.Unmarshal(m.Data, &env)
		lifecycleMu.Lock()
		defer lifecycleMu.Unlock()
		if m.Subject == "ws.in.Client/authentication" {
			lifecycle[env.Connection]++
		} else {
			lifecycle[env.Connection]--
		}
		if lifecycle[env.Connection] == 0 {
			delete(lifecycle, env.Connection)
			delete(lastEvent, env.Connection)
		} else {
			lastEvent[env.Connection] = env.User + " " + string(m.Data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}

	pubCtx, stopPub := context.WithCancel(context.Background())
	var pubDone sync.WaitGroup
	var published atomic.Int64
	pubDone.Go(func() { soakPublish(pubCtx, pub, &published) })
	defer func() { stopPub(); pubDone.Wait() }()

	// One cycle first, so that lazily built state (buffer pools, caches)
	// is part of the baseline.
	var st soakStats // counts the warm-up too
	if err := soakCycle(context.Background(), e.URL, pub, "warmup", 0, &st); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, "warm-up connection gone", func() bool { return e.metricSum(t, "wsgate_edge_connections") == 0 })
	base, err := measure()
	if err != nil {
		t.Fatal(err)
	}

	// Cancelled, not timed out: a dial cut by a deadline may fail before
	// ctx.Err() reports it, and look like an edge failure.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	defer time.AfterFunc(d, stop).Stop()
	var workers sync.WaitGroup
	errs := make([]error, soakWorkers)
	for w := range soakWorkers {
		workers.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if err := soakCycle(ctx, e.URL, pub, fmt.Sprintf("w%d-%d", w, i), i, &st); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	workers.Wait()
	stopPub()
	pubDone.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	churned := st.conns.Load()
	defer func() {
		if t.Failed() {
			t.Logf("%d connections churned; lifecycle events: %d authenticated, %d disconnected; NATS server slow consumers: %d",
				churned, authenticated.Load(), disconnected.Load(), ns.NumSlowConsumers())
			lifecycleMu.Lock()
			defer lifecycleMu.Unlock()
			for conn, n := range lifecycle {
				t.Logf("connection %s: %+d authentications - disconnections; last event %s", conn, n, lastEvent[conn])
			}
		}
	}()
	edgetest.Eventually(t, "no connection left on the edge", func() bool {
		return e.metricSum(t, "wsgate_edge_connections") == 0
	})
	// A dial cut short by the end of the soak may have been authenticated
	// without being counted: there may be more lifecycle pairs than churned.
	edgetest.EventuallyWithin(t, edgetest.Timeout, "one Client/disconnection per Client/authentication, per connection", func() bool {
		lifecycleMu.Lock()
		defer lifecycleMu.Unlock()
		return len(lifecycle) == 0 && authenticated.Load() >= churned
	})
	if v := e.metricSum(t, "wsgate_edge_subscriptions"); v != 0 {
		t.Errorf("edge subscriptions gauge %v, want 0", v)
	}
	if left := targetedSubs(t, ns); len(left) > 0 {
		t.Errorf("NATS still holds %d user/group/session subscriptions, e.g. %s", len(left), left[0])
	}

	// Server-side goroutines and sockets end shortly after the sessions:
	// poll for the figures to come back.
	var after resources
	deadline := time.Now().Add(edgetest.Timeout)
	for {
		if after, err = measure(); err != nil {
			t.Fatal(err)
		}
		if (after.goroutines <= base.goroutines+soakGoroutineMargin && after.fds <= base.fds+soakFDMargin &&
			after.heapInuse <= base.heapInuse+soakHeapMargin) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("soak %v: %d connections churned by %d workers (%d closed with a close handshake, %d dropped after traffic, %d dropped at once), "+
		"%d authenticated and disconnected lifecycle events; %d messages published, %d frames delivered to clients (%d connections had some before their ok); clients sent %d frames, %d reached NATS",
		d, churned, soakWorkers, st.clean.Load()+st.noEcho.Load(), st.dropped.Load(), churned-st.clean.Load()-st.noEcho.Load()-st.dropped.Load(),
		authenticated.Load(), published.Load(), st.received.Load(), st.beforeOK.Load(), st.sent.Load(), chats.Load())
	t.Logf("baseline: %v", base)
	t.Logf("after:    %v", after)
	// RFC 6455 §5.5.1: the edge answers a client's close frame with its own.
	if n := st.noEcho.Load(); n > 0 {
		t.Errorf("%d of %d client close handshakes got no close frame back (the socket just closed: 1006)", n, n+st.clean.Load())
	}
	if after.goroutines > base.goroutines+soakGoroutineMargin {
		t.Errorf("goroutines %d, baseline %d + %d", after.goroutines, base.goroutines, soakGoroutineMargin)
	}
	if after.fds > base.fds+soakFDMargin {
		t.Errorf("open files %d, baseline %d + %d", after.fds, base.fds, soakFDMargin)
	}
	if after.heapInuse > base.heapInuse+soakHeapMargin {
		t.Errorf("heap in use %d B, baseline %d B + %d B", after.heapInuse, base.heapInuse, soakHeapMargin)
	}
}

type soakStats struct {
	conns, clean, dropped atomic.Int64 // connections by way of leaving
	received, sent        atomic.Int64 // frames to and from clients (ok and pong aside)
	beforeOK              atomic.Int64 // connections that had traffic before their ok
	noEcho                atomic.Int64 // close handshakes the edge did not answer
}

// soakPublish sends, every soakTick, a broadcast and one message to each group.
func soakPublish(ctx context.Context, nc *nats.Conn, published *atomic.Int64) {
	ticker := time.NewTicker(soakTick)
	defer ticker.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		_ = nc.Publish("ws.send.all", fmt.Appendf(nil, `{"action":"tick","details":%d}`, n))
		for g := range soakGroups {
			_ = nc.Publish(fmt.Sprintf("ws.send.group.g%d", g), fmt.Appendf(nil, `{"action":"group","details":%d}`, n))
		}
		published.Add(1 + soakGroups)
	}
}

// soakCycle is one connection's life. By i%3: it closes with a close
// handshake after the traffic, drops its TCP connection after the
// traffic, or drops it right after sending a frame.
func soakCycle(ctx context.Context, url string, pub *nats.Conn, user string, i int, st *soakStats) error {
	groups := []string{fmt.Sprintf("g%d", i%soakGroups), fmt.Sprintf("g%d", (i+1)%soakGroups)}
	tok, err := signToken(map[string]any{"sub": user, "sid": user + "-s", "groups": groups})
	if err != nil {
		return err
	}
	ws, early, err := rawDial(ctx, nil, url, tok)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%s: %w", user, err)
	}
	defer ws.Close()
	st.conns.Add(1)
	st.received.Add(int64(early))
	if early > 0 {
		st.beforeOK.Add(1)
	}
	if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `["chat",{"i":%d}]`, i)); err != nil {
		return fmt.Errorf("%s: write: %w", user, err)
	}
	st.sent.Add(1)
	if i%3 == 2 {
		return nil // dropped at once by the deferred Close
	}

	// Unicast through the user or the session subject; the ok came only
	// after the edge's subscriptions were confirmed, so it cannot be lost.
	direct := "ws.send.user." + user
	if i%2 == 1 {
		direct = "ws.send.session." + user + "-s"
	}
	if err := pub.Publish(direct, []byte(`{"action":"direct"}`)); err != nil {
		return err
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`["Client/ping",null,"p"]`)); err != nil {
		return fmt.Errorf("%s: write: %w", user, err)
	}
	want := map[string]bool{`["direct"`: true, `["Server/pong"`: true, `["tick"`: true, `["group"`: true}
	_ = ws.SetReadDeadline(time.Now().Add(edgetest.Timeout))
	for len(want) > 0 {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("%s: waiting for %v: %w", user, want, err)
		}
		action, _, _ := bytes.Cut(data, []byte(","))
		delete(want, string(action))
		if string(action) != `["Server/pong"` {
			st.received.Add(1)
		}
	}
	if i%3 == 1 {
		st.dropped.Add(1)
		return nil
	}
	// Close handshake: the edge answers our close frame with its own.
	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)); err != nil {
		return fmt.Errorf("%s: close: %w", user, err)
	}
	for {
		if _, _, err = ws.ReadMessage(); err != nil {
			break
		}
		st.received.Add(1) // traffic still on its way
	}
	switch {
	case websocket.IsCloseError(err, websocket.CloseNormalClosure):
		st.clean.Add(1)
	case websocket.IsCloseError(err, websocket.CloseAbnormalClosure):
		st.noEcho.Add(1) // the socket closed without the edge's close frame
	default:
		return fmt.Errorf("%s: close handshake: %w", user, err)
	}
	return nil
}

// targetedSubs lists the subscriptions the NATS server holds on user,
// group and session subjects.
func targetedSubs(t *testing.T, ns *natsserver.Server) []string {
	t.Helper()
	sz, err := ns.Subsz(&natsserver.SubszOptions{Subscriptions: true, Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, s := range sz.Subs {
		for _, p := range []string{"ws.send.user.", "ws.send.group.", "ws.send.session."} {
			if strings.HasPrefix(s.Subject, p) {
				left = append(left, s.Subject)
			}
		}
	}
	return left
}
