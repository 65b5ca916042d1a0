package edge_test

import (
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// heldResponder answers callout requests only when released: it shows how
// many the edge asks at once. Every "sid" is a session of its own user.
type heldResponder struct {
	mu    sync.Mutex
	held  []*nats.Msg
	asked atomic.Int64
}

func (r *heldResponder) answer(m *nats.Msg) {
	var req wire.CalloutRequest
	_ = json.Unmarshal(m.Data, &req)
	data, _ := json.Marshal(wire.CalloutResponse{User: "u-" + req.Cookies["sid"]})
	_ = m.Respond(data)
}

// TestAuthBudget_BoundsConcurrentAuthenticationsAndRefusesPastItsQueue:
// with EDGE_AUTH_CONCURRENCY=4 and EDGE_AUTH_QUEUE=4, twelve connections
// that need the callout at once make at most 4 requests to the
// application; 4 more wait, and the last 4 are answered 503 and closed
// 1013 (try later). Once the application answers, the 8 authenticate.
func TestAuthBudget_BoundsConcurrentAuthenticationsAndRefusesPastItsQueue(t *testing.T) {
	const concurrency, queue, clients = 4, 4, 12
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	r := &heldResponder{}
	sub, err := nc.Subscribe("app.auth", func(m *nats.Msg) {
		r.asked.Add(1)
		r.mu.Lock()
		r.held = append(r.held, m)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, ns, map[string]string{
		"EDGE_JWT_SECRET": "", "EDGE_AUTH_CALLOUT_SUBJECT": "app.auth", "EDGE_AUTH_CALLOUT_TIMEOUT": "30s",
		"EDGE_AUTH_CONCURRENCY": strconv.Itoa(concurrency), "EDGE_AUTH_QUEUE": strconv.Itoa(queue),
	})

	var conns []*edgetest.Client
	for i := range clients {
		conns = append(conns, edgetest.Dial(t, e.URL, cookie("s"+strconv.Itoa(i))))
	}
	// The ones past the queue are refused while the others wait.
	closed := func() (n int) {
		for _, c := range conns {
			select {
			case <-c.Done():
				n++
			default:
			}
		}
		return n
	}
	edgetest.Eventually(t, "refusals", func() bool { return closed() >= clients-concurrency-queue })
	var waiting []*edgetest.Client
	for _, c := range conns {
		select {
		case <-c.Done():
			f, _ := c.Take()
			if code, _ := f.Error(); f.Action != "Client/authentication:error" || code != 503 {
				t.Fatalf("answer %s, want Client/authentication:error 503", f)
			}
			if code, _ := c.WaitClose(); code != 1013 {
				t.Fatalf("close code %d, want 1013", code)
			}
		default:
			waiting = append(waiting, c)
		}
	}
	if len(waiting) != concurrency+queue {
		t.Fatalf("%d connections wait, want %d", len(waiting), concurrency+queue)
	}
	edgetest.Eventually(t, "requests to the application", func() bool { return r.asked.Load() >= concurrency })
	if got := r.asked.Load(); got != concurrency {
		t.Fatalf("the application was asked %d times at once, want %d", got, concurrency)
	}
	// Answering lets the waiting ones in, a budget's worth at a time.
	for answered := 0; answered < len(waiting); {
		edgetest.Eventually(t, "next requests", func() bool { return int(r.asked.Load()) > answered })
		r.mu.Lock()
		held := r.held
		r.held = nil
		r.mu.Unlock()
		for _, m := range held {
			r.answer(m)
		}
		answered += len(held)
	}
	for _, c := range waiting {
		c.ExpectOK()
	}
	if got := r.asked.Load(); got != int64(len(waiting)) {
		t.Fatalf("the application was asked %d times, want %d", got, len(waiting))
	}
}
