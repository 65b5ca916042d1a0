package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/wsgate/wsgate/bench/internal/hist"
)

// stormConfig: Users connections with history and Bystanders on one edge;
// Rate messages per second round robin over the users and ByRate over the
// bystanders, from before the storm to its end. After Before, every user's
// socket is dropped at once and each reconnects with since after a random
// wait of 0–Spread.
type stormConfig struct {
	Users      int
	Bystanders int
	Rate       float64
	ByRate     float64
	Spread     time.Duration
	Before     time.Duration
	Drain      time.Duration
}

func (c stormConfig) command() string {
	return fmt.Sprintf("bench/.bin/recovery -scenario storm -storm-users %d -bystanders %d -storm-rate %g -bystander-rate %g -spread %s -before %s"+storageArg(),
		c.Users, c.Bystanders, c.Rate, c.ByRate, c.Spread, c.Before)
}

type stormResult struct {
	lost, dups, outOfOrder int64
	notRecovered, caught   int64
	lastLive               time.Duration
	section                string
}

func storm(ctx context.Context, e env, c stormConfig) (stormResult, error) {
	var res stormResult
	e.logf("storm: starting natsd and one edge")
	st, err := e.start(ctx, "storm", 1)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := st.Stop(); err != nil {
			e.logf("storm: stop: %v", err)
		}
	}()
	all, err := makeUsers(c.Users+c.Bystanders, e.secret)
	if err != nil {
		return res, err
	}
	users, bystanders := all[:c.Users], all[c.Users:]
	m, mb := newMetrics(), newMetrics()
	cctx, cancelClients := context.WithCancel(ctx)
	pop, popB := newPopulation(st.URLs, m), newPopulation(st.URLs, mb)
	defer func() {
		cancelClients()
		pop.stop()
		popB.stop()
	}()
	sem := make(chan struct{}, dialParallel)
	for _, u := range users {
		pop.keep(cctx, u, 0, sem, func(ctx context.Context, u *user) (int, bool) {
			select {
			case <-time.After(rand.N(c.Spread)):
				return 0, true
			case <-ctx.Done():
				return 0, false
			}
		})
	}
	for _, u := range bystanders {
		popB.keep(cctx, u, 0, sem, func(context.Context, *user) (int, bool) { return 0, false })
	}
	if !waitFor(ctx, startBudget(len(all)), allLive(all)) {
		return res, fmt.Errorf("storm: the %d connections did not all open", len(all))
	}
	e.logf("storm: %d + %d connections live; publishing %g/s to the users and %g/s to the bystanders", c.Users, c.Bystanders, c.Rate, c.ByRate)

	pub, err := newPublisher(st.NATSURL, e.prefix)
	if err != nil {
		return res, err
	}
	pubB, err := newPublisher(st.NATSURL, e.prefix)
	if err != nil {
		pub.close()
		return res, err
	}
	pctx, stopPublishing := context.WithCancel(ctx)
	var publishers sync.WaitGroup
	var took, tookB time.Duration
	publishers.Go(func() {
		took, _ = pace(pctx, c.Rate, -1, func(i int64) error { return pub.send(pctx, users[i%int64(len(users))]) })
	})
	publishers.Go(func() {
		tookB, _ = pace(pctx, c.ByRate, -1, func(i int64) error { return pubB.send(pctx, bystanders[i%int64(len(bystanders))]) })
	})
	stopAll := func() {
		stopPublishing()
		publishers.Wait()
		pub.close()
		pubB.close()
	}

	// Before: the bystanders' latency in steady state.
	select {
	case <-time.After(c.Before):
	case <-ctx.Done():
		stopAll()
		return res, ctx.Err()
	}
	before := mb.live.Swap(hist.New())
	storedAtDrop, storedBAtDrop := pub.stored.Load(), pubB.stored.Load()
	e.logf("storm: dropping %d sockets", c.Users)
	dropped := time.Now()
	for _, u := range users {
		pop.conns.drop(u.idx)
	}
	allBack := waitFor(ctx, c.Spread+c.Drain, func() bool { return m.caught.Load()+m.notRecovered.Load() >= int64(c.Users) })
	end := time.Now()
	if last := m.lastCaught.Load(); last > dropped.UnixNano() {
		end = time.Unix(0, last)
	}
	during := mb.live.Swap(hist.New())
	usersRate := float64(pub.stored.Load()-storedAtDrop) / end.Sub(dropped).Seconds()
	byRate := float64(pubB.stored.Load()-storedBAtDrop) / end.Sub(dropped).Seconds()
	res.lastLive = end.Sub(dropped)
	e.logf("storm: last client live %s after the drop; stopping the publishers", res.lastLive.Round(time.Millisecond))
	stopAll()
	waitFor(ctx, c.Drain, allReceived(all))
	time.Sleep(time.Second) // a late duplicate has a moment to arrive
	cancelClients()
	pop.stop()
	popB.stop()
	t, tb := count(users), count(bystanders)

	res.lost, res.dups = t.lost+tb.lost, m.dups.Load()+mb.dups.Load()
	res.outOfOrder = m.outOfOrder.Load() + mb.outOfOrder.Load() + m.seqBack.Load() + mb.seqBack.Load()
	res.notRecovered, res.caught = m.notRecovered.Load(), m.caught.Load()
	var v verdict
	v.check(allBack && res.caught == int64(c.Users), "%d of %d clients caught up", res.caught, c.Users)
	v.check(res.lost == 0, "%d messages lost", res.lost)
	v.check(res.dups == 0, "%d duplicated", res.dups)
	v.check(res.outOfOrder == 0, "%d out of order", res.outOfOrder)
	v.check(res.notRecovered == 0, "%d recovered:false", res.notRecovered)

	steadyRate := fmt.Sprintf("%.0f msg/s to the users, %.0f msg/s to the bystanders (whole run)",
		float64(pub.stored.Load())/took.Seconds(), float64(pubB.stored.Load())/tookB.Seconds())
	stormRate := fmt.Sprintf("%.0f msg/s to the users, %.0f msg/s to the bystanders (during the storm)", usersRate, byRate)
	var b strings.Builder
	fmt.Fprintf(&b, "## storm: %d clients reconnect with since within %s beside %d bystanders\n\n", c.Users, c.Spread, c.Bystanders)
	fmt.Fprintf(&b, "Target (issue 16): a storm of 10,000 clients reconnecting with `since` within 10 s: the time until the last one is live, and the other connections' latency during it (reported; no threshold). Pass: every client recovered and caught up, 0 lost, 0 duplicated. Result: %s\n\n", v.String())
	fmt.Fprintf(&b, "Conditions: %s; %s; one edge holding %d users with history and %d bystanders; messages published all along at %g msg/s (target) round robin over the users and %g msg/s over the bystanders; after %s every user's socket was dropped at once (closed with a TCP reset, no close handshake), and each reconnected with `?since=<epoch>:<seq>` after a random wait of 0–%s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine(), c.Users, c.Bystanders, c.Rate, c.ByRate, c.Before, c.Spread)
	fmt.Fprintf(&b, "Command: `%s`\n\n", c.command())
	fmt.Fprintf(&b, "Time from the drop until the last client was live (recovered and caught up): **%s**.\n\n", res.lastLive.Round(time.Millisecond))
	b.WriteString(latencyHead)
	b.WriteString(latencyRow("bystanders, publish → receipt, before the storm", before.Snapshot(), steadyRate))
	b.WriteString(latencyRow("bystanders, publish → receipt, during the storm", during.Snapshot(), stormRate))
	b.WriteString(latencyRow("storm clients, socket end → Server/recovery (includes the 0–"+c.Spread.String()+" wait)", m.endToRec.Snapshot(), stormRate))
	b.WriteString(latencyRow("storm clients, new socket open → Server/recovery", m.openToRec.Snapshot(), stormRate))
	b.WriteString(latencyRow("storm clients, new socket open → caught up", m.openCaught.Snapshot(), stormRate))
	b.WriteString("\n| delivery | count |\n|---|---:|\n")
	fmt.Fprintf(&b, "| reconnections with since | %d |\n| recovered: true | %d |\n| recovered: false | %d |\n| caught up | %d |\n", m.reconnects.Load(), m.recovered.Load(), res.notRecovered, res.caught)
	fmt.Fprintf(&b, "| messages replayed | %d |\n| numbers expected (users + bystanders) | %d |\n| received (distinct) | %d |\n", m.replayed.Load(), t.expected+tb.expected, t.received+tb.received)
	fmt.Fprintf(&b, "| lost | %d |\n| duplicated | %d |\n| out of order (or seq not increasing) | %d |\n", res.lost, res.dups, res.outOfOrder)
	b.WriteString(m.ends.rows("storm clients' sockets ended: "))
	b.WriteString("\n")
	res.section = b.String()
	return res, v.err("storm")
}
