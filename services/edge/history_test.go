package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// historyEnv is an edge's environment with history on, plus extra.
func historyEnv(id string, extra ...string) map[string]string {
	env := map[string]string{"EDGE_ID": id, "WS_HISTORY": "memory"}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// numbered is the details of a test message: its target and number.
type numbered struct {
	T string `json:"t"`
	N int    `json:"n"`
}

// stored is one frame of a stored message as a client got it.
type stored struct {
	numbered
	seq uint64
}

// seqOf decodes a frame's fourth element, the history sequence (0: none).
func seqOf(t *testing.T, f edgetest.Frame) uint64 {
	t.Helper()
	var parts []json.RawMessage
	if err := json.Unmarshal(f.Raw, &parts); err != nil {
		t.Fatal(err)
	}
	if len(parts) < 4 {
		return 0
	}
	n, err := strconv.ParseUint(string(parts[3]), 10, 64)
	if err != nil {
		t.Fatalf("seq of %s: %v", f, err)
	}
	return n
}

// expectRecovery reads Server/recovery and checks it against the schema.
func expectRecovery(t *testing.T, c *edgetest.Client) wire.Recovery {
	t.Helper()
	f := c.Expect(wire.ActionRecovery)
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := check.Check(schemacheck.ServerFrame, f.Raw); err != nil {
		t.Fatal(err)
	}
	if err := check.Check(schemacheck.Recovery, f.Details); err != nil {
		t.Fatal(err)
	}
	var r wire.Recovery
	_ = json.Unmarshal(f.Details, &r)
	return r
}

// readNumbered reads n stored frames of action "m".
func readNumbered(t *testing.T, c *edgetest.Client, n int) []stored {
	t.Helper()
	out := make([]stored, 0, n)
	for range n {
		// Next, not Expect: a Server/recovery in the middle of a live
		// connection (recovered:false) is a failure here, never skipped.
		f := c.Next()
		if f.Action != "m" {
			t.Fatalf("got %s, want a numbered message", f)
		}
		var s stored
		if err := json.Unmarshal(f.Details, &s.numbered); err != nil {
			t.Fatal(err)
		}
		if s.seq = seqOf(t, f); s.seq == 0 {
			t.Fatalf("stored message without seq: %s", f)
		}
		out = append(out, s)
	}
	return out
}

// jsPublish publishes a numbered message and waits for the stream's ack.
func jsPublish(t *testing.T, js jetstream.JetStream, subject, target string, n int) uint64 {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"action": "m", "details": numbered{target, n}})
	ack, err := js.Publish(context.Background(), subject, data)
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

// checkExactlyOnceInOrder checks that got holds, per target, the numbers
// from..to each once and in order, and that seqs strictly increase.
func checkExactlyOnceInOrder(t *testing.T, got []stored, targets []string, from, to int) {
	t.Helper()
	next := map[string]int{}
	for _, tg := range targets {
		next[tg] = from
	}
	var last uint64
	for _, s := range got {
		if s.seq <= last {
			t.Fatalf("seq %d after %d", s.seq, last)
		}
		last = s.seq
		want, ok := next[s.T]
		if !ok {
			t.Fatalf("message for another target: %+v", s)
		}
		if s.N != want {
			t.Fatalf("target %s: got number %d, want %d", s.T, s.N, want)
		}
		next[s.T] = want + 1
	}
	for tg, n := range next {
		if n != to+1 {
			t.Fatalf("target %s: last number %d, want %d", tg, n-1, to)
		}
	}
}

var aliceClaims = map[string]any{"sub": "alice", "sid": "s-alice", "groups": []string{"red"}}

// publishRound publishes number n to every target of alice, and to
// targets that are not hers.
func publishRound(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	jsPublish(t, js, "ws.send.user.alice", "user", n)
	jsPublish(t, js, "ws.send.user.bob", "bob", n)
	jsPublish(t, js, "ws.send.group.red", "group", n)
	jsPublish(t, js, "ws.send.group.blue", "blue", n)
	jsPublish(t, js, "ws.send.all", "all", n)
	jsPublish(t, js, "ws.send.session.s-alice", "session", n)
	jsPublish(t, js, "ws.send.session.s-other", "other", n)
}

