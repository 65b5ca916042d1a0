package load

import (
	"bufio"
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/bench/internal/proto"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

func TestEdgeOf(t *testing.T) {
	// One tab per user: users round robin over the edges.
	count := make([]int, 4)
	for i := range 100 {
		count[EdgeOf(i, 1, 4)]++
	}
	for k, n := range count {
		if n != 25 {
			t.Fatalf("edge %d got %d of 100 users, want 25 (%v)", k, n, count)
		}
	}
	// Two tabs per user on two edges: each user has a tab on each.
	for u := range 10 {
		if a, b := EdgeOf(2*u, 2, 2), EdgeOf(2*u+1, 2, 2); a == b {
			t.Fatalf("user %d has both tabs on edge %d", u, a)
		}
	}
	if EdgeOf(7, 1, 1) != 0 || EdgeOf(7, 1, 0) != 0 {
		t.Fatal("one edge (or none given) takes every connection")
	}
}

// metric is the sum of the edge's samples of name (all its labels).
func metric(t *testing.T, wsURL, name string) int {
	t.Helper()
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws")
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || (f[0] != name && !strings.HasPrefix(f[0], name+"{")) {
			continue
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			n += int(v)
		}
	}
	return n
}

// TestGorillaClientOverTwoEdges runs the gorilla client mode against two
// real edges: the worker's connections are spread over both, and a
// broadcast published on NATS reaches every one of them. With compression
// offered to edges that have it on, the edges send the broadcast
// compressed and the clients read it whole, and the bytes their sockets
// read (WireBytes) show it: an application-like 2 KiB JSON message takes
// at most 60 % of its size on the wire compressed, at least its size plain.
func TestGorillaClientOverTwoEdges(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run("compress="+strconv.FormatBool(compress), func(t *testing.T) { gorillaOverTwoEdges(t, compress) })
	}
}

func gorillaOverTwoEdges(t *testing.T, compress bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	ns := runNATS(t)
	const secret = "gorilla-secret"
	const size = 2048 // above the edge's 128-byte threshold
	var env []string
	if compress {
		env = []string{"EDGE_COMPRESSION=on"}
	}
	st, err := stack.StartOnNATS(ctx, stack.Config{
		Edges: 2, BinDir: filepath.Dir(edgeBin), Secret: secret, SendQueue: 256, Dir: t.TempDir(), EdgeEnv: env,
	}, ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop edges: %v", err)
		}
	})

	const conns = 30
	w, err := NewWorker(Job{Gateway: "wsgate", URLs: st.URLs, Secret: secret, Count: conns, Tabs: 1, RampRate: 500, Inflight: 8, Size: size, Client: ClientGorilla, Compress: compress})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			w.Close()
		}
	}()
	if len(w.loops) != 0 {
		t.Fatal("the gorilla client must not start event loops")
	}
	w.Ramp(ctx)
	if c := w.Counters(); c.Connected != conns || c.Failed != 0 {
		t.Fatalf("connected %d, failed %d: %v", c.Connected, c.Failed, w.ErrorSamples())
	}
	for _, u := range st.URLs {
		checkFor(t, "the edge to count its connections", func() bool { return metric(t, u, "wsgate_edge_connections") == conns/2 })
	}

	pub, err := proto.NewNATSPublisher(ns.ClientURL(), "ws")
	if err != nil {
		t.Fatal(err)
	}
	const messages = 3
	before := w.Counters().WireBytes
	for seq := range messages {
		payload := proto.AppendTextPayload(nil, time.Now().UnixNano(), uint64(seq), size)
		if err := pub.Publish([]proto.Out{{Payload: payload}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	checkFor(t, "every connection to receive every message", func() bool { return w.Counters().Received == conns*messages })
	if h := w.Hist(); h.Count != conns*messages {
		t.Fatalf("latency samples %d, want %d", h.Count, conns*messages)
	}
	perDelivery := float64(w.Counters().WireBytes-before) / (conns * messages)
	if compress && perDelivery > 0.6*size || !compress && perDelivery < size {
		t.Errorf("%.0f bytes read per delivery of a %d-byte message (compress %v)", perDelivery, size, compress)
	}
	t.Logf("%.0f bytes on the wire per delivery of a %d-byte message (compress %v)", perDelivery, size, compress)
	for _, u := range st.URLs {
		// Compressed once per edge and message, not once per connection.
		if n, want := metric(t, u, "wsgate_edge_deliveries_compressed_total"), map[bool]int{true: messages}[compress]; n != want {
			t.Errorf("edge %s compressed %d deliveries, want %d", u, n, want)
		}
	}
	w.Close()
	closed = true
	if c := w.Counters(); c.Connected != 0 || c.Dropped != 0 || c.Errors != 0 {
		t.Fatalf("after Close: connected %d, dropped %d, errors %d: %v", c.Connected, c.Dropped, c.Errors, w.ErrorSamples())
	}
}

func TestUnknownClientRefused(t *testing.T) {
	if _, err := NewWorker(Job{Gateway: "wsgate", URLs: []string{"ws://x"}, Client: "nhooyr"}); err == nil {
		t.Fatal("an unknown client mode must be refused")
	}
	cfg := Config{Scenario: Idle, Gateway: "wsgate", Conns: 1, Client: "nhooyr"}
	if err := cfg.check(); err == nil {
		t.Fatal("check must refuse an unknown client mode")
	}
}
