package presenceload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/bench/internal/stack"
)

// JoinConfig is one join figure: Users users with one connection on each
// of Edges edges; Joins joins of a user into a new group at Rate per
// second, each followed, as soon as its answer is ok, by a message to the
// group. A join is in force on every edge when that message has reached
// every connection of the user (DESIGN §9: a message sent to the group
// after the answer reaches them).
type JoinConfig struct {
	Bin      Bin
	Edges    int
	Users    int
	Joins    int
	Rate     float64
	Progress io.Writer
}

// JoinResult is the outcome of a join figure.
type JoinResult struct {
	Edges        int     `json:"edges"`
	Users        int     `json:"users"`
	Connections  int     `json:"connections"`
	Joins        int     `json:"joins"`
	Rate         float64 `json:"rate_per_s"`
	AchievedRate float64 `json:"achieved_rate_per_s"`
	// InForce runs from the join request to the group message's arrival
	// at the last of the user's connections; Answer to the answer.
	InForce Quantiles `json:"in_force"`
	Answer  Quantiles `json:"answer"`
	Refused int       `json:"refused"` // answers other than ok, or none
	Lost    int       `json:"lost"`    // messages after an ok that missed a connection
	Samples []string  `json:"samples,omitempty"`
}

// joinAction is the action of the group messages.
const joinAction = "joinfig"

// warmUpJoins is the joins per edge made before the measured ones.
const warmUpJoins = 4

// joinWait bounds the wait for one join's answer and for its message.
const joinWait = 5 * time.Second

type pendingJoin struct {
	start   time.Time
	left    atomic.Int32 // connections yet to receive the message
	arrived chan struct{}
	last    atomic.Int64 // UnixNano of the last arrival
}

// Join runs a join figure.
func Join(ctx context.Context, cfg JoinConfig) (*JoinResult, error) {
	if cfg.Edges < 1 || cfg.Users < 1 || cfg.Joins < 1 || cfg.Rate <= 0 {
		return nil, errors.New("presenceload: a join figure needs edges, users, joins and a rate")
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	sc := cfg.Bin.config("join", cfg.Edges, nil, nil)
	st, err := stack.Start(ctx, sc)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := st.Stop(); err != nil {
			fmt.Fprintln(cfg.Progress, "presence join: stopping servers:", err)
		}
	}()
	var pending sync.Map // join number → *pendingJoin
	onFrame := func(frame []byte) {
		action, rest := actionOf(frame)
		if action != joinAction {
			return
		}
		var n int
		if _, err := fmt.Sscan(string(trimDetails(rest)), &n); err != nil {
			return
		}
		if v, ok := pending.Load(n); ok {
			p := v.(*pendingJoin)
			p.last.Store(time.Now().UnixNano())
			if p.left.Add(-1) == 0 {
				close(p.arrived)
			}
		}
	}
	var conns []*wsConn
	var readers sync.WaitGroup
	defer func() {
		for _, c := range conns {
			_ = c.ws.Close()
		}
		readers.Wait()
	}()
	for u := range cfg.Users {
		for _, url := range st.URLs {
			c, err := dial(ctx, url, sc.Secret, "j"+strconv.Itoa(u))
			if err != nil {
				return nil, err
			}
			conns = append(conns, c)
			readers.Go(func() { _ = c.read(onFrame) })
		}
	}
	nc, err := nats.Connect(st.NATSURL, nats.Name("presence-join"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	// Every edge learns the others within its warm-up (rooms: about a
	// heartbeat); joins made sooner wait for it, which is not the figure.
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return nil, errStopped
	}
	// Warm-up, not measured: the first join an edge coordinates binds the
	// members bucket (created on first use), once per edge process.
	for i := range warmUpJoins * cfg.Edges {
		body := []byte(`{"groups":["warm` + strconv.Itoa(i) + `"]}`)
		if _, err := nc.Request("ws.ctl.join.user.warmup", body, joinWait); err != nil {
			return nil, fmt.Errorf("presence join: warm-up join: %w", err)
		}
	}
	fmt.Fprintf(cfg.Progress, "presence join: %d connections of %d users on %d edges; %d joins at %g/s\n", len(conns), cfg.Users, cfg.Edges, cfg.Joins, cfg.Rate)

	res := &JoinResult{Edges: cfg.Edges, Users: cfg.Users, Connections: len(conns), Joins: cfg.Joins, Rate: cfg.Rate}
	var mu sync.Mutex
	var inForce, answer []time.Duration
	note := func(format string, args ...any) {
		if len(res.Samples) < 10 {
			res.Samples = append(res.Samples, fmt.Sprintf(format, args...))
		}
	}
	var joins sync.WaitGroup
	sem := make(chan struct{}, 256)
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for n := 0; n < cfg.Joins; {
		select {
		case <-ctx.Done():
			joins.Wait()
			return nil, errStopped
		case now := <-tick.C:
			due := min(int(cfg.Rate*now.Sub(start).Seconds())+1, cfg.Joins)
			for ; n < due; n++ {
				id := n // n goes on counting while the join runs
				sem <- struct{}{}
				p := &pendingJoin{arrived: make(chan struct{})}
				p.left.Store(int32(cfg.Edges))
				pending.Store(id, p)
				joins.Go(func() {
					defer func() { <-sem }()
					a, f, err := oneJoin(nc, id, "j"+strconv.Itoa(id%cfg.Users), p)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case errors.Is(err, errLost):
						res.Lost++
						note("join %d: %v", id, err)
					case err != nil:
						res.Refused++
						note("join %d: %v", id, err)
					default:
						answer, inForce = append(answer, a), append(inForce, f)
					}
				})
			}
		}
	}
	joins.Wait()
	res.AchievedRate = float64(cfg.Joins) / time.Since(start).Seconds()
	res.InForce, res.Answer = quantiles(inForce), quantiles(answer)
	return res, nil
}

// errLost: a message sent after an ok answer missed a connection.
var errLost = errors.New("the group message did not reach every connection of the user")

// oneJoin joins user to group g<n>, sends the group a message once the
// answer is ok, and returns the time to the answer and to the message's
// last arrival.
func oneJoin(nc *nats.Conn, n int, user string, p *pendingJoin) (answer, inForce time.Duration, err error) {
	group := "g" + strconv.Itoa(n)
	body, _ := json.Marshal(map[string][]string{"groups": {group}})
	p.start = time.Now()
	m, err := nc.Request("ws.ctl.join.user."+user, body, joinWait)
	if err != nil {
		return 0, 0, fmt.Errorf("no answer: %w", err)
	}
	answer = time.Since(p.start)
	var a struct {
		OK    bool            `json:"ok"`
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &a); err != nil || !a.OK {
		return 0, 0, fmt.Errorf("answer %s", m.Data)
	}
	if err := nc.Publish("ws.send.group."+group, []byte(`{"action":"`+joinAction+`","details":`+strconv.Itoa(n)+`}`)); err != nil {
		return 0, 0, fmt.Errorf("publish: %w", err)
	}
	t := time.NewTimer(joinWait)
	defer t.Stop()
	select {
	case <-p.arrived:
		return answer, time.Duration(p.last.Load() - p.start.UnixNano()), nil
	case <-t.C:
		return 0, 0, fmt.Errorf("%w: %d of them missed it", errLost, p.left.Load())
	}
}

// trimDetails returns the details of a frame's rest after the action:
// `<details>]` or `<details>,<ref>…]`.
func trimDetails(rest []byte) []byte {
	for i, c := range rest {
		if c == ',' || c == ']' {
			return rest[:i]
		}
	}
	return rest
}
