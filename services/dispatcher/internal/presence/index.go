package presence

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
)

// index is one dispatcher's view of the presence bucket, built from a watch
// of every key. Counts are kept as entries come and go, so that answers cost
// no scan. Owned by Service.mu.
type index struct {
	loaded  bool               // the watch has delivered the bucket's initial values
	edges   map[string]*edge   // by edge id
	conns   map[string]*conn   // by key
	users   map[string]*user   // by user id: users with connections or a user key
	groups  map[string]*group  // by group id
	orphan  map[*conn]struct{} // connections whose edge holds no lease of their epoch
	zero    map[*user]struct{} // users online (user key) with no connection
	pending map[*user]struct{} // users whose key waits for its Client/online
	byEdge  map[string]map[*conn]struct{}
}

type edge struct {
	epoch string // "" : no live lease
}

type conn struct {
	key     string
	rev     uint64
	rec     wire.PresenceConn
	reaping bool // a reap is under way
}

type user struct {
	id        string
	conns     map[*conn]struct{}
	keyRev    uint64                 // revision of user.<id>; 0: no key (offline)
	key       wire.PresenceUserState // the value of user.<id>, while keyRev != 0
	zeroSince time.Time              // when the last connection went, while keyRev != 0
	last      wire.PresenceConn      // the last connection seen (for the offline envelope)
	offlining bool                   // an offline transition is under way
	claiming  bool                   // an online transition is under way
}

type group struct {
	users map[string]int // connections per user
	conns int
}

func newIndex() *index {
	return &index{
		edges: map[string]*edge{}, conns: map[string]*conn{}, users: map[string]*user{},
		groups: map[string]*group{}, orphan: map[*conn]struct{}{}, zero: map[*user]struct{}{},
		pending: map[*user]struct{}{}, byEdge: map[string]map[*conn]struct{}{},
	}
}

// apply folds one watch entry into the index; now is when it was seen.
func (x *index) apply(e jetstream.KeyValueEntry, now time.Time) {
	deleted := e.Operation() != jetstream.KeyValuePut
	key := e.Key()
	switch {
	case strings.HasPrefix(key, wire.PresenceKeyEdge):
		x.applyLease(key, e, deleted)
	case strings.HasPrefix(key, wire.PresenceKeyConn):
		if c := x.conns[key]; c != nil {
			x.removeConn(c, now)
		}
		if deleted {
			return
		}
		var rec wire.PresenceConn
		if json.Unmarshal(e.Value(), &rec) != nil || rec.User == "" || rec.Edge == "" {
			return
		}
		x.addConn(&conn{key: key, rev: e.Revision(), rec: rec})
	case strings.HasPrefix(key, wire.PresenceKeyUser):
		var st wire.PresenceUserState
		if !deleted && (json.Unmarshal(e.Value(), &st) != nil || st.User == "") {
			return
		}
		if deleted {
			st.User = unescape(strings.TrimPrefix(key, wire.PresenceKeyUser))
		}
		u := x.user(st.User)
		u.offlining, u.claiming = false, false
		if deleted {
			u.keyRev, u.key = 0, wire.PresenceUserState{}
		} else {
			u.keyRev, u.key = e.Revision(), st
			if u.last.Connection == "" {
				edgeID, _, _ := strings.Cut(st.Connection, ".")
				u.last = wire.PresenceConn{User: st.User, Connection: st.Connection, Edge: edgeID}
			}
			if len(u.conns) == 0 && u.zeroSince.IsZero() {
				u.zeroSince = now
			}
		}
		x.settle(u)
	}
}

func (x *index) applyLease(key string, e jetstream.KeyValueEntry, deleted bool) {
	var l wire.PresenceLease
	if !deleted {
		if json.Unmarshal(e.Value(), &l) != nil {
			return
		}
	}
	id := unescape(strings.TrimPrefix(key, wire.PresenceKeyEdge))
	ed := x.edges[id]
	if ed == nil {
		ed = &edge{}
		x.edges[id] = ed
	}
	was := ed.epoch
	if deleted {
		ed.epoch = ""
	} else {
		ed.epoch = l.Epoch
	}
	if was == ed.epoch && was != "" {
		return // a renewal
	}
	for c := range x.byEdge[id] {
		x.judge(c)
	}
}

// expire ends the lease epoch of edge id, when it is still the one the
// index holds, as its expiry marker would have.
func (x *index) expire(id, epoch string) {
	ed := x.edges[id]
	if ed == nil || ed.epoch != epoch {
		return
	}
	ed.epoch = ""
	for c := range x.byEdge[id] {
		x.judge(c)
	}
}

// judge puts c among the orphans when its edge holds no lease of its epoch.
// Before the initial values are loaded nothing is judged: a lease comes
// after its connections in the stream.
func (x *index) judge(c *conn) {
	if !x.loaded {
		return
	}
	if ed := x.edges[c.rec.Edge]; ed == nil || ed.epoch != c.rec.Epoch {
		x.orphan[c] = struct{}{}
	} else {
		delete(x.orphan, c)
	}
}

