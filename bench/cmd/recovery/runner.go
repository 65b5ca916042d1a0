package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgate/wsgate/bench/internal/stack"
)

// Waiting for the whole population.
const (
	pollEvery     = 20 * time.Millisecond
	dialParallel  = 200 // connections opened at once at the start of a scenario
	perConnBudget = 10 * time.Millisecond
)

// env is what every scenario shares: where the programs are, and where
// the servers' logs go.
type env struct {
	binDir string    // edge
	natsd  string    // bench's natsd
	dir    string    // servers' logs and JetStream storage
	secret string    // HMAC secret of the tokens
	prefix string    // WS_SUBJECT_PREFIX
	log    io.Writer // progress lines
}

// edgeEnv is the edges' environment in every scenario (besides the stack's own).
var edgeEnv = []string{"WS_HISTORY=memory", "WS_HISTORY_MAX_PER_SUBJECT=1000"}

// storageArg is "" for memory storage, or what the command of a figure
// needs to say for file storage.
func storageArg() string {
	if edgeEnv[0] == "WS_HISTORY=memory" {
		return ""
	}
	return " -storage file"
}

// setStorage makes the stream's storage s (memory or file).
func setStorage(s string) error {
	if s != "memory" && s != "file" {
		return fmt.Errorf("-storage %q: memory or file", s)
	}
	edgeEnv[0] = "WS_HISTORY=" + s
	return nil
}

// sendQueue is the edges' EDGE_SEND_QUEUE.
const sendQueue = 1024

// start starts natsd with JetStream and edges with the history on.
func (e env) start(ctx context.Context, name string, edges int) (*stack.Stack, error) {
	return stack.Start(ctx, stack.Config{
		Gateway: "wsgate", Edges: edges, BinDir: e.binDir, NATSD: e.natsd, Secret: e.secret,
		SendQueue: sendQueue, JetStream: true, EdgeEnv: edgeEnv, Dir: e.dir + "/" + name,
	})
}

func (e env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// makeUsers returns users u0 … u<n-1> with their tokens.
func makeUsers(n int, secret string) ([]*user, error) {
	users := make([]*user, n)
	exp := time.Now().Add(tokenLifetime).Unix()
	for i := range users {
		name := "u" + strconv.Itoa(i)
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": name, "exp": exp}).SignedString([]byte(secret))
		if err != nil {
			return nil, err
		}
		users[i] = &user{idx: i, name: name, token: tok}
	}
	return users, nil
}

// population runs one goroutine per user that keeps its connection: it
// connects, reads until the socket ends, then asks again where (and when)
// to connect next.
type population struct {
	d     dialer
	urls  []string
	m     *metrics
	conns *conns
	wg    sync.WaitGroup
}

func newPopulation(urls []string, m *metrics) *population {
	return &population{d: newDialer(), urls: urls, m: m, conns: newConns()}
}

// again says which edge a user whose socket ended connects to next, after
// waiting as it likes; false: it stays away.
type again func(ctx context.Context, u *user) (edge int, ok bool)

// keep starts u's goroutine on edges[edge]; sem (may be nil) bounds the
// first dials.
func (p *population) keep(ctx context.Context, u *user, edge int, sem chan struct{}, next again) {
	p.wg.Go(func() {
		var ended time.Time
		first := true
		for {
			if first && sem != nil {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
			ws, err := connect(ctx, p.d, p.urls, edge, u, p.m)
			if first && sem != nil {
				<-sem
			}
			first = false
			if err != nil {
				return
			}
			u.begin(ended, p.m)
			p.conns.set(u.idx, ws)
			if ctx.Err() != nil {
				_ = ws.Close() // closeAll may have run before set
			}
			u.read(ws, p.m)
			p.conns.set(u.idx, nil)
			ended = time.Now()
			if ctx.Err() != nil {
				return
			}
			var ok bool
			if edge, ok = next(ctx, u); !ok {
				return
			}
		}
	})
}

// stop closes every socket and waits for the goroutines; cancel ctx first.
func (p *population) stop() {
	p.conns.closeAll()
	p.wg.Wait()
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(pollEvery)
	}
	return true
}

// startBudget is how long n connections may take to open.
func startBudget(n int) time.Duration { return 60*time.Second + time.Duration(n)*perConnBudget }

func allLive(users []*user) func() bool {
	return func() bool {
		for _, u := range users {
			if !u.live.Load() {
				return false
			}
		}
		return true
	}
}

// allReceived holds once every user received its last published number.
func allReceived(users []*user) func() bool {
	return func() bool {
		for _, u := range users {
			if u.last.Load() < u.published.Load() {
				return false
			}
		}
		return true
	}
}

// tally is the exactly-once check of a population, made after its readers
// ended: every published number of every user once, in order.
type tally struct {
	expected, received, lost int64
	usersMissing             int
}

func count(users []*user) tally {
	var t tally
	for _, u := range users {
		exp := u.published.Load()
		t.expected += exp
		t.received += u.distinct
		if miss := exp - u.distinct; miss > 0 {
			t.lost += miss
			t.usersMissing++
		}
	}
	return t
}

// machine describes where the figures were made.
func machine() string {
	return fmt.Sprintf("%s/%s, %d CPUs (GOMAXPROCS %d), %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
}
