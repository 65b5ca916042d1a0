package presenceload

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Actions of the user events (DESIGN.md §9).
const (
	actionOnline  = "Client/online"
	actionOffline = "Client/offline"
)

// event is one Client/online or Client/offline seen on NATS.
type event struct {
	online bool
	rev    uint64 // the user key's revision, from the event's Nats-Msg-Id
	at     time.Time
}

// events records every user event published on <prefix>.in.Client/online
// and .../Client/offline. Each event's message id is
// "<online|offline>.<user>.<revision of user.<user>>" (the edge and the
// dispatcher make it so for exactly-once delivery), and revisions grow
// with each transition: sorted by revision, a user's events must alternate
// online, offline, online, … whatever order NATS delivered them in.
type events struct {
	mu      sync.Mutex
	byUser  map[string][]event // owned by mu
	bad     []string           // events that could not be read; owned by mu
	onEvent func(user string, online bool, at time.Time)
	subs    []*nats.Subscription
}

// watchEvents subscribes nc to the user events; onEvent (may be nil) is
// called for each, from the NATS callback: it must not block.
func watchEvents(nc *nats.Conn, prefix string, onEvent func(user string, online bool, at time.Time)) (*events, error) {
	e := &events{byUser: map[string][]event{}, onEvent: onEvent}
	for _, action := range []string{actionOnline, actionOffline} {
		sub, err := nc.Subscribe(prefix+".in."+action, e.record)
		if err != nil {
			e.stop()
			return nil, err
		}
		// Thousands of events come at once after a kill: none may be
		// dropped as a slow consumer.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			e.stop()
			return nil, err
		}
		e.subs = append(e.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

func (e *events) stop() {
	for _, s := range e.subs {
		_ = s.Unsubscribe()
	}
}

func (e *events) record(m *nats.Msg) {
	now := time.Now()
	var env struct {
		Action  string `json:"action"`
		Details struct {
			User string `json:"user"`
		} `json:"details"`
	}
	id := m.Header.Get(nats.MsgIdHdr)
	kind, rest, _ := strings.Cut(id, ".")
	i := strings.LastIndexByte(rest, '.')
	var rev uint64
	err := json.Unmarshal(m.Data, &env)
	if err == nil && i > 0 {
		rev, err = strconv.ParseUint(rest[i+1:], 10, 64)
	}
	online := env.Action == actionOnline
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil || i <= 0 || env.Details.User == "" || kind != map[bool]string{true: "online", false: "offline"}[online] {
		e.bad = append(e.bad, fmt.Sprintf("%s id %q: %s", m.Subject, id, m.Data))
		return
	}
	e.byUser[env.Details.User] = append(e.byUser[env.Details.User], event{online: online, rev: rev, at: now})
	if e.onEvent != nil {
		e.onEvent(env.Details.User, online, now)
	}
}

func sortedEvents(evs []event) []event {
	s := slices.Clone(evs)
	slices.SortStableFunc(s, func(a, b event) int {
		if a.rev != b.rev {
			return cmpUint(a.rev, b.rev)
		}
		// One revision may carry both: online by the key's creation, then
		// offline by its deletion on that same revision.
		return cmpBool(!a.online, !b.online)
	})
	return s
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// Audit is the verdict on the user events of a run.
type Audit struct {
	Online     int      `json:"online_events"`
	Offline    int      `json:"offline_events"`
	Duplicated int      `json:"duplicated"` // the same transition twice
	Missing    int      `json:"missing"`    // a transition absent from the sequence or from the end state
	Unreadable int      `json:"unreadable"`
	Samples    []string `json:"samples,omitempty"`
}

// OK reports whether no event was missing, duplicated or unreadable.
func (a Audit) OK() bool { return a.Duplicated == 0 && a.Missing == 0 && a.Unreadable == 0 }

// audit checks every user's events: in revision order they alternate,
// starting with online, and the last one matches the user's state now
// (online[u]: the user holds a connection). Users in online with no event
// at all are missing their Client/online.
func (e *events) audit(online map[string]bool) Audit {
	e.mu.Lock()
	defer e.mu.Unlock()
	var a Audit
	a.Unreadable = len(e.bad)
	note := func(format string, args ...any) {
		if len(a.Samples) < 10 {
			a.Samples = append(a.Samples, fmt.Sprintf(format, args...))
		}
	}
	for _, b := range e.bad {
		note("unreadable event: %s", b)
	}
	users := map[string]bool{}
	for u := range e.byUser {
		users[u] = true
	}
	for u := range online {
		users[u] = true
	}
	for u := range users {
		evs := sortedEvents(e.byUser[u])
		want := true // the first event of a user brings it online
		for i, ev := range evs {
			if ev.online {
				a.Online++
			} else {
				a.Offline++
			}
			if i > 0 && ev.rev == evs[i-1].rev && ev.online == evs[i-1].online {
				a.Duplicated++
				note("user %s: %s at revision %d twice", u, word(ev.online), ev.rev)
				continue
			}
			if ev.online != want {
				a.Missing++
				note("user %s: %s at revision %d follows another %s (a %s is missing)", u, word(ev.online), ev.rev, word(ev.online), word(!ev.online))
			}
			want = !ev.online
		}
		end := !want // the state the events leave the user in
		if len(evs) == 0 {
			end = false
		}
		if end != online[u] {
			a.Missing++
			note("user %s is %s but its last event left it %s", u, word(online[u]), word(end))
		}
	}
	return a
}

func word(online bool) string {
	if online {
		return "online"
	}
	return "offline"
}