func (x *index) user(id string) *user {
	u := x.users[id]
	if u == nil {
		u = &user{id: id, conns: map[*conn]struct{}{}}
		x.users[id] = u
	}
	return u
}

func (x *index) addConn(c *conn) {
	x.conns[c.key] = c
	be := x.byEdge[c.rec.Edge]
	if be == nil {
		be = map[*conn]struct{}{}
		x.byEdge[c.rec.Edge] = be
	}
	be[c] = struct{}{}
	u := x.user(c.rec.User)
	u.conns[c] = struct{}{}
	u.last = c.rec
	u.zeroSince = time.Time{}
	for _, g := range c.rec.Groups {
		gr := x.groups[g]
		if gr == nil {
			gr = &group{users: map[string]int{}}
			x.groups[g] = gr
		}
		gr.users[c.rec.User]++
		gr.conns++
	}
	x.judge(c)
	x.settle(u)
}

func (x *index) removeConn(c *conn, now time.Time) {
	delete(x.conns, c.key)
	delete(x.orphan, c)
	if be := x.byEdge[c.rec.Edge]; be != nil {
		delete(be, c)
		if len(be) == 0 {
			delete(x.byEdge, c.rec.Edge)
		}
	}
	u := x.users[c.rec.User]
	if u != nil {
		delete(u.conns, c)
		u.last = c.rec
		if len(u.conns) == 0 {
			u.zeroSince = now
		}
		x.settle(u)
	}
	for _, g := range c.rec.Groups {
		gr := x.groups[g]
		if gr == nil {
			continue
		}
		gr.conns--
		if gr.users[c.rec.User]--; gr.users[c.rec.User] <= 0 {
			delete(gr.users, c.rec.User)
		}
		if gr.conns <= 0 {
			delete(x.groups, g)
		}
	}
}

// settle files u among the users waiting for their online or offline
// transition, or forgets it when nothing is left of it.
func (x *index) settle(u *user) {
	if u.keyRev != 0 && u.key.Pending {
		x.pending[u] = struct{}{}
	} else {
		delete(x.pending, u)
	}
	switch {
	case len(u.conns) > 0:
		delete(x.zero, u)
	case u.keyRev != 0:
		if u.zeroSince.IsZero() {
			u.zeroSince = time.Now()
		}
		x.zero[u] = struct{}{}
	default:
		delete(x.zero, u)
		delete(x.users, u.id)
	}
}

// onlineConn is the record of the connection that brought u online, as far
// as the index knows it (for the online envelope).
func (x *index) onlineConn(u *user) wire.PresenceConn {
	for c := range u.conns {
		if c.rec.Connection == u.key.Connection {
			return c.rec
		}
	}
	if u.last.Connection != "" {
		return u.last
	}
	edgeID, _, _ := strings.Cut(u.key.Connection, ".")
	return wire.PresenceConn{User: u.id, Connection: u.key.Connection, Edge: edgeID}
}

// markLoaded ends the initial load: every connection is judged, and the
// users online with no connection start their grace now.
func (x *index) markLoaded() {
	x.loaded = true
	for _, c := range x.conns {
		x.judge(c)
	}
}

// userAnswer is the presence of one user.
func (x *index) userAnswer(id string) wire.PresenceUserAnswer {
	a := wire.PresenceUserAnswer{User: id, Connections: []wire.PresenceConnectionAnswer{}}
	if u := x.users[id]; u != nil {
		for c := range u.conns {
			a.Connections = append(a.Connections, wire.PresenceConnectionAnswer{
				Connection: c.rec.Connection, Session: c.rec.Session, Since: c.rec.Since,
			})
		}
	}
	sort.Slice(a.Connections, func(i, j int) bool { return a.Connections[i].Connection < a.Connections[j].Connection })
	a.Online = len(a.Connections) > 0
	return a
}

// groupAnswer is the presence of one group, with at most limit members.
func (x *index) groupAnswer(id string, limit int) wire.PresenceGroupAnswer {
	a := wire.PresenceGroupAnswer{Group: id, Members: []string{}}
	gr := x.groups[id]
	if gr == nil {
		return a
	}
	a.Users, a.Connections = len(gr.users), gr.conns
	for u := range gr.users {
		if len(a.Members) >= limit {
			break
		}
		a.Members = append(a.Members, u)
	}
	sort.Strings(a.Members)
	return a
}

// unescape reverses wire.PresenceKeyID.
func unescape(k string) string {
	if !strings.Contains(k, "=") {
		return k
	}
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		if k[i] == '=' && i+2 < len(k) {
			if v, err := strconv.ParseUint(k[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(k[i])
	}
	return b.String()
}