var aliceTargets = []string{"user", "group", "all", "session"}

func sinceQuery(url string, epoch string, seq uint64) string {
	return url + "?since=" + epoch + ":" + strconv.FormatUint(seq, 10)
}

func TestHistory_RecoveryAfterReconnectToSameOrOtherEdge(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e1 := startEdge(t, ns, historyEnv("e1"))
	e2 := startEdge(t, ns, historyEnv("e2"))

	// A first connection has no since: its recovery only names the epoch.
	c := e1.dial(t, aliceClaims)
	r := expectRecovery(t, c)
	if r.Epoch == "" || r.Recovered || r.Count != 0 {
		t.Fatalf("first recovery %+v", r)
	}
	for n := 1; n <= 3; n++ {
		publishRound(t, js, n)
	}
	got := readNumbered(t, c, 12)
	checkExactlyOnceInOrder(t, got, aliceTargets, 1, 3)
	last := got[len(got)-1].seq
	_ = c.WS.Close()

	// Missed while away, recovered on the other edge through ?since=.
	for n := 4; n <= 6; n++ {
		publishRound(t, js, n)
	}
	c = edgetest.Dial(t, sinceQuery(e2.URL, r.Epoch, last), bearer(token(t, aliceClaims)))
	c.ExpectOK()
	if r2 := expectRecovery(t, c); !r2.Recovered || r2.Count != 12 || r2.Epoch != r.Epoch {
		t.Fatalf("recovery %+v, want recovered with 12", r2)
	}
	publishRound(t, js, 7) // live after the replay
	got = readNumbered(t, c, 16)
	checkExactlyOnceInOrder(t, got, aliceTargets, 4, 7)
	for name, want := range map[string]float64{
		"wsgate_edge_history_replays_total": 1, "wsgate_edge_history_replayed_total": 12,
		"wsgate_edge_history_replay_duration_seconds_count": 1,
	} {
		if v := e2.metricSum(t, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	last = got[len(got)-1].seq
	_ = c.WS.Close()

	// Recovered on the same edge through since in Client/authentication,
	// with a core NATS publish (nats pub) among the missed ones.
	publishRound(t, js, 8)
	if err := nc.Publish("ws.send.user.alice", []byte(`{"action":"m","details":{"t":"user","n":9}}`)); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, "core publish stored", func() bool {
		info, err := js.Stream(context.Background(), "WS_HISTORY")
		return err == nil && info.CachedInfo().State.Msgs >= 7*8+1
	})
	c = edgetest.Dial(t, e2.URL, nil)
	c.Send("Client/authentication", map[string]any{"token": token(t, aliceClaims), "since": map[string]any{"epoch": r.Epoch, "seq": last}})
	c.ExpectOK()
	if r3 := expectRecovery(t, c); !r3.Recovered || r3.Count != 5 {
		t.Fatalf("recovery %+v, want recovered with 5", r3)
	}
	got = readNumbered(t, c, 5)
	if got[4].T != "user" || got[4].N != 9 {
		t.Fatalf("core publish not recovered: %+v", got)
	}
	checkExactlyOnceInOrder(t, got[:4], aliceTargets, 8, 8)
}

// TestHistory_RecoveryCoversEveryCurrentTarget: a recovery replays what
// was sent while the connection was away to each of its current targets
// (DESIGN.md §8): its user, its session, its token's groups (one of them
// named "filter"), the groups its user joined (stored joins, §9), all,
// users, and the filter messages whose property it has; and nothing sent
// to other targets.
func TestHistory_RecoveryCoversEveryCurrentTarget(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e := startEdge(t, ns, historyEnv("e1", "WS_PRESENCE", "memory"))
	// A group named "filter" is a group like another, not the filter subject.
	claims := map[string]any{"sub": "alice", "sid": "s-alice", "groups": []string{"red", "filter"}, "props": map[string]string{"plan": "pro"}}
	mustOK(t, nc, "ws.ctl.join.user.alice", `{"groups":["room"]}`)
	c := e.dial(t, claims)
	r := expectRecovery(t, c)
	_ = c.WS.Close()

	filtered := func(plan, target string, n int) {
		data, _ := json.Marshal(map[string]any{"action": "m", "details": numbered{target, n}, "filter": wire.Filter{Property: "plan", Value: plan}})
		if _, err := js.Publish(context.Background(), "ws.send.filter", data); err != nil {
			t.Fatal(err)
		}
	}
	for n := 1; n <= 2; n++ {
		jsPublish(t, js, "ws.send.user.alice", "user", n)
		jsPublish(t, js, "ws.send.session.s-alice", "session", n)
		jsPublish(t, js, "ws.send.group.red", "group", n)
		jsPublish(t, js, "ws.send.group.room", "room", n)
		jsPublish(t, js, "ws.send.group.filter", "group filter", n)
		jsPublish(t, js, "ws.send.all", "all", n)
		jsPublish(t, js, "ws.send.users", "users", n)
		filtered("pro", "filter", n)
		// Not hers.
		jsPublish(t, js, "ws.send.user.bob", "bob", n)
		jsPublish(t, js, "ws.send.session.s-bob", "bob", n)
		jsPublish(t, js, "ws.send.group.blue", "blue", n)
		filtered("free", "free", n)
	}
	c = edgetest.Dial(t, sinceQuery(e.URL, r.Epoch, r.Seq), bearer(token(t, claims)))
	c.ExpectOK()
	if got := expectRecovery(t, c); !got.Recovered || got.Count != 16 {
		t.Fatalf("recovery %+v, want recovered with 16", got)
	}
	checkExactlyOnceInOrder(t, readNumbered(t, c, 16), []string{"user", "session", "group", "group filter", "room", "all", "users", "filter"}, 1, 2)
}

// TestHistory_RepliesWaitForTheRecovery: a message that is not stored (a
// reply to the connection, here a greeting sent on its
// Client/authentication event) does not pass the recovery: it comes after
// Server/recovery and the replayed messages (DESIGN.md §2: Server/recovery
// right after ok; §4: one publisher's messages in order).
func TestHistory_RepliesWaitForTheRecovery(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e := startEdge(t, ns, historyEnv("e1"))
	sub, err := nc.Subscribe("ws.in.Client/authentication", func(m *nats.Msg) {
		var env struct{ Connection string }
		_ = json.Unmarshal(m.Data, &env)
		_ = nc.Publish("ws.send.conn."+env.Connection, []byte(`{"action":"greeting"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"sub": "u1"}
	expectInOrder := func(c *edgetest.Client, actions ...string) []edgetest.Frame {
		t.Helper()
		c.ExpectOK()
		frames := make([]edgetest.Frame, len(actions))
		for i, a := range actions {
			if frames[i] = c.Next(); frames[i].Action != a {
				t.Fatalf("frame %d after ok: %s, want %s", i+1, frames[i], a)
			}
		}
		return frames
	}
	c := edgetest.Dial(t, e.URL, bearer(token(t, claims)))
	var r wire.Recovery
	if err := json.Unmarshal(expectInOrder(c, wire.ActionRecovery, "greeting")[0].Details, &r); err != nil {
		t.Fatal(err)
	}
	_ = c.WS.Close()
	const missed = 30
	for n := 1; n <= missed; n++ {
		jsPublish(t, js, "ws.send.user.u1", "user", n)
	}
	c = edgetest.Dial(t, sinceQuery(e.URL, r.Epoch, r.Seq), bearer(token(t, claims)))
	want := []string{wire.ActionRecovery}
	for range missed {
		want = append(want, "m")
	}
	expectInOrder(c, append(want, "greeting")...)
}

// TestHistory_NoGapNoDuplicateAtTheSwitch publishes while connections
// recover: every number arrives once, in order, whether it came replayed
// or live.
func TestHistory_NoGapNoDuplicateAtTheSwitch(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	// The publisher runs ahead of the reader: the per-subject cap must
	// hold what it may be ahead by.
	e1 := startEdge(t, ns, historyEnv("e1", "WS_HISTORY_MAX_PER_SUBJECT", "1000"))
	e2 := startEdge(t, ns, historyEnv("e2", "WS_HISTORY_MAX_PER_SUBJECT", "1000"))
	claims := map[string]any{"sub": "u1"}

	c := e1.dial(t, claims)
	r := expectRecovery(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Paced, so that it still publishes while each reconnection recovers:
	// the switch from replay to live is what this test is about.
	const most = 5000
	published := make(chan int, 1)
	go func() {
		n := 0
		defer func() { published <- n }()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for n < most {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n++
			data, _ := json.Marshal(map[string]any{"action": "m", "details": numbered{"user", n}})
			if _, err := js.Publish(ctx, "ws.send.user.u1", data); err != nil {
				n--
				return
			}
		}
	}()
	var got []stored
	var last uint64
	edges := []*testEdge{e2, e1}
	for i := 0; i < 6; i++ {
		for range 10 {
			got = append(got, readNumbered(t, c, 1)...)
		}
		last = got[len(got)-1].seq
		_ = c.WS.Close()
		c = edgetest.Dial(t, sinceQuery(edges[i%2].URL, r.Epoch, last), bearer(token(t, claims)))
		c.ExpectOK()
		if rr := expectRecovery(t, c); !rr.Recovered {
			t.Fatalf("recovery %+v", rr)
		}
	}
	cancel()
	n := <-published
	if n == most {
		t.Fatalf("the publisher ended before the reconnections did: no switch under a live publisher")
	}
	got = append(got, readNumbered(t, c, n-len(got))...)
	checkExactlyOnceInOrder(t, got, []string{"user"}, 1, n)
}

// limitsEdge is an edge with history limits env, a JetStream publisher,
// and helpers: stamp connects, receives one message and leaves with its
// position; reconnect comes back with that position.
func limitsEdge(t *testing.T, extra ...string) (js jetstream.JetStream, stamp func() (string, uint64), reconnect func(string, uint64) wire.Recovery, e *testEdge) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ = jetstream.New(nc)
	e = startEdge(t, ns, historyEnv("e1", extra...))
	claims := map[string]any{"sub": "u1"}
	stamp = func() (string, uint64) {
		c := e.dial(t, claims)
		r := expectRecovery(t, c)
		jsPublish(t, js, "ws.send.user.u1", "user", 0)
		seq := readNumbered(t, c, 1)[0].seq
		_ = c.WS.Close()
		return r.Epoch, seq
	}
	reconnect = func(epoch string, seq uint64) wire.Recovery {
		c := edgetest.Dial(t, sinceQuery(e.URL, epoch, seq), bearer(token(t, claims)))
		c.ExpectOK()
		r := expectRecovery(t, c)
		_ = c.WS.Close()
		return r
	}
	return js, stamp, reconnect, e
}

// TestHistory_QuietConnectionRecoversFromItsStart: Server/recovery gives a
// connection a position even when no stored message ever reaches it, so a
// message published while it is away is recovered, not lost to a since of
// 0 that the stream's limits have long passed.
func TestHistory_QuietConnectionRecoversFromItsStart(t *testing.T) {
	js, _, reconnect, e := limitsEdge(t, "WS_HISTORY_MAX_PER_SUBJECT", "1")
	// Two messages of another subject: the first is dropped by the cap, so
	// the stream no longer starts at 1.
	jsPublish(t, js, "ws.send.user.keeper", "keeper", 1)
	last := jsPublish(t, js, "ws.send.user.keeper", "keeper", 2)

	claims := map[string]any{"sub": "u1"}
	var r wire.Recovery
	edgetest.Eventually(t, "a first connection starts at or after the keeper's messages", func() bool {
		c := e.dial(t, claims)
		r = expectRecovery(t, c)
		_ = c.WS.Close()
		return r.Seq >= last
	})
	if r.Recovered || r.Count != 0 || r.Seq != last {
		t.Fatalf("first recovery %+v, want not recovered at seq %d", r, last)
	}
	jsPublish(t, js, "ws.send.user.u1", "user", 1)
	got := reconnect(r.Epoch, r.Seq)
	if !got.Recovered || got.Count != 1 || got.Seq != r.Seq {
		t.Fatalf("recovery %+v, want the missed message recovered from seq %d", got, r.Seq)
	}
}

func TestHistory_NotRecoveredPastThePerSubjectLimit(t *testing.T) {
	js, stamp, reconnect, e := limitsEdge(t, "WS_HISTORY_MAX_PER_SUBJECT", "3")
	// An older message of another subject keeps the stream's first
	// sequence low: only the per-subject cap can tell the loss.
	jsPublish(t, js, "ws.send.user.keeper", "keeper", 0)

	t.Run("within the limit", func(t *testing.T) {
		epoch, seq := stamp()
		for n := 1; n <= 3; n++ {
			jsPublish(t, js, "ws.send.user.u1", "user", n)
		}
		if r := reconnect(epoch, seq); !r.Recovered || r.Count != 3 {
			t.Fatalf("got %+v", r)
		}
	})
	t.Run("past the limit", func(t *testing.T) {
		epoch, seq := stamp()
		for n := 1; n <= 4; n++ {
			jsPublish(t, js, "ws.send.user.u1", "user", n)
		}
		if r := reconnect(epoch, seq); r.Recovered || r.Count != 0 {
			t.Fatalf("got %+v", r)
		}
	})
	if v := e.metricSum(t, "wsgate_edge_history_unrecovered_total"); v != 1 {
		t.Fatalf("unrecovered metric %v, want 1", v)
	}
}

func TestHistory_NotRecoveredPastTheMaxAge(t *testing.T) {
	js, stamp, reconnect, _ := limitsEdge(t, "WS_HISTORY_MAX_AGE", "1s")
	epoch, seq := stamp()
	last := jsPublish(t, js, "ws.send.user.u1", "user", 1)
	edgetest.Eventually(t, "messages aged out", func() bool {
		info, err := js.Stream(context.Background(), "WS_HISTORY")
		return err == nil && info.CachedInfo().State.FirstSeq > last
	})
	if r := reconnect(epoch, seq); r.Recovered || r.Count != 0 {
		t.Fatalf("got %+v", r)
	}
}

// TestHistory_LateRepublishIsDropped: a stored message that reaches the
// edge live after the connection already got it (replayed, or a
// republish that came late) is not delivered twice.
func TestHistory_LateRepublishIsDropped(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e := startEdge(t, ns, historyEnv("e1"))
	c := e.dial(t, map[string]any{"sub": "u1"})
	expectRecovery(t, c)
	jsPublish(t, js, "ws.send.user.u1", "user", 1)
	seq := readNumbered(t, c, 1)[0].seq
	late := &nats.Msg{Subject: "ws.out.user.u1", Data: []byte(`{"action":"m","details":{"t":"user","n":1}}`),
		Header: nats.Header{wire.HeaderSequence: {strconv.FormatUint(seq, 10)}}}
	if err := nc.PublishMsg(late); err != nil {
		t.Fatal(err)
	}
	jsPublish(t, js, "ws.send.user.u1", "user", 2)
	if got := readNumbered(t, c, 1); got[0].N != 2 {
		t.Fatalf("got %+v, want number 2", got)
	}
}

func TestHistory_NewEpochAfterTheStreamIsRecreated(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e := startEdge(t, ns, historyEnv("e1"))
	claims := map[string]any{"sub": "u1"}

	live := e.dial(t, claims)
	r := expectRecovery(t, live)
	jsPublish(t, js, "ws.send.user.u1", "user", 1)
	jsPublish(t, js, "ws.send.user.u1", "user", 2)
	seq := readNumbered(t, live, 2)[1].seq

	if err := js.DeleteStream(context.Background(), "WS_HISTORY"); err != nil {
		t.Fatal(err)
	}
	// The edge recreates it, and tells live connections the new epoch.
	r2 := expectRecovery(t, live)
	if r2.Recovered || r2.Epoch == r.Epoch || r2.Epoch == "" {
		t.Fatalf("live connection told %+v after the stream was recreated (old epoch %s)", r2, r.Epoch)
	}
	// The new stream's sequences start again at 1: they reach the live
	// connection even though they are lower than what it had.
	jsPublish(t, js, "ws.send.user.u1", "user", 3)
	if got := readNumbered(t, live, 1); got[0].N != 3 || got[0].seq >= seq {
		t.Fatalf("after the reset got %+v", got)
	}
	// The new stream gets past the old position: only the epoch tells
	// that the old position means nothing here.
	for n := 4; uint64(n) <= seq+2; n++ {
		jsPublish(t, js, "ws.send.user.u1", "user", n)
	}
	c := edgetest.Dial(t, sinceQuery(e.URL, r.Epoch, seq), bearer(token(t, claims)))
	c.ExpectOK()
	if r3 := expectRecovery(t, c); r3.Recovered || r3.Epoch != r2.Epoch {
		t.Fatalf("old epoch recovered: %+v", r3)
	}
}

func TestHistory_MalformedSince(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e := startEdge(t, ns, historyEnv("e1"))
	claims := map[string]any{"sub": "u1"}
	first := e.dial(t, claims)
	epoch := expectRecovery(t, first).Epoch
	jsPublish(t, js, "ws.send.user.u1", "user", 0)
	jsPublish(t, js, "ws.send.user.other", "other", 0)
	readNumbered(t, first, 1)

	queries := []string{"abc", epoch + ":-1", epoch + ":1.5", epoch + ":99999999999999999999999", ":3", "unknown:1", epoch + ":999999"}
	frames := []any{
		map[string]any{"epoch": 1, "seq": 1},
		map[string]any{"epoch": epoch, "seq": -5},
		map[string]any{"epoch": epoch, "seq": "1"},
		map[string]any{"epoch": epoch, "seq": 1e30},
		map[string]any{"epoch": epoch},
		"since",
		[]int{1, 2},
		map[string]any{"epoch": "unknown", "seq": 0},
		map[string]any{"epoch": epoch, "seq": 1 << 40},
	}
	check := func(t *testing.T, c *edgetest.Client) {
		t.Helper()
		c.ExpectOK()
		if r := expectRecovery(t, c); r.Recovered || r.Count != 0 || r.Epoch != epoch {
			t.Fatalf("recovery %+v", r)
		}
		// The connection works, and gets only its own messages.
		n := jsPublish(t, js, "ws.send.user.u1", "user", 1)
		got := readNumbered(t, c, 1)
		if got[0].T != "user" || got[0].seq != n {
			t.Fatalf("got %+v", got)
		}
	}
	for _, q := range queries {
		t.Run("query "+q, func(t *testing.T) {
			c := edgetest.Dial(t, e.URL+"?since="+url.QueryEscape(q), bearer(token(t, claims)))
			check(t, c)
		})
	}
	for i, since := range frames {
		t.Run(fmt.Sprintf("frame %d", i), func(t *testing.T) {
			c := edgetest.Dial(t, e.URL, nil)
			c.Send("Client/authentication", map[string]any{"token": token(t, claims), "since": since})
			check(t, c)
		})
	}
	if e.status("/readyz") != http.StatusOK {
		t.Fatal("edge not ready after bad input")
	}
}

// TestHistory_Off keeps today's frames: no Server/recovery, no seq, and a
// since is ignored.
func TestHistory_Off(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_ID": "e1"})
	c := edgetest.Dial(t, e.URL+"?since=x:1", bearer(token(t, map[string]any{"sub": "u1"})))
	c.ExpectOK()
	publish(t, nc, "ws.send.user.u1", `{"action":"m","details":1}`)
	// Next, not Expect, which would pass over a Server/recovery.
	if f := c.Next(); f.Action != "m" || seqOf(t, f) != 0 {
		t.Fatalf("got %s, want the message without seq and no Server/recovery before it", f)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.Stream(context.Background(), "WS_HISTORY"); err == nil {
		t.Fatal("stream created with history off")
	}
}

// TestHistory_ReconnectStormIsQueued: with one replay slot, 30 connections
// recovering at once all recover completely, one after another, while a
// live connection keeps getting its messages.
func TestHistory_ReconnectStormIsQueued(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e := startEdge(t, ns, historyEnv("e1", "EDGE_HISTORY_REPLAYS", "1"))
	bystander := e.dial(t, map[string]any{"sub": "bystander"})
	epoch := expectRecovery(t, bystander).Epoch
	const users = 30
	for i := range users {
		for n := 1; n <= 3; n++ {
			jsPublish(t, js, fmt.Sprintf("ws.send.user.s%d", i), "user", n)
		}
	}
	storm := make([]*edgetest.Client, users)
	for i := range storm {
		storm[i] = edgetest.Dial(t, e.URL+"?since="+epoch+":0", bearer(token(t, map[string]any{"sub": fmt.Sprintf("s%d", i)})))
	}
	for n := 1; n <= 20; n++ {
		jsPublish(t, js, "ws.send.user.bystander", "user", n)
	}
	checkExactlyOnceInOrder(t, readNumbered(t, bystander, 20), []string{"user"}, 1, 20)
	for i, c := range storm {
		c.ExpectOK()
		if r := expectRecovery(t, c); !r.Recovered || r.Count != 3 {
			t.Fatalf("client %d: %+v", i, r)
		}
		checkExactlyOnceInOrder(t, readNumbered(t, c, 3), []string{"user"}, 1, 3)
	}
}

// TestHistory_ARecoveryHoldsNoAuthenticationSlot: the authentication
// budget bounds authentications, not the recoveries after them. With one
// authentication slot and no queue, a client stuck in its recovery (it
// does not read a replay larger than its socket's buffers) keeps no other
// client from authenticating: the next one gets ok and its recovery, not
// 503 and 1013 as when a recovering connection kept its slot.
func TestHistory_ARecoveryHoldsNoAuthenticationSlot(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	e := startEdge(t, ns, historyEnv("e1", "EDGE_AUTH_CONCURRENCY", "1", "EDGE_AUTH_QUEUE", "0"))
	first := e.dial(t, map[string]any{"sub": "first"})
	epoch := expectRecovery(t, first).Epoch

	// 16 MiB of replay to a client with a 4 KiB receive buffer: more than
	// its socket and the edge's hold.
	big := strings.Repeat("x", 512<<10)
	for range 32 {
		if _, err := js.Publish(context.Background(), "ws.send.user.stuck", []byte(`{"action":"m","details":"`+big+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	small := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); cerr != nil {
			return cerr
		}
		return err
	}}
	d := websocket.Dialer{NetDialContext: small.DialContext}
	replays := e.metricSum(t, "wsgate_edge_history_replays_total")
	stuck, resp, err := d.Dial(e.URL+"?since="+epoch+":0", bearer(token(t, map[string]any{"sub": "stuck"})))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	defer stuck.Close()
	// Its replay has been read (the counter counts it before it is sent)
	// and is being written to a socket nobody reads.
	edgetest.Eventually(t, "the stuck client's replay read", func() bool {
		return e.metricSum(t, "wsgate_edge_history_replays_total") == replays+1
	})

	next := e.dial(t, map[string]any{"sub": "next"})
	if r := expectRecovery(t, next); r.Epoch != epoch {
		t.Fatalf("next client's recovery: %+v", r)
	}
	publish(t, nc, "ws.send.user.next", `{"action":"live"}`)
	next.Expect("live")
}
