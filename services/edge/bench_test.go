package edge_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// End-to-end benchmarks: NATS publish → every targeted WebSocket client has
// the frame, through an in-process edge and NATS server, with real clients
// on loopback. They use only the edge's public API (edge.New, edgetest,
// NATS subjects), so that the same file runs against older versions of the
// edge for a before/after comparison (see docs/MICROBENCH.md).

const benchSecret = "bench-secret-0123456789"

// benchOutbound is a typical outbound message (about 100 bytes of details).
var benchOutbound = []byte(`{"action":"chat/message","details":{"room":"lobby-42","text":"hello there, how is everyone doing today?"}}`)

// benchStack is a NATS server, an edge and one client per user u0..u<n-1>.
type benchStack struct {
	nc      *nats.Conn // the publisher
	clients []*websocket.Conn
	got     benchCounter
}

// benchCounter counts frames received by all clients and signals when the
// count reaches the target.
type benchCounter struct {
	n      atomic.Int64
	target atomic.Int64
	done   chan struct{}
}

func (c *benchCounter) add() {
	if c.n.Add(1) == c.target.Load() {
		c.done <- struct{}{}
	}
}

// expect sets the target to k more frames than received so far.
func (c *benchCounter) expect(k int) { c.target.Store(c.n.Load() + int64(k)) }

// wait waits for the target, failing after timeout.
func (c *benchCounter) wait(b *testing.B, timer *time.Timer) {
	timer.Reset(edgetest.Timeout)
	select {
	case <-c.done:
		timer.Stop()
	case <-timer.C:
		b.Fatalf("received %d frames, want %d", c.n.Load(), c.target.Load())
	}
}

func startBenchStack(b *testing.B, users int) *benchStack {
	b.Helper()
	ns := edgetest.RunNATS(b)
	for k, v := range map[string]string{
		"NATS_URL": ns.ClientURL(), "EDGE_ADDR": "127.0.0.1:0", "EDGE_JWT_SECRET": benchSecret,
		"LOG_LEVEL": "error", "EDGE_DRAIN_TIMEOUT": "200ms",
	} {
		b.Setenv(k, v)
	}
	cfg, err := edge.LoadConfig()
	if err != nil {
		b.Fatal(err)
	}
	srv, err := edge.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			b.Errorf("edge serve: %v", err)
		}
	})
	addr := srv.Addr().String()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	edgetest.Eventually(b, "edge ready", func() bool {
		resp, err := hc.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	s := &benchStack{nc: edgetest.Connect(b, ns.ClientURL()), clients: make([]*websocket.Conn, users)}
	s.got.done = make(chan struct{}, 1)
	url := "ws://" + addr + cfg.Path
	var dialers sync.WaitGroup
	var mu sync.Mutex
	var dialErr error
	var next atomic.Int64
	for range 8 {
		dialers.Go(func() {
			for i := int(next.Add(1) - 1); i < users; i = int(next.Add(1) - 1) {
				ws, err := benchDial(url, fmt.Sprintf("u%d", i))
				if err != nil {
					mu.Lock()
					dialErr = err
					mu.Unlock()
					return
				}
				s.clients[i] = ws
			}
		})
	}
	dialers.Wait()
	var readers sync.WaitGroup
	b.Cleanup(func() {
		for _, ws := range s.clients {
			if ws != nil {
				ws.Close()
			}
		}
		readers.Wait()
	})
	if dialErr != nil {
		b.Fatal(dialErr)
	}
	for _, ws := range s.clients {
		readers.Go(func() {
			for {
				_, r, err := ws.NextReader()
				if err != nil {
					return
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					return
				}
				s.got.add()
			}
		})
	}
	return s
}

// benchDial connects as user and reads up to the edge's authentication ok.
func benchDial(url, user string) (*websocket.Conn, error) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(benchSecret))
	if err != nil {
		return nil, err
	}
	d := websocket.Dialer{HandshakeTimeout: edgetest.Timeout}
	ws, _, err := d.Dial(url, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", user, err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(edgetest.Timeout))
	_, data, err := ws.ReadMessage()
	if err != nil || string(data) != `["Client/authentication","ok"]` {
		ws.Close()
		return nil, fmt.Errorf("authentication of %s: %q, %v", user, data, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, nil
}

// cpuTime is the CPU time (user and system) the process has used so far:
// on a shared machine it is steadier than wall time, which includes waiting
// for other processes.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per op since start: edge, NATS
// server and clients together.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkEdgeBroadcast: one op is a publish on ws.send.all and the wait
// until every one of the clients has the frame.
func BenchmarkEdgeBroadcast(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := startBenchStack(b, n)
			timer := time.NewTimer(edgetest.Timeout)
			b.ReportAllocs()
			var cpu0 time.Duration
			for b.Loop() {
				if cpu0 == 0 {
					cpu0 = cpuTime(b) // setup excluded, as b.Loop excludes it from the timer
				}
				s.got.expect(n)
				if err := s.nc.Publish("ws.send.all", benchOutbound); err != nil {
					b.Fatal(err)
				}
				s.got.wait(b, timer)
			}
			reportCPU(b, cpu0)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// BenchmarkEdgeUnicast: 1000 users connected, one op is a publish on
// ws.send.user.<random user> and the wait until that user's client has it.
func BenchmarkEdgeUnicast(b *testing.B) {
	const users = 1000
	s := startBenchStack(b, users)
	subjects := make([]string, users)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("ws.send.user.u%d", i)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	timer := time.NewTimer(edgetest.Timeout)
	b.ReportAllocs()
	var cpu0 time.Duration
	for b.Loop() {
		if cpu0 == 0 {
			cpu0 = cpuTime(b)
		}
		s.got.expect(1)
		if err := s.nc.Publish(subjects[rng.IntN(users)], benchOutbound); err != nil {
			b.Fatal(err)
		}
		s.got.wait(b, timer)
	}
	reportCPU(b, cpu0)
}

// BenchmarkEdgeEcho: one op is a client's frame in and its reply out, as in
// an echo round trip, with a plain NATS subscriber in the dispatcher's place
// (it decodes the envelope and publishes the reply on ws.send.conn.<conn>).
func BenchmarkEdgeEcho(b *testing.B) {
	b.Setenv("EDGE_RATE_LIMIT", "0") // one client sends as fast as it is answered
	s := startBenchStack(b, 1)
	sub, err := s.nc.Subscribe("ws.in.echo", func(m *nats.Msg) {
		env, err := wire.DecodeEnvelope(m.Data)
		if err != nil {
			b.Error(err)
			return
		}
		out := wire.AppendOutbound(nil, &wire.Outbound{Action: env.Action, Details: env.Details, Ref: env.Ref})
		if err := s.nc.Publish("ws.send.conn."+env.Connection, out); err != nil {
			b.Error(err)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := s.nc.Flush(); err != nil {
		b.Fatal(err)
	}
	frame := []byte(`["echo",{"room":"lobby-42","text":"hello there, how is everyone doing today?"},17]`)
	timer := time.NewTimer(edgetest.Timeout)
	b.ReportAllocs()
	var cpu0 time.Duration
	for b.Loop() {
		if cpu0 == 0 {
			cpu0 = cpuTime(b)
		}
		s.got.expect(1)
		if err := s.clients[0].WriteMessage(websocket.TextMessage, frame); err != nil {
			b.Fatal(err)
		}
		s.got.wait(b, timer)
	}
	reportCPU(b, cpu0)
}
