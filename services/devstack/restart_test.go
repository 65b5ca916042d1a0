package devstack_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// Load of the dispatcher restart test: loadClients connections each send one
// echo every loadEvery (below the edge's default rate limit of 50/s).
const (
	loadClients = 10
	loadEvery   = 25 * time.Millisecond
	// loadReplies is how many replies show that the load flows: before the
	// fault, and again once the new dispatcher is subscribed.
	loadReplies = 100
)

// dispatcherConnName is the NATS connection name of the dispatcher service.
const dispatcherConnName = "wsgate-dispatcher"

// TestDispatcherRestart_RepliesResumeAndClientsStay: clients send echo
// requests at a steady rate while the dispatcher is killed or stopped and a
// new one is started. Core NATS is at-most-once (README, "Delivery
// guarantees"): requests published while no dispatcher is subscribed are
// lost, and so are the ones a SIGKILLed dispatcher had received. What is
// promised, and checked: no WebSocket client is disconnected, replies resume
// once the new dispatcher is subscribed, every reply a dispatcher published
// reaches its client, a SIGTERMed dispatcher answers every request it had
// received before exiting (drain), and a rolling restart (the new one
// subscribed before the old one is stopped) loses nothing. The figures are
// logged; the NATS server's per-connection counters tell where requests were
// lost.
func TestDispatcherRestart_RepliesResumeAndClientsStay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		rolling bool // the new dispatcher is subscribed before the old one gets sig
	}{
		{"SIGKILL", syscall.SIGKILL, false},
		{"SIGTERM_drain_answers_what_it_received", syscall.SIGTERM, false},
		{"SIGTERM_rolling_loses_nothing", syscall.SIGTERM, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := edgetest.RunNATS(t)
			url := startEdge(t, ns.ClientURL(), "restart")
			clients := make([]*edgetest.Client, loadClients)
			for i := range clients {
				clients[i] = edgetest.Dial(t, url, http.Header(bearer(token(t, fmt.Sprintf("u%d", i)))))
				clients[i].ExpectOK()
			}
			old := startDispatcher(t, ns.ClientURL())
			oldCID := onlyDispatcherConn(t, ns)

			load := startEchoLoad(clients)
			defer load.close()
			edgetest.Eventually(t, "replies before the fault", func() bool { return load.replied.Load() >= loadReplies })
			var next *proc
			if tc.rolling {
				next = startDispatcher(t, ns.ClientURL())
			}
			if err := old.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			exitErr := waitExit(t, old)
			if tc.sig == syscall.SIGTERM && exitErr != nil {
				t.Fatalf("dispatcher exited with %v after SIGTERM, want 0", exitErr)
			}
			if !tc.rolling {
				next = startDispatcher(t, ns.ClientURL())
			}
			_ = next // stopped by its cleanup
			mark := load.replied.Load()
			edgetest.Eventually(t, "replies from the new dispatcher", func() bool { return load.replied.Load() >= mark+loadReplies })
			if err := load.stopSending(); err != nil {
				t.Fatal(err)
			}

			// Every dispatcher has answered what it received (the old one
			// is closed, so its counters are final), and every answer has
			// reached its client.
			var conns map[uint64]*natsserver.ConnInfo
			edgetest.Eventually(t, "the dispatchers' counters settled", func() bool {
				conns = dispatcherConns(t, ns)
				old, ok := conns[oldCID]
				if !ok || old.Stop == nil {
					return false // the server has not seen the old connection close yet
				}
				for _, c := range conns {
					if c.Stop == nil && c.InMsgs != c.OutMsgs { // echo publishes one reply per request
						return false
					}
				}
				return true
			})
			var received, answered int64
			for _, c := range conns {
				received += c.OutMsgs
				answered += c.InMsgs
			}
			edgetest.Eventually(t, fmt.Sprintf("the %d published replies at their clients", answered), func() bool { return load.replied.Load() == answered })

			sent, replied := load.sent.Load(), load.replied.Load()
			oldConn := conns[oldCID]
			t.Logf("dispatcher restart (%s): sent %d, replied %d, lost %d (%d published while no dispatcher was subscribed, %d received by the old dispatcher and not answered)",
				tc.name, sent, replied, sent-replied, sent-received, oldConn.OutMsgs-oldConn.InMsgs)
			for i, c := range clients {
				select {
				case <-c.Done():
					t.Fatalf("client %d was disconnected by the dispatcher restart", i)
				default:
				}
			}
			if err := load.err(); err != nil {
				t.Fatal(err)
			}
			if tc.sig == syscall.SIGTERM && oldConn.InMsgs != oldConn.OutMsgs {
				t.Fatalf("the SIGTERMed dispatcher received %d requests and answered %d", oldConn.OutMsgs, oldConn.InMsgs)
			}
			if tc.rolling && replied != sent {
				t.Fatalf("rolling restart lost %d of %d requests", sent-replied, sent)
			}
			// Per request, not in total: a duplicated reply must not hide a
			// lost one. At most once always (core NATS, one queue group);
			// exactly once in a rolling restart.
			load.mu.Lock()
			defer load.mu.Unlock()
			for i := range clients {
				for ref, n := range load.refs[i] {
					if n > 1 {
						t.Errorf("client %d: %d replies to %s", i, n, ref)
					}
				}
				if !tc.rolling {
					continue
				}
				for n := range load.requests[i] {
					if ref := fmt.Sprintf("r%d", n); load.refs[i][ref] != 1 {
						t.Errorf("client %d: %d replies to %s, want 1 (rolling restart)", i, load.refs[i][ref], ref)
					}
				}
				if want := load.requests[i] + 1; len(load.refs[i]) != want { // and the fence
					t.Errorf("client %d: replies to %d refs, want %d", i, len(load.refs[i]), want)
				}
			}
		})
	}
}

