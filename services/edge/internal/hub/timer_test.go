package hub

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newTestClient(i int, created time.Time) *Client {
	c := NewClient(nil, "e1", strconv.Itoa(i), "127.0.0.1", "", "")
	c.created = created
	return c
}

// checkSlots verifies that every client in want sits exactly once in the
// round, where its slotPos says.
func checkSlots(t *testing.T, tm *timer, want map[*Client]bool) {
	t.Helper()
	seen := 0
	for i, slot := range tm.round {
		for pos, c := range slot {
			if !want[c] || c.timer.slot != i || c.timer.slotPos != pos {
				t.Fatalf("slot %d position %d holds client %s (wanted %v, its place %d/%d)", i, pos, c.ID, want[c], c.timer.slot, c.timer.slotPos)
			}
			seen++
		}
	}
	if seen != len(want) {
		t.Fatalf("round holds %d clients, want %d", seen, len(want))
	}
}

func TestTimer_EachClientVisitedOncePerPingInterval(t *testing.T) {
	tm := newTimer(20*time.Second, 10*time.Second)
	if got := time.Duration(tm.slots) * tm.period; got != 20*time.Second {
		t.Fatalf("a round takes %v (%d slots of %v), want the ping interval 20s", got, tm.slots, tm.period)
	}
	now := time.Now()
	live := map[*Client]bool{}
	var all []*Client
	for i := range 1000 {
		c := newTestClient(i, now)
		tm.add(c, 10*time.Second)
		live[c] = true
		all = append(all, c)
	}
	for _, slot := range tm.round {
		if len(slot) != 1000/tm.slots {
			t.Fatalf("slot sizes %d, want %d each: pings are spread evenly", len(slot), 1000/tm.slots)
		}
	}
	checkSlots(t, tm, live)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, i := range rng.Perm(len(all))[:700] {
		tm.remove(all[i])
		tm.remove(all[i]) // a second remove is harmless
		delete(live, all[i])
	}
	checkSlots(t, tm, live)
	if len(tm.due) != len(live) {
		t.Fatalf("%d deadlines for %d clients", len(tm.due), len(live))
	}
}

func TestTimer_DeadlinesComeDueInOrderAndOnlyOnce(t *testing.T) {
	const authTimeout = 10 * time.Second
	tm := newTimer(20*time.Second, authTimeout)
	t0 := time.Now()
	pending := newTestClient(1, t0)  // never authenticates: due at t0+10s
	expiring := newTestClient(2, t0) // token expires at t0+5s
	forever := newTestClient(3, t0)  // token without expiry: never due
	closing := newTestClient(4, t0)  // close frame sent
	gone := newTestClient(5, t0)     // removed: never due
	reauthed := newTestClient(6, t0) // expiry moved from t0+3s to t0+30s
	for _, c := range []*Client{pending, expiring, forever, closing, gone, reauthed} {
		tm.add(c, authTimeout)
	}
	login := func(c *Client, exp time.Time) {
		c.identity.Store(&auth.Identity{User: c.ID, Expires: exp})
		tm.identityChanged(c, authTimeout)
	}
	login(expiring, t0.Add(5*time.Second))
	login(forever, time.Time{})
	login(reauthed, t0.Add(3*time.Second))
	login(reauthed, t0.Add(30*time.Second))
	tm.closeSent(closing)
	login(closing, t0.Add(time.Second)) // a close deadline is not replaced
	tm.remove(gone)

	type want struct {
		c    *Client
		kind uint8
	}
	for _, step := range []struct {
		at   time.Duration
		want []want
	}{
		{time.Second, nil},
		{wsconn.CloseGrace + time.Second, []want{{closing, deadlineClose}}},
		{6 * time.Second, []want{{expiring, deadlineExp}}},
		{11 * time.Second, []want{{pending, deadlineAuth}}},
		{29 * time.Second, nil},
		{31 * time.Second, []want{{reauthed, deadlineExp}}},
		{time.Hour, nil},
	} {
		got := tm.popDue(t0.Add(step.at), nil)
		if len(got) != len(step.want) {
			t.Fatalf("at +%v: %d due, want %d", step.at, len(got), len(step.want))
		}
		for i, w := range step.want {
			if got[i].c != w.c || got[i].kind != w.kind {
				t.Fatalf("at +%v: due client %s kind %d, want %s kind %d", step.at, got[i].c.ID, got[i].kind, w.c.ID, w.kind)
			}
		}
	}
}

