package devstack_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// Presence timing of these tests: short, so that expiries happen within a
// test, yet long enough for a loaded machine to renew a lease in time.
const (
	testLease = 2 * time.Second
	testGrace = time.Second
	// slack is what a loaded machine may add to lease + grace before the
	// events of a dead edge are all out (the kill soak's target is 2 s).
	slack = 3 * time.Second
)

// runJetStream starts an in-process NATS server with JetStream.
func runJetStream(t *testing.T) *natsserver.Server {
	t.Helper()
	return edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
}

func presenceEdge(t *testing.T, natsURL, id string, env ...string) (*proc, string) {
	t.Helper()
	return startEdgeProc(t, natsURL, id, append([]string{"WS_PRESENCE=memory", "WS_PRESENCE_LEASE=" + testLease.String()}, env...)...)
}

func presenceDispatcher(t *testing.T, natsURL string, grace time.Duration) *proc {
	t.Helper()
	p := start(t, "dispatcher", "NATS_URL="+natsURL, "DISPATCHER_ADDR=127.0.0.1:0",
		"WS_PRESENCE=memory", "WS_PRESENCE_GRACE="+grace.String())
	p.waitLog(t, "presence loaded")
	return p
}

// events records the lifecycle events published on ws.in.Client/*.
type events struct {
	mu  sync.Mutex
	all []event
}

type event struct {
	action     string
	user       string
	connection string
	code       int
	at         time.Time
}

