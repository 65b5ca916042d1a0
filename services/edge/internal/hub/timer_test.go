package hub

import (
	"math/rand/v2"
	"strconv"
	"testing"
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
