package devstack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// churnEdge is an edge process of the history churn tests.
type churnEdge struct {
	p    *proc
	url  string
	gone atomic.Bool // killed or draining: clients go elsewhere
}

func startHistoryEdge(t *testing.T, natsURL, id string) *churnEdge {
	t.Helper()
	p, addr := startEdgeProc(t, natsURL, id, "WS_HISTORY=memory", "WS_HISTORY_MAX_PER_SUBJECT=100000",
		"EDGE_DRAIN_TIMEOUT=1s")
	return &churnEdge{p: p, url: wsURL(addr)}
}

// churnClient is one user's connection that reconnects whenever it ends
// (and at random moments on its own), to a random edge still up, with
// ?since= from the last Server/recovery and the last seq it got.
type churnClient struct {
	user, session string
	calm          *atomic.Bool // set: the client does not drop its connection on its own

	mu         sync.Mutex
	got        map[string][]int // target → numbers in arrival order
	epoch      string
	last       uint64
	problems   []string
	reconnects int
	conns      int              // connections made; the current one is number conns
	on         *churnEdge       // the edge of the current connection; nil between connections
	ended      map[int]churnEnd // connection number → how it ended
}

// churnEnd is how a churn client's connection ended.
type churnEnd int

const (
	endedByClient churnEnd = iota + 1 // the client dropped it (churn) or the test was over
	endedByEdge                       // the edge closed it, or its socket went away
)