func recordEvents(t *testing.T, nc *nats.Conn) *events {
	t.Helper()
	ev := &events{}
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.Subscribe("ws.in.>", func(m *nats.Msg) {
		if !strings.HasPrefix(m.Subject, "ws.in.Client/") {
			return
		}
		if err := check.Check(schemacheck.Envelope, m.Data); err != nil {
			t.Errorf("%s: %v", m.Data, err)
		}
		var env wire.Envelope
		if err := json.Unmarshal(m.Data, &env); err != nil {
			return
		}
		e := event{action: env.Action, user: env.User, connection: env.Connection, at: time.Now()}
		var d struct {
			Code int    `json:"code"`
			User string `json:"user"`
		}
		_ = json.Unmarshal(env.Details, &d)
		e.code = d.Code
		if (env.Action == wire.ActionOnline || env.Action == wire.ActionOffline) && d.User != env.User {
			t.Errorf("%s details name %q, envelope %q", env.Action, d.User, env.User)
		}
		ev.mu.Lock()
		ev.all = append(ev.all, e)
		ev.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ev
}

// count returns how many recorded events satisfy f.
func (ev *events) count(f func(event) bool) int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	n := 0
	for _, e := range ev.all {
		if f(e) {
			n++
		}
	}
	return n
}

func (ev *events) of(action, user string) int {
	return ev.count(func(e event) bool { return e.action == action && e.user == user })
}

// waitEvent waits until action has been published for user n times.
func (ev *events) wait(t *testing.T, action, user string, n int) {
	t.Helper()
	edgetest.Eventually(t, fmt.Sprintf("%d %s for %s", n, action, user), func() bool { return ev.of(action, user) >= n })
}

// ask sends a presence request and checks the answer against its schema.
func ask(t *testing.T, nc *nats.Conn, subject, payload string, into any) {
	t.Helper()
	m, err := nc.Request(subject, []byte(payload), edgetest.Timeout)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	schema := schemacheck.PresenceUser
	switch {
	case strings.Contains(string(m.Data), `"error"`):
		schema = schemacheck.PresenceError
	case strings.Contains(subject, ".presence.group."):
		schema = schemacheck.PresenceGroup
	}
	if err := check.Check(schema, m.Data); err != nil {
		t.Fatalf("%s answered %s: %v", subject, m.Data, err)
	}
	if err := json.Unmarshal(m.Data, into); err != nil {
		t.Fatal(err)
	}
}

func userPresence(t *testing.T, nc *nats.Conn, user string) wire.PresenceUserAnswer {
	t.Helper()
	var a wire.PresenceUserAnswer
	ask(t, nc, "ws.presence.user."+user, "", &a)
	return a
}

func groupPresence(t *testing.T, nc *nats.Conn, group, payload string) wire.PresenceGroupAnswer {
	t.Helper()
	var a wire.PresenceGroupAnswer
	ask(t, nc, "ws.presence.group."+group, payload, &a)
	return a
}

// connsOn counts the connections of a on edge.
func connsOn(a wire.PresenceUserAnswer, edge string) int {
	n := 0
	for _, c := range a.Connections {
		if strings.HasPrefix(c.Connection, edge+".") {
			n++
		}
	}
	return n
}

func groupToken(t *testing.T, user string, groups ...string) http.Header {
	t.Helper()
	return http.Header(bearer(edgetest.Token(t, secret, map[string]any{"sub": user, "groups": groups})))
}

// TestPresence_AnswersAcrossEdgesAndTabs: users with several tabs on two
// edges are answered right by user and by group (counts, members, limit),
// and again after tabs close; groups joined at run time are answered as
// the token's are; bad requests get 400.
// Fails when: the edge does not record connections (gateway's p.Add), or
// does not delete them on close (Remove), or does not rewrite a record
// when its connection's groups change (edge.go's GroupsChanged), or the
// index does not count a user once per group however many tabs
// (group.users).
func TestPresence_AnswersAcrossEdgesAndTabs(t *testing.T) {
	ns := runJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	_, e1 := presenceEdge(t, ns.ClientURL(), "edge1")
	_, e2 := presenceEdge(t, ns.ClientURL(), "edge2")
	presenceDispatcher(t, ns.ClientURL(), testGrace)

	dial := func(addr, user string, groups ...string) *edgetest.Client {
		c := edgetest.Dial(t, wsURL(addr), groupToken(t, user, groups...))
		c.ExpectOK()
		return c
	}
	ann1 := dial(e1, "ann", "room-5")
	ann2 := dial(e1, "ann", "room-5")
	dial(e2, "ann", "room-5")
	dial(e2, "bob", "room-5", "room-6")
	dial(e2, "zoe")

	edgetest.Eventually(t, "ann: 2 tabs on edge1, 1 on edge2", func() bool {
		a := userPresence(t, nc, "ann")
		return a.Online && len(a.Connections) == 3 && connsOn(a, "edge1") == 2 && connsOn(a, "edge2") == 1
	})
	edgetest.Eventually(t, "room-5: ann and bob, 4 connections", func() bool {
		g := groupPresence(t, nc, "room-5", "")
		return g.Users == 2 && g.Connections == 4 && strings.Join(g.Members, ",") == "ann,bob"
	})
	if g := groupPresence(t, nc, "room-5", `{"limit":1}`); g.Users != 2 || g.Connections != 4 || len(g.Members) != 1 {
		t.Fatalf("room-5 with limit 1: %+v", g)
	}
	if g := groupPresence(t, nc, "room-5", `{"limit":0}`); g.Users != 2 || len(g.Members) != 0 {
		t.Fatalf("room-5 with limit 0: %+v", g)
	}
	if g := groupPresence(t, nc, "room-6", ""); g.Users != 1 || g.Connections != 1 || g.Members[0] != "bob" {
		t.Fatalf("room-6: %+v", g)
	}
	if a := userPresence(t, nc, "nobody"); a.Online || len(a.Connections) != 0 {
		t.Fatalf("nobody: %+v", a)
	}
	for _, bad := range []string{`{"limit":-1}`, `{"limt":1}`, `[1]`} {
		var e wire.PresenceError
		ask(t, nc, "ws.presence.group.room-5", bad, &e)
		if e.Error.Code != 400 {
			t.Fatalf("payload %s: %+v", bad, e)
		}
	}

	// Both of ann's tabs on edge1 close: one connection (edge2's) is left.
	_ = ann1.WS.Close()
	_ = ann2.WS.Close()
	edgetest.Eventually(t, "ann: only the edge2 tab", func() bool {
		a := userPresence(t, nc, "ann")
		return a.Online && len(a.Connections) == 1 && connsOn(a, "edge2") == 1
	})
	edgetest.Eventually(t, "room-5: 2 users, 2 connections", func() bool {
		g := groupPresence(t, nc, "room-5", "")
		return g.Users == 2 && g.Connections == 2
	})

	// Groups joined at run time are recorded as the token's are (§9).
	control := func(subject string) {
		t.Helper()
		m, err := nc.Request(subject, []byte(`{"groups":["lobby"]}`), edgetest.Timeout)
		if err != nil || string(m.Data) != `{"ok":true}` {
			t.Fatalf("%s: %v %v", subject, m, err)
		}
	}
	control("ws.ctl.join.user.zoe")
	control("ws.ctl.join.user.ann")
	edgetest.Eventually(t, "lobby, joined: ann and zoe", func() bool {
		g := groupPresence(t, nc, "lobby", "")
		return g.Users == 2 && g.Connections == 2 && strings.Join(g.Members, ",") == "ann,zoe"
	})
	control("ws.ctl.leave.user.ann")
	edgetest.Eventually(t, "lobby, after ann left: zoe", func() bool {
		g := groupPresence(t, nc, "lobby", "")
		return g.Users == 1 && g.Connections == 1 && strings.Join(g.Members, ",") == "zoe"
	})
}

// TestPresence_ReloadWithinGraceAndRealDisconnect: a user's first
// connection fires one Client/online; a reload (close, reconnect at once)
// fires neither offline nor online; a real disconnect fires exactly one
// Client/offline after the grace, with two dispatchers racing for it.
// Fails when: the edge fires online on every connection (touchUser not by
// Create), the dispatchers do not wait for the grace (due's zeroSince
// check), or both fire offline (a plain Delete instead of the CAS purge).
func TestPresence_ReloadWithinGraceAndRealDisconnect(t *testing.T) {
	const grace = 3 * time.Second
	ns := runJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	ev := recordEvents(t, nc)
	_, e1 := presenceEdge(t, ns.ClientURL(), "edge1")
	presenceDispatcher(t, ns.ClientURL(), grace)
	presenceDispatcher(t, ns.ClientURL(), grace)
	dial := func(user string) *edgetest.Client {
		c := edgetest.Dial(t, wsURL(e1), http.Header(bearer(token(t, user))))
		c.ExpectOK()
		return c
	}

	ann := dial("ann")
	bob := dial("bob")
	ev.wait(t, wire.ActionOnline, "ann", 1)
	ev.wait(t, wire.ActionOnline, "bob", 1)

	// ann reloads; bob leaves at the same time and is the clock: once his
	// offline is out, the grace has passed for ann's close too.
	_ = ann.WS.Close()
	_ = bob.WS.Close()
	ann = dial("ann")
	ev.wait(t, wire.ActionOffline, "bob", 1)
	if n := ev.of(wire.ActionOffline, "ann"); n != 0 {
		t.Fatalf("ann reloaded within the grace and got %d Client/offline", n)
	}
	if n := ev.of(wire.ActionOnline, "ann"); n != 1 {
		t.Fatalf("ann reloaded within the grace and got %d Client/online in all", n)
	}

	// ann leaves for real; carl, leaving later, is the clock again.
	closed := time.Now()
	_ = ann.WS.Close()
	carl := dial("carl")
	_ = carl.WS.Close()
	ev.wait(t, wire.ActionOffline, "ann", 1)
	ev.wait(t, wire.ActionOffline, "carl", 1)
	if n := ev.of(wire.ActionOffline, "ann"); n != 1 {
		t.Fatalf("ann got %d Client/offline, want 1", n)
	}
	var at time.Time
	ev.count(func(e event) bool {
		if e.action == wire.ActionOffline && e.user == "ann" {
			at = e.at
		}
		return false
	})
	if d := at.Sub(closed); d < grace {
		t.Fatalf("Client/offline %s after the close, before the grace (%s)", d, grace)
	}
	if a := userPresence(t, nc, "ann"); a.Online {
		t.Fatalf("ann still online: %+v", a)
	}
	if n := ev.of(wire.ActionDisconnection, "ann"); n != 2 {
		t.Fatalf("ann: %d Client/disconnection for 2 connections", n)
	}
}

// lightConn is a WebSocket client that only answers the edge's pings: a
// thousand of them cost little.
type lightConn struct {
	ws   *websocket.Conn
	done chan struct{}
}

func dialLight(t *testing.T, addr, user string, groups ...string) (*lightConn, error) {
	t.Helper()
	tok := edgetest.Token(t, secret, map[string]any{"sub": user, "groups": groups})
	ws, _, err := websocket.DefaultDialer.Dial(wsURL(addr), http.Header(bearer(tok)))
	if err != nil {
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(edgetest.Timeout))
	_, data, err := ws.ReadMessage()
	if err != nil || string(data) != `["Client/authentication","ok"]` {
		_ = ws.Close()
		return nil, fmt.Errorf("%s: no ok (%s, %v)", user, data, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	c := &lightConn{ws: ws, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { _ = ws.Close(); <-c.done })
	return c, nil
}

// dialMany opens n connections in parallel (8 at a time).
func dialMany(t *testing.T, n int, dial func(i int) (*lightConn, error)) []*lightConn {
	t.Helper()
	conns := make([]*lightConn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial(i)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return conns
}

// TestPresence_EdgeKill9 is the crash test: edge1 holds 1,000
// connections of 300 users, 50 of whom also have a tab on edge2; two
// dispatchers run. After edge1's SIGKILL, within lease + grace (plus the
// machine's slack): exactly one Client/disconnection 1006 per edge1
// connection, exactly one Client/offline per user left with none, none for
// the 50; presence holds no ghost afterwards.
// Fails when: the dispatchers do not reap on the lease's expiry marker
// (applyLease ignoring deletes), reap with a plain Delete (two 1006 per
// connection), or fire offline for users with a tab elsewhere.
func TestPresence_EdgeKill9(t *testing.T) {
	const (
		conns   = 1000
		users   = 300
		survive = 50 // users 0..49 also hold a tab on edge2
	)
	ns := runJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	ev := recordEvents(t, nc)
	edge1, e1 := presenceEdge(t, ns.ClientURL(), "edge1")
	_, e2 := presenceEdge(t, ns.ClientURL(), "edge2")
	presenceDispatcher(t, ns.ClientURL(), testGrace)
	presenceDispatcher(t, ns.ClientURL(), testGrace)
	name := func(i int) string { return fmt.Sprintf("u%03d", i) }

	dialMany(t, conns, func(i int) (*lightConn, error) { return dialLight(t, e1, name(i%users), "everyone") })
	dialMany(t, survive, func(i int) (*lightConn, error) { return dialLight(t, e2, name(i), "everyone") })
	edgetest.Eventually(t, "everyone in presence", func() bool {
		g := groupPresence(t, nc, "everyone", `{"limit":0}`)
		return g.Users == users && g.Connections == conns+survive
	})
	online := ev.count(func(e event) bool { return e.action == wire.ActionOnline })
	if online != users {
		t.Fatalf("%d Client/online for %d users", online, users)
	}
	// The connections of edge1, as their authentication events named them.
	onEdge1 := map[string]string{}
	ev.count(func(e event) bool {
		if e.action == wire.ActionAuthentication && strings.HasPrefix(e.connection, "edge1.") {
			onEdge1[e.connection] = e.user
		}
		return false
	})
	if len(onEdge1) != conns {
		t.Fatalf("%d authentications on edge1, want %d", len(onEdge1), conns)
	}

	killed := time.Now()
	if err := edge1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := testLease + testGrace + slack
	isEnd := func(e event) bool {
		return e.action == wire.ActionDisconnection && strings.HasPrefix(e.connection, "edge1.")
	}
	isOffline := func(e event) bool { return e.action == wire.ActionOffline }
	for ev.count(isEnd) < conns || ev.count(isOffline) < users-survive {
		if time.Since(killed) > deadline {
			t.Fatalf("%s after the kill: %d of %d Client/disconnection, %d of %d Client/offline",
				deadline, ev.count(isEnd), conns, ev.count(isOffline), users-survive)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("all events %s after the kill (lease %s, grace %s)", time.Since(killed).Round(time.Millisecond), testLease, testGrace)

	// A marker: a user who comes and goes on edge2 now gets their offline
	// after everything a second dispatcher could still have published.
	marker, err := dialLight(t, e2, "marker")
	if err != nil {
		t.Fatal(err)
	}
	_ = marker.ws.Close()
	ev.wait(t, wire.ActionOffline, "marker", 1)

	perConn := map[string]int{}
	ev.count(func(e event) bool {
		if isEnd(e) {
			perConn[e.connection]++
			if e.code != 1006 || onEdge1[e.connection] != e.user {
				t.Errorf("%s: code %d, user %q (want 1006, %q)", e.connection, e.code, e.user, onEdge1[e.connection])
			}
		}
		return false
	})
	for c := range onEdge1 {
		if perConn[c] != 1 {
			t.Errorf("%s: %d Client/disconnection", c, perConn[c])
		}
	}
	for i := range users {
		want := 1
		if i < survive {
			want = 0
		}
		if n := ev.of(wire.ActionOffline, name(i)); n != want {
			t.Errorf("%s: %d Client/offline, want %d", name(i), n, want)
		}
	}
	g := groupPresence(t, nc, "everyone", `{"limit":10000}`)
	if g.Users != survive || g.Connections != survive {
		t.Fatalf("after the kill: %d users, %d connections in presence, want %d each (ghosts)", g.Users, g.Connections, survive)
	}
	sort.Strings(g.Members)
	if g.Members[0] != name(0) || g.Members[survive-1] != name(survive-1) {
		t.Fatalf("members %v", g.Members)
	}
	if a := userPresence(t, nc, name(survive)); a.Online {
		t.Fatalf("%s is a ghost: %+v", name(survive), a)
	}
}

// TestPresence_RestartedEdgeDoesNotResurrect: edge1 is SIGKILLed and a new
// process with the same EDGE_ID starts before the old lease expired. The
// new lease's epoch tells the dispatchers that the old connections are
// dead: each gets one Client/disconnection 1006 and leaves presence, while
// the new process's connections stay.
// Fails when: the edge reuses its epoch across starts (newEpoch), or the
// index does not judge connections against the lease epoch (judge).
func TestPresence_RestartedEdgeDoesNotResurrect(t *testing.T) {
	ns := runJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	ev := recordEvents(t, nc)
	// A long lease: only the new epoch can end the old connections in time.
	const lease = "30s"
	old, e1 := presenceEdge(t, ns.ClientURL(), "edge1", "WS_PRESENCE_LEASE="+lease)
	presenceDispatcher(t, ns.ClientURL(), testGrace)
	presenceDispatcher(t, ns.ClientURL(), testGrace)

	if _, err := dialLight(t, e1, "ann", "room"); err != nil {
		t.Fatal(err)
	}
	if _, err := dialLight(t, e1, "ann", "room"); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, "ann's 2 tabs in presence", func() bool { return len(userPresence(t, nc, "ann").Connections) == 2 })
	if err := old.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = old.wait() // killed: its exit status says nothing
	_, e1 = presenceEdge(t, ns.ClientURL(), "edge1", "WS_PRESENCE_LEASE="+lease)
	if _, err := dialLight(t, e1, "bob", "room"); err != nil {
		t.Fatal(err)
	}

	ev.wait(t, wire.ActionDisconnection, "ann", 2)
	ev.wait(t, wire.ActionOffline, "ann", 1)
	edgetest.Eventually(t, "room: only bob", func() bool {
		g := groupPresence(t, nc, "room", "")
		return g.Users == 1 && g.Connections == 1 && g.Members[0] == "bob"
	})
	// bob, on the new process, is no casualty; a marker bounds the wait
	// for duplicates.
	marker, err := dialLight(t, e1, "marker")
	if err != nil {
		t.Fatal(err)
	}
	_ = marker.ws.Close()
	ev.wait(t, wire.ActionOffline, "marker", 1)
	if n := ev.of(wire.ActionDisconnection, "ann"); n != 2 {
		t.Fatalf("ann: %d Client/disconnection for 2 connections", n)
	}
	if n := ev.count(func(e event) bool { return e.action == wire.ActionDisconnection && e.user == "ann" && e.code == 1006 }); n != 2 {
		t.Fatalf("ann: %d of 2 Client/disconnection with code 1006 (the edge died)", n)
	}
	if n := ev.of(wire.ActionOffline, "ann"); n != 1 {
		t.Fatalf("ann: %d Client/offline", n)
	}
	if n := ev.of(wire.ActionDisconnection, "bob") + ev.of(wire.ActionOffline, "bob"); n != 0 {
		t.Fatalf("bob, connected to the new process, got %d end events", n)
	}
	if a := userPresence(t, nc, "bob"); !a.Online || len(a.Connections) != 1 {
		t.Fatalf("bob: %+v", a)
	}
}

// TestWsgateDev_PresenceOn: `make run` with WS_PRESENCE=memory (the dev
// stack's embedded NATS has JetStream) records a connection and answers for it.
// Fails when the embedded NATS runs without JetStream (wsgate-dev exits).
func TestWsgateDev_PresenceOn(t *testing.T) {
	text := startWsgateDev(t, "WS_PRESENCE=memory")
	wsURL := bannerField(t, text, `WebSocket\s+(\S+)`)
	natsURL := bannerField(t, text, `NATS\s+(nats://\S+)`)
	tok := bannerField(t, text, `token \(user 42, 24 h\):\n\s+(\S+)`)
	c := edgetest.Dial(t, wsURL, http.Header(bearer(tok)))
	c.ExpectOK()
	nc := edgetest.Connect(t, natsURL)
	edgetest.Eventually(t, "user 42 online", func() bool { return userPresence(t, nc, "42").Online })
}

// TestPresence_KillRightAfterOkLosesNoEvent: 100 users connect to edge1 at
// once, and edge1 is SIGKILLed the moment the last of them read its ok.
// A connection told ok is in presence already: each gets exactly one
// Client/disconnection 1006, and each user exactly one Client/online and
// then one Client/offline, although the edge died with its writes just
// done. Fails when the gateway answers ok before the record is stored
// (presence Add queued after the ok), or when the edge fires Client/online
// itself after creating the user key (the dispatchers' claim in goOnline).
func TestPresence_KillRightAfterOkLosesNoEvent(t *testing.T) {
	const users = 100
	ns := runJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	ev := recordEvents(t, nc)
	edge1, e1 := presenceEdge(t, ns.ClientURL(), "edge1")
	presenceDispatcher(t, ns.ClientURL(), testGrace)
	presenceDispatcher(t, ns.ClientURL(), testGrace)
	name := func(i int) string { return fmt.Sprintf("k%03d", i) }

	var wg sync.WaitGroup
	errs := make(chan error, users)
	for i := range users {
		wg.Go(func() {
			if _, err := dialLight(t, e1, name(i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	if err := edge1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	deadline := testLease + testGrace + slack
	isEnd := func(e event) bool { return e.action == wire.ActionDisconnection }
	isOffline := func(e event) bool { return e.action == wire.ActionOffline }
	for ev.count(isEnd) < users || ev.count(isOffline) < users {
		if time.Since(killed) > deadline {
			t.Fatalf("%s after the kill: %d of %d Client/disconnection, %d of %d Client/offline",
				deadline, ev.count(isEnd), users, ev.count(isOffline), users)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A marker user on a second edge: its offline comes after anything a
	// second dispatcher could still publish.
	_, e2 := presenceEdge(t, ns.ClientURL(), "edge2")
	marker, err := dialLight(t, e2, "marker")
	if err != nil {
		t.Fatal(err)
	}
	_ = marker.ws.Close()
	ev.wait(t, wire.ActionOffline, "marker", 1)

	for i := range users {
		u := name(i)
		var seq []string
		ev.count(func(e event) bool {
			if e.user == u && e.action != wire.ActionAuthentication {
				seq = append(seq, e.action)
			}
			return false
		})
		if ends := ev.count(func(e event) bool { return isEnd(e) && e.user == u && e.code == 1006 }); ends != 1 {
			t.Errorf("%s: %d Client/disconnection 1006 (events %v)", u, ends, seq)
		}
		if ev.of(wire.ActionOnline, u) != 1 || ev.of(wire.ActionOffline, u) != 1 {
			t.Errorf("%s: events %v, want one Client/online and one Client/offline", u, seq)
		}
	}
}
