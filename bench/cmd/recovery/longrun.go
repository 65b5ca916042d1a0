package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/bench/internal/hist"
)

// longrunConfig: Users connections (one per user) over Edges edges;
// Messages numbered messages at Rate per second, round robin over the
// users; every KillEvery one edge (in turn) is SIGKILLed and restarted
// (at most MaxKills times, 0: no limit); a client whose socket ended waits
// up to Jitter, then reconnects to a random edge (the other one when that
// one is down) with since.
type longrunConfig struct {
	Users     int
	Edges     int
	Messages  int64
	Rate      float64
	KillEvery time.Duration
	MaxKills  int
	Jitter    time.Duration
	Drain     time.Duration // longest wait for the last messages after the last publish
}

func (c longrunConfig) command() string {
	return fmt.Sprintf("bench/.bin/recovery -scenario longrun -users %d -edges %d -messages %d -rate %g -kill-every %s -max-kills %d -jitter %s"+storageArg(),
		c.Users, c.Edges, c.Messages, c.Rate, c.KillEvery, c.MaxKills, c.Jitter)
}

// longrunResult is what the smoke test checks.
type longrunResult struct {
	kills        int
	reconnects   int64
	recovered    int64
	notRecovered int64
	lost, dups   int64
	outOfOrder   int64
	seqBack      int64
	pubLost      int64
	section      string
}