// frameSeen is a frame a test peer received: its opcode, and when.
type frameSeen struct {
	op byte
	at time.Time
}

// readFrames reads the unmasked, unfragmented small frames the edge writes
// to peer and sends each one on seen, until the socket ends.
func readFrames(peer net.Conn, seen chan<- frameSeen) {
	defer close(seen)
	r := bufio.NewReader(peer)
	for {
		var head [2]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return
		}
		if _, err := r.Discard(int(head[1] & 0x7f)); err != nil {
			return
		}
		seen <- frameSeen{op: head[0] & 0x0f, at: time.Now()}
	}
}

// pipeClients returns n clients of h on in-memory pipes (what a synctest
// bubble can wait on), with a channel each of the frames its peer reads.
// The pipes close when the test ends.
func pipeClients(t *testing.T, h *Hub, n int) ([]*Client, []chan frameSeen) {
	t.Helper()
	var clients []*Client
	var seen []chan frameSeen
	for i := range n {
		server, peer := net.Pipe()
		conn := wsconn.New(server, 16, h.cfg.Stats.Shard(), func(error) {})
		t.Cleanup(func() { conn.Abort(); _ = peer.Close(); conn.Wait() })
		clients = append(clients, NewClient(conn, "e1", strconv.Itoa(i), "127.0.0.1", "", ""))
		ch := make(chan frameSeen, 4)
		seen = append(seen, ch)
		go readFrames(peer, ch)
	}
	return clients, seen
}

// TestTick_PingsGoOutInChunksAndDeliveriesDoNotWaitForThem: a tick's pings
// go out a chunk at a time, chunk k exactly k pauses after the first (the
// bubble's clock), and a delivery to a client of a later chunk goes out at
// once, ahead of its ping. Fails when ping stops pausing, pauses before the
// first chunk, or holds the right to write across a pause.
func TestTick_PingsGoOutInChunksAndDeliveriesDoNotWaitForThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const chunk, chunks, pause = 4, 3, 50 * time.Millisecond
		const opText, opPing = 0x1, 0x9
		h := New(nil, Config{PingInterval: 20 * time.Second, AuthTimeout: 10 * time.Second})
		visit, seen := pipeClients(t, h, chunk*chunks)
		start := time.Now()
		pinged := make(chan bool, 1)
		go func() {
			var pings wsconn.Batch
			ok := h.ping(t.Context(), visit, time.Now(), time.Hour, chunk, pause, &pings)
			pinged <- ok
		}()
		synctest.Wait() // the first chunk is out; ping waits out its pause
		for i := range visit {
			if got, want := len(seen[i]), min(1, max(0, chunk-i)); got != want {
				t.Fatalf("client %d got %d frames before the first pause, want %d", i, got, want)
			}
		}
		// A delivery to a client of the last chunk goes out now, ahead of
		// its ping.
		last := visit[len(visit)-1].Conn
		var batch wsconn.Batch
		if err := last.Queue(&batch, wsconn.TextFrame([]byte(`["news",1]`)), time.Now()); err != nil {
			t.Fatal(err)
		}
		batch.Flush()
		synctest.Wait()
		if f := <-seen[len(visit)-1]; f.op != opText || !f.at.Equal(start) {
			t.Fatalf("last client received opcode %#x at +%v first, want the delivery at once: it waited for its ping", f.op, f.at.Sub(start))
		}
		if !<-pinged {
			t.Fatal("ping stopped early")
		}
		for i := range visit {
			f := <-seen[i]
			if want := start.Add(time.Duration(i/chunk) * pause); f.op != opPing || !f.at.Equal(want) {
				t.Fatalf("client %d (chunk %d) received opcode %#x at +%v, want a ping at +%v", i, i/chunk, f.op, f.at.Sub(start), want.Sub(start))
			}
		}
	})
}

