package presenceload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/bench/internal/stack"
)

// SoakConfig is one kill soak: Users users (one connection each) spread
// over Edges edges; every KillEvery one running edge, chosen at random, is
// killed with SIGKILL and restarted after a random pause of up to
// Lease + 1 s (so that some restarts come after the lease expired and some
// before, when the new epoch makes the dispatcher reap at once). A
// fraction Away of the killed edge's users stay away until their
// Client/offline arrives (its latency from the kill is the figure); the
// others reconnect at once to a running edge. After the kills everyone is
// back, presence must list exactly the open connections, then a fraction
// CloseAtEnd of the users close cleanly and must go offline. Dispatchers
// replicas run (at least one), racing for every reap and offline.
type SoakConfig struct {
	Bin         Bin
	Edges       int
	Dispatchers int
	Users       int
	Kills       int
	KillEvery   time.Duration
	Lease       time.Duration // WS_PRESENCE_LEASE of the edges
	Grace       time.Duration // WS_PRESENCE_GRACE of the dispatcher
	Away        float64
	CloseAtEnd  float64
	Ramp        float64 // connections opened per second at the start
	Seed        uint64
	Progress    io.Writer
}

// SoakResult is the outcome of a soak.
type SoakResult struct {
	Edges       int     `json:"edges"`
	Dispatchers int     `json:"dispatchers"`
	Users       int     `json:"users"`
	Kills       int     `json:"kills"`
	KillEvery   string  `json:"kill_every"`
	Lease       string  `json:"lease"`
	Grace       string  `json:"grace"`
	Seconds     float64 `json:"seconds"`
	KillRate    float64 `json:"kills_per_s"` // achieved
	Reconnects  int64   `json:"reconnects"`
	DialErrors  int64   `json:"dial_errors"`
	// OfflineLatency runs from each kill to the Client/offline of each of
	// the killed edge's users that stayed away.
	OfflineLatency  Quantiles `json:"offline_latency"`
	OfflineLimitMs  float64   `json:"offline_limit_ms"` // lease + grace + 2 s
	OfflineTimedOut int       `json:"offline_timed_out"`
	// After the kills, with every user connected once: connections
	// presence lists beyond the open ones, and users it says offline.
	GhostConnections int `json:"ghost_connections"`
	MissingUsers     int `json:"missing_users"`
	// After the clean closes: connections presence lists beyond the open
	// ones (a closed user it still says online counts here).
	GhostUsers int      `json:"ghost_users"`
	Closed     int      `json:"closed"`
	Events     Audit    `json:"events"`
	Samples    []string `json:"samples,omitempty"`
}

// OK reports whether the soak met DESIGN §9's promises: no ghost, no
// missing or duplicated event, every offline within lease + grace + 2 s.
func (r *SoakResult) OK() bool {
	return r.GhostConnections == 0 && r.MissingUsers == 0 && r.GhostUsers == 0 && r.OfflineTimedOut == 0 &&
		r.Events.OK() && r.OfflineLatency.P99 <= r.OfflineLimitMs
}

type soakUser struct {
	id string
	i  int

	mu        sync.Mutex
	conn      *wsConn   // the open connection; owned by mu
	edge      int       // its edge, -1 when none; owned by mu
	away      bool      // killed and staying away until offline; owned by mu
	killedAt  time.Time // owned by mu
	offlineCh chan struct{}
	closing   bool // the end's clean close; owned by mu
}

type soak struct {
	cfg    SoakConfig
	st     *stack.Stack
	urls   []string
	secret string
	rng    *rand.Rand // owned by the killer

	procMu sync.Mutex // serialises Kill and Restart
	upMu   sync.Mutex
	up     []bool // owned by upMu

	users      []*soakUser
	byID       map[string]*soakUser
	connected  atomic.Int64
	reconnects atomic.Int64
	dialErrs   atomic.Int64

	latMu    sync.Mutex
	lat      []time.Duration // owned by latMu
	timedOut int             // owned by latMu
	samples  []string        // owned by latMu
}