// echoLoad makes every client send ["echo", n, "r<n>"] every loadEvery and
// counts the replies.
type echoLoad struct {
	clients       []*edgetest.Client
	sent, replied atomic.Int64
	quit          chan struct{} // closed by stopSending or close
	quitOnce      sync.Once
	fences        []chan struct{}  // closed by the reader when its fence reply comes
	requests      []int            // per client: its requests r0…r<n-1> before the fence; final once the senders are done
	refs          []map[string]int // per client: replies by ref (under mu)
	closing       atomic.Bool      // set by close: the end of a connection is expected
	senders       sync.WaitGroup
	readers       sync.WaitGroup
	mu            sync.Mutex
	errs          []error
}

// fenceRef is the ref of the last request of each client.
const fenceRef = "fence"

func startEchoLoad(clients []*edgetest.Client) *echoLoad {
	l := &echoLoad{clients: clients, quit: make(chan struct{}), requests: make([]int, len(clients))}
	for i, c := range clients {
		l.fences = append(l.fences, make(chan struct{}))
		l.refs = append(l.refs, map[string]int{})
		l.senders.Add(1)
		l.readers.Add(1)
		go l.send(i, c)
		go l.read(i, c)
	}
	return l
}

func (l *echoLoad) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *echoLoad) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.errs...)
}

// send is the client's only writer.
func (l *echoLoad) send(i int, c *edgetest.Client) {
	defer l.senders.Done()
	tick := time.NewTicker(loadEvery)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-l.quit:
			if err := c.TrySend("echo", n, fenceRef); err != nil {
				l.fail(fmt.Errorf("client %d: send the fence: %w", i, err))
				return
			}
			l.sent.Add(1)
			return
		case <-tick.C:
		}
		if err := c.TrySend("echo", n, fmt.Sprintf("r%d", n)); err != nil {
			l.fail(fmt.Errorf("client %d: send: %w", i, err))
			return
		}
		l.requests[i] = n + 1
		l.sent.Add(1)
	}
}

// read counts the client's replies until close. It goes on after the fence
// reply: handlers run concurrently, so replies may come in any order.
func (l *echoLoad) read(i int, c *edgetest.Client) {
	defer l.readers.Done()
	for {
		f, ok := c.Take()
		if !ok {
			select {
			case <-c.Done():
				if !l.closing.Load() {
					l.fail(fmt.Errorf("client %d: connection ended", i))
				}
				return
			default:
				continue // no frame within edgetest.Timeout; stopSending reports a missing fence
			}
		}
		if f.Action != "echo" {
			l.fail(fmt.Errorf("client %d: unexpected frame %s", i, f))
			continue
		}
		var ref string
		if json.Unmarshal(f.Ref, &ref) != nil {
			l.fail(fmt.Errorf("client %d: reply without a string ref: %s", i, f))
			continue
		}
		l.mu.Lock()
		l.refs[i][ref]++
		l.mu.Unlock()
		l.replied.Add(1)
		if string(f.Ref) == `"`+fenceRef+`"` {
			close(l.fences[i])
		}
	}
}

// stopSending makes every client send its last request, the fence, and
// waits for the fence replies (stopSending is called once a dispatcher is
// subscribed, so every fence is answered).
func (l *echoLoad) stopSending() error {
	l.quitOnce.Do(func() { close(l.quit) })
	l.senders.Wait()
	timeout := time.After(edgetest.Timeout)
	for i, fence := range l.fences {
		select {
		case <-fence:
		case <-timeout:
			return errors.Join(l.err(), fmt.Errorf("client %d: no fence reply within %v", i, edgetest.Timeout))
		}
	}
	return l.err()
}

// close stops the senders, closes the clients and waits for the readers.
func (l *echoLoad) close() {
	l.quitOnce.Do(func() { close(l.quit) })
	l.senders.Wait()
	l.closing.Store(true)
	for _, c := range l.clients {
		_ = c.WS.Close()
	}
	l.readers.Wait()
}

// waitExit waits for p, which has been signalled, to exit and returns how.
func waitExit(t *testing.T, p *proc) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("wait: %v", err)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit", p.cmd.Path)
		return nil
	}
}

// dispatcherConns returns the dispatchers' NATS connections, open and
// closed, by connection id, with the server's counters: OutMsgs is what the
// server delivered to the dispatcher, InMsgs what the dispatcher published.
func dispatcherConns(t *testing.T, ns *natsserver.Server) map[uint64]*natsserver.ConnInfo {
	t.Helper()
	cz, err := ns.Connz(&natsserver.ConnzOptions{State: natsserver.ConnAll})
	if err != nil {
		t.Fatal(err)
	}
	m := map[uint64]*natsserver.ConnInfo{}
	for _, c := range cz.Conns {
		if c.Name == dispatcherConnName {
			m[c.Cid] = c
		}
	}
	return m
}

// onlyDispatcherConn returns the id of the one dispatcher connection.
func onlyDispatcherConn(t *testing.T, ns *natsserver.Server) uint64 {
	t.Helper()
	conns := dispatcherConns(t, ns)
	if len(conns) != 1 {
		t.Fatalf("%d dispatcher connections, want 1", len(conns))
	}
	for cid := range conns {
		return cid
	}
	return 0
}