func longrun(ctx context.Context, e env, c longrunConfig) (longrunResult, error) {
	var res longrunResult
	e.logf("longrun: starting natsd and %d edges", c.Edges)
	st, err := e.start(ctx, "longrun", c.Edges)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := st.Stop(); err != nil {
			e.logf("longrun: stop: %v", err)
		}
	}()
	users, err := makeUsers(c.Users, e.secret)
	if err != nil {
		return res, err
	}
	m := newMetrics()
	cctx, cancelClients := context.WithCancel(ctx)
	pop := newPopulation(st.URLs, m)
	defer func() {
		cancelClients()
		pop.stop()
	}()
	next := func(ctx context.Context, u *user) (int, bool) {
		if c.Jitter > 0 {
			select {
			case <-time.After(rand.N(c.Jitter)):
			case <-ctx.Done():
				return 0, false
			}
		}
		return rand.IntN(len(st.URLs)), true
	}
	sem := make(chan struct{}, dialParallel)
	for i, u := range users {
		pop.keep(cctx, u, i%len(st.URLs), sem, next)
	}
	if !waitFor(ctx, startBudget(c.Users), allLive(users)) {
		return res, fmt.Errorf("longrun: the %d connections did not all open", c.Users)
	}
	e.logf("longrun: %d connections live; publishing %d messages at %g/s", c.Users, c.Messages, c.Rate)

	pub, err := newPublisher(st.NATSURL, e.prefix)
	if err != nil {
		return res, err
	}
	// The killer: every KillEvery, SIGKILL one edge in turn and restart it.
	kctx, stopKiller := context.WithCancel(ctx)
	var kills atomic.Int64
	restarts := hist.New()
	var killErr error
	var killer sync.WaitGroup
	killer.Go(func() {
		t := time.NewTicker(c.KillEvery)
		defer t.Stop()
		for k := 0; c.MaxKills == 0 || k < c.MaxKills; k++ {
			select {
			case <-kctx.Done():
				return
			case <-t.C:
			}
			name := "edge" + strconv.Itoa(k%c.Edges+1)
			t0 := time.Now()
			if err := st.Kill(name); err != nil {
				killErr = err
				return
			}
			kills.Add(1)
			if err := st.Restart(ctx, name); err != nil {
				killErr = err
				return
			}
			restarts.Record(time.Since(t0).Microseconds())
			e.logf("longrun: killed and restarted %s (%d published, %d recovered, %d not)", name, pub.stored.Load(), m.recovered.Load(), m.notRecovered.Load())
		}
	})
	took, perr := pace(ctx, c.Rate, c.Messages, func(i int64) error {
		return pub.send(ctx, users[i%int64(len(users))])
	})
	stopKiller()
	killer.Wait()
	pub.close()
	achieved := float64(pub.stored.Load()) / took.Seconds()
	if perr != nil {
		return res, perr
	}
	if killErr != nil {
		return res, fmt.Errorf("longrun: kill/restart: %w", killErr)
	}
	e.logf("longrun: published %d in %s (%.0f/s); waiting for the last messages", pub.stored.Load(), took.Round(time.Millisecond), achieved)
	waitFor(ctx, c.Drain, allReceived(users))
	// Anything still on its way (a duplicate, say) has a moment to arrive.
	time.Sleep(time.Second)
	cancelClients()
	pop.stop()
	t := count(users)

	res = longrunResult{
		kills: int(kills.Load()), reconnects: m.reconnects.Load(), recovered: m.recovered.Load(), notRecovered: m.notRecovered.Load(),
		lost: t.lost, dups: m.dups.Load(), outOfOrder: m.outOfOrder.Load(), seqBack: m.seqBack.Load(), pubLost: pub.lost.Load(),
	}
	var v verdict
	v.check(t.lost == 0, "%d messages lost (%d users)", t.lost, t.usersMissing)
	v.check(res.dups == 0, "%d duplicated", res.dups)
	v.check(res.outOfOrder == 0 && res.seqBack == 0, "%d out of order, %d seq not increasing", res.outOfOrder, res.seqBack)
	v.check(res.notRecovered == 0, "%d recovered:false", res.notRecovered)
	v.check(res.pubLost == 0, "%d publishes never acknowledged", res.pubLost)
	v.check(res.kills > 0, "no edge was killed (the run was shorter than -kill-every)")

	rate := fmt.Sprintf("%.0f msg/s (target %g)", achieved, c.Rate)
	var b strings.Builder
	fmt.Fprintf(&b, "## longrun: %d messages to %d users across %d edge kills\n\n", pub.stored.Load(), c.Users, res.kills)
	fmt.Fprintf(&b, "Target (issue 16): 1,000,000 messages to 10,000 users across repeated edge kills, 0 lost and 0 duplicated; any loss, duplicate or recovered:false fails. Result: %s\n\n", v.String())
	fmt.Fprintf(&b, "Conditions: %s; %s; %d users, one connection each, spread over %d edges; %d messages round robin over the users (%.1f per user) at %s over %s; every %s one edge in turn SIGKILLed and restarted at once; a client whose socket ended waits a random 0–%s, then connects to a random edge (the other when that one is down) with `?since=<epoch>:<seq>` of the last message it received.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine(), c.Users, c.Edges, pub.stored.Load(), float64(pub.stored.Load())/float64(c.Users), rate, took.Round(time.Second), c.KillEvery, c.Jitter)
	fmt.Fprintf(&b, "Command: `%s`\n\n", c.command())
	b.WriteString("| delivery | count |\n|---|---:|\n")
	fmt.Fprintf(&b, "| messages stored (JetStream acknowledged) | %d |\n", pub.stored.Load())
	fmt.Fprintf(&b, "| failed acknowledgements, sent again with the same Nats-Msg-Id | %d |\n", pub.retries.Load())
	fmt.Fprintf(&b, "| … of which the stream already had (kept once by its duplicate window) | %d |\n", pub.dupAcks.Load())
	fmt.Fprintf(&b, "| publishes never acknowledged | %d |\n", res.pubLost)
	fmt.Fprintf(&b, "| numbers expected by the clients | %d |\n", t.expected)
	fmt.Fprintf(&b, "| numbers received (distinct) | %d |\n", t.received)
	fmt.Fprintf(&b, "| lost | %d |\n| duplicated | %d |\n| out of order | %d |\n| seq not increasing on a connection | %d |\n\n", t.lost, res.dups, res.outOfOrder, res.seqBack)
	b.WriteString("| kills and recoveries | count |\n|---|---:|\n")
	fmt.Fprintf(&b, "| edge SIGKILLs (each followed by a restart) | %d |\n", res.kills)
	fmt.Fprintf(&b, "| reconnections with since | %d |\n", res.reconnects)
	fmt.Fprintf(&b, "| recovered: true | %d |\n| recovered: false | %d |\n", res.recovered, res.notRecovered)
	fmt.Fprintf(&b, "| reconnections whose socket ended before Server/recovery (the next kill, say) | %d |\n", res.reconnects-res.recovered-res.notRecovered)
	fmt.Fprintf(&b, "| recoveries caught up (the others' socket ended again first) | %d |\n", m.caught.Load())
	fmt.Fprintf(&b, "| messages replayed (sum of Server/recovery counts) | %d |\n", m.replayed.Load())
	fmt.Fprintf(&b, "| dials refused or failed (the killed edge was down) | %d |\n", m.dialErrors.Load())
	b.WriteString(m.ends.rows("sockets ended: "))
	b.WriteString("\n")
	b.WriteString(latencyHead)
	b.WriteString(latencyRow("socket end → Server/recovery (includes the 0–"+c.Jitter.String()+" wait)", m.endToRec.Snapshot(), rate))
	b.WriteString(latencyRow("socket end → caught up (every number stored at the recovery received)", m.endToCaught.Snapshot(), rate))
	b.WriteString(latencyRow("new socket open → Server/recovery", m.openToRec.Snapshot(), rate))
	b.WriteString(latencyRow("new socket open → caught up", m.openCaught.Snapshot(), rate))
	b.WriteString(latencyRow("edge SIGKILL → restarted edge listening", restarts.Snapshot(), rate))
	b.WriteString(latencyRow("publish → receipt, live messages (kills included)", m.live.Load().Snapshot(), rate))
	b.WriteString("\n")
	res.section = b.String()
	return res, v.err("longrun")
}