// Soak runs a kill soak and returns its outcome; err is for a run that
// could not be made (a server that did not start), not for a broken
// promise: see SoakResult.OK.
func Soak(ctx context.Context, cfg SoakConfig) (*SoakResult, error) {
	if cfg.Edges < 2 || cfg.Users < 1 || cfg.Kills < 0 {
		return nil, errors.New("presenceload: a soak needs at least 2 edges and 1 user")
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Ramp <= 0 {
		cfg.Ramp = 500
	}
	started := time.Now()
	sc := cfg.Bin.config("soak", cfg.Edges,
		[]string{"WS_PRESENCE_LEASE=" + cfg.Lease.String()},
		[]string{"WS_PRESENCE_GRACE=" + cfg.Grace.String()})
	st, err := stack.Start(ctx, sc)
	if err != nil {
		return nil, err
	}
	s := &soak{cfg: cfg, st: st, urls: st.URLs, secret: sc.Secret, rng: rand.New(rand.NewPCG(cfg.Seed, 7)),
		up: make([]bool, len(st.URLs)), byID: map[string]*soakUser{}}
	defer func() {
		if err := st.Stop(); err != nil {
			fmt.Fprintln(cfg.Progress, "presence soak: stopping servers:", err)
		}
	}()
	for i := range s.up {
		s.up[i] = true
	}
	// The users exist before the events are watched: the NATS callback
	// reads byID.
	for i := range cfg.Users {
		u := &soakUser{id: "p" + strconv.Itoa(i), i: i, edge: -1}
		s.users = append(s.users, u)
		s.byID[u.id] = u
	}
	for n := 2; n <= cfg.Dispatchers; n++ {
		d, err := startDispatcher(ctx, cfg.Bin, sc.Dir, n, st.NATSURL, []string{"WS_PRESENCE_GRACE=" + cfg.Grace.String()})
		if err != nil {
			return nil, err
		}
		defer d.stop()
	}
	nc, err := nats.Connect(st.NATSURL, nats.Name("presence-soak"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	ev, err := watchEvents(nc, "ws", s.onEvent)
	if err != nil {
		return nil, err
	}
	defer ev.stop()

	res := &SoakResult{Edges: cfg.Edges, Dispatchers: max(cfg.Dispatchers, 1), Users: cfg.Users, KillEvery: cfg.KillEvery.String(), Lease: cfg.Lease.String(),
		Grace: cfg.Grace.String(), OfflineLimitMs: ms(cfg.Lease + cfg.Grace + 2*time.Second)}
	runCtx, stopUsers := context.WithCancel(ctx)
	var clients sync.WaitGroup
	defer func() {
		stopUsers()
		for _, u := range s.users {
			u.mu.Lock()
			u.closing = true
			if u.conn != nil {
				_ = u.conn.ws.Close()
			}
			u.mu.Unlock()
		}
		clients.Wait()
	}()
	// Ramp: open the connections at cfg.Ramp per second.
	tick := time.Duration(float64(time.Second) / cfg.Ramp)
	for _, u := range s.users {
		clients.Go(func() { s.runUser(runCtx, u) })
		if err := sleepCtx(ctx, tick); err != nil {
			return nil, errStopped
		}
	}
	rampLimit := time.Duration(float64(cfg.Users)/cfg.Ramp*float64(time.Second)) + 60*time.Second
	if err := s.waitConnected(ctx, rampLimit); err != nil {
		return nil, fmt.Errorf("presence soak: ramp: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "presence soak: %d users connected over %d edges\n", cfg.Users, cfg.Edges)

	killStart := time.Now()
	kills, err := s.kill(ctx)
	res.Kills = kills
	if secs := time.Since(killStart).Seconds(); secs > 0 {
		res.KillRate = float64(kills) / secs
	}
	if err != nil {
		return nil, err
	}
	// Everyone comes back: the away users once their offline came.
	backLimit := cfg.Lease + cfg.Grace + 30*time.Second
	if err := s.waitConnected(ctx, backLimit); err != nil {
		res.Samples = append(res.Samples, fmt.Sprintf("not every user reconnected within %s: %d of %d", backLimit, s.connected.Load(), cfg.Users))
	}
	// Presence must list exactly the open connections, once the dead
	// edges' leases have expired.
	settle := cfg.Lease + cfg.Grace + 10*time.Second
	ghosts, missing, notes := s.checkPresence(ctx, nc, settle, func(*soakUser) int { return 1 })
	res.GhostConnections, res.MissingUsers = ghosts, missing
	res.Samples = append(res.Samples, notes...)

	// Clean closes at the end: those users must go offline, once.
	var closed []*soakUser
	for _, u := range s.users {
		if s.rng.Float64() < cfg.CloseAtEnd {
			closed = append(closed, u)
		}
	}
	for _, u := range closed {
		u.mu.Lock()
		u.closing = true
		c := u.conn
		u.mu.Unlock()
		if c != nil {
			c.close()
		}
	}
	res.Closed = len(closed)
	closedSet := map[*soakUser]bool{}
	for _, u := range closed {
		closedSet[u] = true
	}
	ghostUsers, stillMissing, notes := s.checkPresence(ctx, nc, settle, func(u *soakUser) int {
		if closedSet[u] {
			return 0
		}
		return 1
	})
	res.GhostUsers = ghostUsers
	res.MissingUsers += stillMissing
	res.Samples = append(res.Samples, notes...)

	// The events: wait until the closed users' offlines are in (or the
	// settle time passed), then audit.
	online := map[string]bool{}
	for _, u := range s.users {
		online[u.id] = !closedSet[u]
	}
	actx, cancel := context.WithTimeout(ctx, settle)
	_ = waitFor(actx, func() bool { return ev.audit(online).OK() })
	cancel()
	res.Events = ev.audit(online)

	s.latMu.Lock()
	res.OfflineLatency = quantiles(s.lat)
	res.OfflineTimedOut = s.timedOut
	res.Samples = append(res.Samples, s.samples...)
	s.latMu.Unlock()
	res.Reconnects, res.DialErrors = s.reconnects.Load(), s.dialErrs.Load()
	res.Seconds = time.Since(started).Seconds()
	return res, nil
}

// onEvent takes the Client/offline of a user that stays away after a kill:
// its latency from the kill, and the signal to come back.
func (s *soak) onEvent(user string, online bool, at time.Time) {
	u := s.byID[user]
	if online || u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.away || u.offlineCh == nil || !at.After(u.killedAt) {
		return
	}
	s.latMu.Lock()
	s.lat = append(s.lat, at.Sub(u.killedAt))
	s.latMu.Unlock()
	close(u.offlineCh)
	u.offlineCh = nil
}

// runUser keeps user u connected: after a drop it reconnects at once to a
// running edge, or, when the kill chose it to stay away, once its offline
// came.
func (s *soak) runUser(ctx context.Context, u *soakUser) {
	edge := u.i % len(s.urls)
	for {
		u.mu.Lock()
		closing := u.closing
		u.mu.Unlock()
		if closing || ctx.Err() != nil {
			return
		}
		c, err := dial(ctx, s.urls[edge], s.secret, u.id)
		if err != nil {
			s.dialErrs.Add(1)
			if sleepCtx(ctx, time.Duration(50+rand.IntN(150))*time.Millisecond) != nil {
				return
			}
			edge = s.pickEdge()
			continue
		}
		u.mu.Lock()
		if u.closing {
			u.mu.Unlock()
			c.close()
			return
		}
		u.conn, u.edge = c, edge
		u.mu.Unlock()
		s.connected.Add(1)
		_ = c.read(func([]byte) {})
		_ = c.ws.Close()
		s.connected.Add(-1)
		u.mu.Lock()
		u.conn, u.edge = nil, -1
		away, ch, killedAt := u.away, u.offlineCh, u.killedAt
		closing = u.closing
		u.mu.Unlock()
		if closing {
			return
		}
		if away {
			s.stayAway(ctx, u, ch, killedAt)
		}
		s.reconnects.Add(1)
		edge = s.pickEdge()
	}
}

// stayAway waits for u's offline after the kill at killedAt, or gives up
// after lease + grace + 10 s and notes it.
func (s *soak) stayAway(ctx context.Context, u *soakUser, ch chan struct{}, killedAt time.Time) {
	limit := s.cfg.Lease + s.cfg.Grace + 10*time.Second
	t := time.NewTimer(time.Until(killedAt.Add(limit)))
	defer t.Stop()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		case <-t.C:
			s.latMu.Lock()
			s.timedOut++
			if len(s.samples) < 10 {
				s.samples = append(s.samples, fmt.Sprintf("user %s: no Client/offline within %s of the kill at %s", u.id, limit, killedAt.Format(time.StampMilli)))
			}
			s.latMu.Unlock()
		}
	}
	u.mu.Lock()
	u.away, u.offlineCh = false, nil
	u.mu.Unlock()
}

// pickEdge returns a running edge at random.
func (s *soak) pickEdge() int {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	var up []int
	for i, ok := range s.up {
		if ok {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		return rand.IntN(len(s.up))
	}
	return up[rand.IntN(len(up))]
}

// kill makes the kills, one per KillEvery, and waits for every restart.
func (s *soak) kill(ctx context.Context) (int, error) {
	var restarts sync.WaitGroup
	var restartErr atomic.Pointer[error]
	defer restarts.Wait()
	t := time.NewTicker(s.cfg.KillEvery)
	defer t.Stop()
	kills := 0
	lastReport := time.Now()
	for kills < s.cfg.Kills {
		select {
		case <-ctx.Done():
			return kills, errStopped
		case <-t.C:
		}
		if p := restartErr.Load(); p != nil {
			return kills, *p
		}
		s.upMu.Lock()
		var up []int
		for i, ok := range s.up {
			if ok {
				up = append(up, i)
			}
		}
		if len(up) < 2 {
			s.upMu.Unlock()
			continue // always one edge left to reconnect to
		}
		v := up[s.rng.IntN(len(up))]
		s.up[v] = false
		s.upMu.Unlock()
		now := time.Now()
		for _, u := range s.users {
			u.mu.Lock()
			if u.edge == v && u.conn != nil && s.rng.Float64() < s.cfg.Away {
				u.away, u.killedAt, u.offlineCh = true, now, make(chan struct{})
			}
			u.mu.Unlock()
		}
		name := "edge" + strconv.Itoa(v+1)
		s.procMu.Lock()
		err := s.st.Kill(name)
		s.procMu.Unlock()
		if err != nil {
			return kills, fmt.Errorf("presence soak: kill %s: %w", name, err)
		}
		kills++
		pause := time.Duration(s.rng.Int64N(int64(s.cfg.Lease + time.Second)))
		restarts.Go(func() {
			if sleepCtx(ctx, pause) != nil {
				return
			}
			s.procMu.Lock()
			err := s.st.Restart(ctx, name)
			s.procMu.Unlock()
			if err != nil {
				err = fmt.Errorf("presence soak: restart %s: %w", name, err)
				restartErr.Store(&err)
				return
			}
			s.upMu.Lock()
			s.up[v] = true
			s.upMu.Unlock()
		})
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			s.latMu.Lock()
			n, to := len(s.lat), s.timedOut
			s.latMu.Unlock()
			fmt.Fprintf(s.cfg.Progress, "presence soak: %d/%d kills, %d connected, %d reconnects, %d offline latencies, %d timed out\n",
				kills, s.cfg.Kills, s.connected.Load(), s.reconnects.Load(), n, to)
		}
	}
	restarts.Wait()
	if p := restartErr.Load(); p != nil {
		return kills, *p
	}
	return kills, nil
}

// waitConnected waits until every user that is not closing holds a
// connection.
func (s *soak) waitConnected(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return waitFor(ctx, func() bool { return s.connected.Load() >= int64(len(s.users)) })
}

// userAnswer is what the soak reads of a ws.presence.user answer.
type userAnswer struct {
	Online      bool              `json:"online"`
	Connections []json.RawMessage `json:"connections"`
	Error       *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// checkPresence asks the dispatcher for every user's presence until each
// lists want(u) connections or limit passes, and returns the connections
// listed beyond want (ghosts) and the users listed with fewer (missing).
func (s *soak) checkPresence(ctx context.Context, nc *nats.Conn, limit time.Duration, want func(*soakUser) int) (ghosts, missing int, notes []string) {
	deadline := time.Now().Add(limit)
	for {
		ghosts, missing, notes = 0, 0, nil
		var mu sync.Mutex
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for _, u := range s.users {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				n, err := presenceOf(nc, u.id)
				mu.Lock()
				defer mu.Unlock()
				switch w := want(u); {
				case err != nil:
					missing++
					if len(notes) < 5 {
						notes = append(notes, fmt.Sprintf("user %s: %v", u.id, err))
					}
				case n > w:
					ghosts += n - w
					if len(notes) < 5 {
						notes = append(notes, fmt.Sprintf("user %s: presence lists %d connections, %d open", u.id, n, w))
					}
				case n < w:
					missing++
					if len(notes) < 5 {
						notes = append(notes, fmt.Sprintf("user %s: presence lists %d connections, %d open", u.id, n, w))
					}
				}
			})
		}
		wg.Wait()
		if ghosts == 0 && missing == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return ghosts, missing, notes
		}
		if sleepCtx(ctx, 250*time.Millisecond) != nil {
			return ghosts, missing, notes
		}
	}
}

// presenceOf asks ws.presence.user.<user> and returns the connections listed.
func presenceOf(nc *nats.Conn, user string) (int, error) {
	m, err := nc.Request("ws.presence.user."+user, nil, 5*time.Second)
	if err != nil {
		return 0, err
	}
	var a userAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return 0, err
	}
	if a.Error != nil {
		return 0, fmt.Errorf("presence answered %d %s", a.Error.Code, a.Error.Message)
	}
	if a.Online != (len(a.Connections) > 0) {
		return 0, fmt.Errorf("presence says online=%v with %d connections", a.Online, len(a.Connections))
	}
	return len(a.Connections), nil
}

// sleepCtx sleeps d or until ctx ends (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