func TestTick_PingChunksOnlyWhileDeliveriesFlow(t *testing.T) {
	for _, tc := range []struct {
		clients int
		period  time.Duration
		busy    bool
		want    int
	}{
		{750, time.Second, false, 750}, // idle: one wave
		{0, time.Second, false, 1},
		{0, time.Second, true, pingChunk},
		{750, time.Second, true, pingChunk},         // 15,000 clients, 20 s interval: 24 chunks
		{100_000, time.Second, true, 100_000 / 250}, // 250 pauses of 1 ms
		{1000, 5 * time.Millisecond, true, 1000},    // a tick too short to pause in: one chunk
	} {
		got := pingChunkSize(tc.clients, tc.period, tc.busy)
		if got != tc.want {
			t.Errorf("%d clients, ticks of %v, busy %v: chunks of %d, want %d", tc.clients, tc.period, tc.busy, got, tc.want)
		}
		if pauses := (tc.clients+got-1)/got - 1; pauses > 0 && time.Duration(pauses)*pingPause > tc.period/4 {
			t.Errorf("%d clients, ticks of %v: %d pauses of %v take more than a quarter of the tick", tc.clients, tc.period, pauses, pingPause)
		}
	}
}

// TestVisit_ARecoveringClientIsPingedNotDroppedAsSilent: a connection's
// recovery runs on its reader, which reads no pong meanwhile, so silence
// during a recovery (up to EDGE_HISTORY_REPLAY_WAIT and _TIMEOUT, longer
// than two ping intervals) says nothing of the peer: the client is pinged.
// Live again and still silent, it is dropped.
func TestVisit_ARecoveringClientIsPingedNotDroppedAsSilent(t *testing.T) {
	h := New(nil, Config{PingInterval: 20 * time.Second, AuthTimeout: 10 * time.Second})
	clients, seen := pipeClients(t, h, 1)
	c := clients[0]
	later := time.Now().Add(time.Hour) // silent for an hour
	h.BeginRecovery(c)
	var pings wsconn.Batch
	h.visit(c, later, time.Minute, &pings)
	if pings.Len() != 1 {
		t.Fatal("a recovering client was dropped as silent, want a ping")
	}
	pings.Flush()
	if f := <-seen[0]; f.op != 0x9 {
		t.Fatalf("peer got opcode %#x, want a ping", f.op)
	}
	h.EndRecovery(c, "", 0)
	h.visit(c, later, time.Minute, &pings)
	if pings.Len() != 0 {
		t.Fatal("a silent live client was pinged, want it dropped")
	}
}

// TestVisit_AConnectionHeldForACatchUpIsDroppedWhenSilent: during a NATS
// outage every connection is on hold for its catch-up, but its reader
// still reads (pongs included): a dead peer is dropped as ever.
func TestVisit_AConnectionHeldForACatchUpIsDroppedWhenSilent(t *testing.T) {
	h, _, cs := fakeHubWith(t, true, &auth.Identity{User: "a", Groups: []string{}})
	c := cs[0].c
	h.BeginRecovery(c)
	h.EndRecovery(c, "e", 0)
	if held := h.HoldLive(); len(held) != 1 {
		t.Fatalf("HoldLive held %d", len(held))
	}
	var pings wsconn.Batch
	h.visit(c, time.Now().Add(time.Hour), time.Minute, &pings)
	if pings.Len() != 0 {
		t.Fatal("a silent connection held for a catch-up was pinged, want it dropped")
	}
}