func (c *churnClient) problem(format string, args ...any) {
	c.mu.Lock()
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// run connects and reads until ctx is done.
func (c *churnClient) run(ctx context.Context, t *testing.T, edges []*churnEdge, rnd *rand.Rand) {
	tok := edgetest.Token(t, secret, map[string]any{"sub": c.user, "sid": c.session, "groups": []string{"everyone"}})
	for ctx.Err() == nil {
		var up []*churnEdge
		for _, e := range edges {
			if !e.gone.Load() {
				up = append(up, e)
			}
		}
		edge := up[rnd.IntN(len(up))]
		url := edge.url
		c.mu.Lock()
		withSince := c.epoch != ""
		if withSince {
			url += "?since=" + c.epoch + ":" + strconv.FormatUint(c.last, 10)
		}
		c.mu.Unlock()
		conn, _, err := edgetest.TryDial(t, url, http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			continue // that edge just went away: another one
		}
		c.mu.Lock()
		c.conns++
		no := c.conns
		c.on = edge
		c.mu.Unlock()
		end := c.read(ctx, conn, withSince, rnd)
		_ = conn.WS.Close()
		c.mu.Lock()
		c.on = nil
		c.ended[no] = end
		c.reconnects++
		c.mu.Unlock()
	}
}

// read handles one connection's frames until it ends, ctx is done, or the
// client decides to drop it, and says which.
func (c *churnClient) read(ctx context.Context, conn *edgetest.Client, withSince bool, rnd *rand.Rand) churnEnd {
	var ok, recovery bool // seen on this connection
	for ctx.Err() == nil {
		f, took := conn.Take()
		if !took {
			select {
			case <-conn.Done():
				return endedByEdge
			default:
				return endedByClient // no frame within the timeout: the load is over
			}
		}
		switch f.Action {
		case "Client/authentication":
			if ok || string(f.Details) != `"ok"` {
				c.problem("unexpected %s", f)
			}
			ok = true
		case "Server/recovery":
			var r struct {
				Epoch     string `json:"epoch"`
				Recovered bool   `json:"recovered"`
			}
			_ = json.Unmarshal(f.Details, &r)
			c.mu.Lock()
			switch {
			case !ok || recovery:
				c.problems = append(c.problems, fmt.Sprintf("Server/recovery not once right after ok: %s", f))
			case withSince && (!r.Recovered || r.Epoch != c.epoch):
				c.problems = append(c.problems, fmt.Sprintf("not recovered: %s", f))
			case !withSince && (r.Recovered || r.Epoch == ""):
				// A first connection has nothing to recover: recovered
				// false, and the stream's epoch to recover from later.
				c.problems = append(c.problems, fmt.Sprintf("first connection's recovery %s, want recovered:false and an epoch", f))
			}
			recovery = true
			c.epoch = r.Epoch
			c.mu.Unlock()
		case "m":
			var parts []json.RawMessage
			var d struct {
				T string `json:"t"`
				N int    `json:"n"`
			}
			if json.Unmarshal(f.Raw, &parts) != nil || len(parts) != 4 || json.Unmarshal(parts[1], &d) != nil {
				c.problem("bad frame %s", f)
				continue
			}
			if !recovery {
				c.problem("message before Server/recovery: %s", f)
			}
			seq, _ := strconv.ParseUint(string(parts[3]), 10, 64)
			c.mu.Lock()
			if seq <= c.last {
				c.problems = append(c.problems, fmt.Sprintf("seq %d after %d: %s", seq, c.last, f))
			}
			c.last = seq
			c.got[d.T] = append(c.got[d.T], d.N)
			// Decided under mu, so that a client counted on an edge while
			// calm is set does not drop that connection afterwards.
			drop := !c.calm.Load() && rnd.IntN(50) == 0
			if drop {
				c.on = nil
			}
			c.mu.Unlock()
			if drop {
				return endedByClient // churn: this client drops its connection now
			}
		default:
			c.problem("unexpected frame %s", f)
		}
	}
	return endedByClient
}

// complete reports whether c has every number of its targets, given how
// many were published to each subject.
func (c *churnClient) complete(published map[string]int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for target, subject := range c.targets() {
		if len(c.got[target]) < published[subject] {
			return false
		}
	}
	return true
}

// targets maps the target names in the messages to their subjects.
func (c *churnClient) targets() map[string]string {
	return map[string]string{
		"user": "ws.send.user." + c.user, "session": "ws.send.session." + c.session,
		"group": "ws.send.group.everyone", "all": "ws.send.all",
	}
}

// check fails the test unless every number of every target arrived once, in order.
func (c *churnClient) check(t *testing.T, published map[string]int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.problems {
		t.Errorf("%s: %s", c.user, p)
	}
	for target, subject := range c.targets() {
		got := c.got[target]
		if len(got) != published[subject] {
			t.Errorf("%s: %s: got %d messages, want %d", c.user, target, len(got), published[subject])
		}
		for i, n := range got {
			if n != i+1 {
				t.Errorf("%s: %s: message %d is number %d (lost or duplicated around it)", c.user, target, i+1, n)
				break
			}
		}
	}
}

// churn runs the history churn scenario: numbered messages to users,
// sessions, a group and all at a steady rate while clients reconnect at
// random moments, across the two edges; disrupt acts on edge1 in the
// middle. Every client must end up with every number of its targets once
// and in order.
func churn(t *testing.T, disrupt func(e *churnEdge)) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	js, _ := jetstream.New(nc)
	edges := []*churnEdge{startHistoryEdge(t, ns.ClientURL(), "edge1"), startHistoryEdge(t, ns.ClientURL(), "edge2")}

	const users = 6
	clients := make([]*churnClient, users)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var calm atomic.Bool
	for i := range clients {
		c := &churnClient{user: fmt.Sprintf("u%d", i), session: fmt.Sprintf("s%d", i), got: map[string][]int{},
			calm: &calm, ended: map[int]churnEnd{}}
		clients[i] = c
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx, t, edges, rand.New(rand.NewPCG(uint64(i), 7))) }()
	}
	defer func() { cancel(); wg.Wait() }()
	edgetest.Eventually(t, "every client connected", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			ok := c.epoch != ""
			c.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})

	// The publisher: one message every tick, round robin over the subjects.
	var subjects []string
	for _, c := range clients {
		subjects = append(subjects, "ws.send.user."+c.user, "ws.send.session."+c.session)
	}
	subjects = append(subjects, "ws.send.group.everyone", "ws.send.all")
	targetOf := func(subject string) string {
		for _, c := range clients {
			for target, s := range c.targets() {
				if s == subject {
					return target
				}
			}
		}
		return ""
	}
	published := map[string]int{}
	publish := func(rounds int) {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for range rounds {
			for _, s := range subjects {
				<-tick.C
				published[s]++
				data, _ := json.Marshal(map[string]any{"action": "m", "details": map[string]any{"t": targetOf(s), "n": published[s]}})
				pctx, pcancel := context.WithTimeout(context.Background(), edgetest.Timeout)
				_, err := js.Publish(pctx, s, data)
				pcancel()
				if err != nil {
					t.Fatalf("publish %s: %v", s, err)
				}
			}
		}
	}
	publish(40)
	// The fault must end connections: calm (no drops of the clients' own)
	// from a moment when a client is on edge1 until every connection that
	// was on it then has ended, which only the fault can do.
	type connRef struct {
		c  *churnClient
		no int
	}
	var onEdge1 []connRef
	edgetest.Eventually(t, "a client on edge1", func() bool {
		calm.Store(true)
		for _, c := range clients {
			c.mu.Lock()
			if c.on == edges[0] {
				onEdge1 = append(onEdge1, connRef{c, c.conns})
			}
			c.mu.Unlock()
		}
		if len(onEdge1) == 0 {
			calm.Store(false)
			return false
		}
		return true
	})
	disrupt(edges[0])
	faultEnded := make(chan int, 1) // how many of onEdge1 the edge ended, once all have ended
	go func() {
		deadline := time.Now().Add(edgetest.Timeout)
		for {
			byEdge, open := 0, 0
			for _, r := range onEdge1 {
				r.c.mu.Lock()
				switch r.c.ended[r.no] {
				case endedByEdge:
					byEdge++
				case 0:
					open++
				}
				r.c.mu.Unlock()
			}
			if open == 0 || time.Now().After(deadline) {
				calm.Store(false)
				faultEnded <- byEdge
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	publish(60)
	if byEdge := <-faultEnded; byEdge != len(onEdge1) {
		t.Fatalf("%d connections were on edge1 at the fault, %d of them ended by it", len(onEdge1), byEdge)
	}

	edgetest.Eventually(t, "every client has every message", func() bool {
		for _, c := range clients {
			if !c.complete(published) {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	reconnects := 0
	for _, c := range clients {
		c.check(t, published)
		reconnects += c.reconnects
	}
	t.Logf("%d connections on edge1 at the fault, all ended by it; %d reconnections in all", len(onEdge1), reconnects)
	if reconnects < users {
		t.Fatalf("only %d reconnections: the scenario did not churn", reconnects)
	}
}

// TestHistory_EdgeKill9UnderLoad_NothingLostNothingRepeated: edge1 dies
// by SIGKILL under a steady numbered load; its clients reconnect to edge2
// with since and recover: 0 lost, 0 duplicated, in order.
func TestHistory_EdgeKill9UnderLoad_NothingLostNothingRepeated(t *testing.T) {
	churn(t, func(e *churnEdge) {
		e.gone.Store(true)
		if err := e.p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHistory_EdgeDrainUnderLoad_NothingLostNothingRepeated: edge1 drains
// (SIGTERM: 1012 spread over EDGE_DRAIN_TIMEOUT) under the same load.
func TestHistory_EdgeDrainUnderLoad_NothingLostNothingRepeated(t *testing.T) {
	churn(t, func(e *churnEdge) {
		e.gone.Store(true)
		if err := e.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	})
}
