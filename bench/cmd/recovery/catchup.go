package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// catchupTarget is issue 16's target for the p99 of a catch-up of 100
// missed messages.
const catchupTarget = 50 * time.Millisecond

// catchupConfig: Users connections over Edges edges receive one message
// each, drop their sockets, miss Missed messages each (published at Rate
// per second, 0: as fast as the stream acknowledges), then reconnect with
// since, ReconnectRate connections per second.
type catchupConfig struct {
	Users         int
	Edges         int
	Missed        int
	Rate          float64
	ReconnectRate float64
	Drain         time.Duration
}

func (c catchupConfig) command() string {
	return fmt.Sprintf("bench/.bin/recovery -scenario catchup -catchup-users %d -edges %d -missed %d -catchup-rate %g -reconnect-rate %g"+storageArg(),
		c.Users, c.Edges, c.Missed, c.Rate, c.ReconnectRate)
}

type catchupResult struct {
	lost, dups, outOfOrder int64
	notRecovered, caught   int64
	p99                    time.Duration
	section                string
}

func catchup(ctx context.Context, e env, c catchupConfig) (catchupResult, error) {
	var res catchupResult
	e.logf("catchup: starting natsd and %d edges", c.Edges)
	st, err := e.start(ctx, "catchup", c.Edges)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := st.Stop(); err != nil {
			e.logf("catchup: stop: %v", err)
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
	// A user whose socket was dropped comes back when its gate opens.
	gates := make([]chan struct{}, len(users))
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	sem := make(chan struct{}, dialParallel)
	for i, u := range users {
		pop.keep(cctx, u, i%len(st.URLs), sem, func(ctx context.Context, u *user) (int, bool) {
			select {
			case <-gates[u.idx]:
				return u.idx % len(st.URLs), true
			case <-ctx.Done():
				return 0, false
			}
		})
	}
	if !waitFor(ctx, startBudget(c.Users), allLive(users)) {
		return res, fmt.Errorf("catchup: the %d connections did not all open", c.Users)
	}
	pub, err := newPublisher(st.NATSURL, e.prefix)
	if err != nil {
		return res, err
	}
	defer func() {
		if pub != nil {
			pub.close()
		}
	}()
	// One message each, so that every client has a position to recover from.
	if _, err := pace(ctx, 0, int64(len(users)), func(i int64) error { return pub.send(ctx, users[i]) }); err != nil {
		return res, err
	}
	if !waitFor(ctx, c.Drain, allReceived(users)) {
		return res, fmt.Errorf("catchup: the first message did not reach every client")
	}
	e.logf("catchup: %d clients have a position; dropping them", c.Users)
	for _, u := range users {
		pop.conns.drop(u.idx)
	}
	if !waitFor(ctx, c.Drain, func() bool {
		for _, u := range users {
			if u.live.Load() {
				return false
			}
		}
		return true
	}) {
		return res, fmt.Errorf("catchup: sockets still open after the drop")
	}
	total := int64(c.Missed) * int64(len(users))
	took, err := pace(ctx, c.Rate, total, func(i int64) error { return pub.send(ctx, users[i%int64(len(users))]) })
	if err != nil {
		return res, err
	}
	if !waitFor(ctx, c.Drain, func() bool { return pub.stored.Load() == total+int64(len(users)) }) {
		return res, fmt.Errorf("catchup: the stream acknowledged %d of %d messages", pub.stored.Load(), total+int64(len(users)))
	}
	pubRate := float64(total) / took.Seconds()
	e.logf("catchup: %d missed messages stored (%.0f/s); reconnecting at %g/s", total, pubRate, c.ReconnectRate)
	start := time.Now()
	if _, err := pace(ctx, c.ReconnectRate, int64(len(users)), func(i int64) error { close(gates[i]); return nil }); err != nil {
		return res, err
	}
	reconnectRate := float64(len(users)) / time.Since(start).Seconds()
	waitFor(ctx, c.Drain, func() bool { return m.caught.Load()+m.notRecovered.Load() >= int64(len(users)) && allReceived(users)() })
	time.Sleep(time.Second) // a late duplicate has a moment to arrive
	cancelClients()
	pop.stop()
	pub.close()
	pub = nil
	t := count(users)

	catch := m.openCaught.Snapshot()
	res = catchupResult{lost: t.lost, dups: m.dups.Load(), outOfOrder: m.outOfOrder.Load() + m.seqBack.Load(),
		notRecovered: m.notRecovered.Load(), caught: m.caught.Load(), p99: time.Duration(catch.Quantile(0.99)) * time.Microsecond}
	var v verdict
	v.check(res.caught == int64(len(users)), "%d of %d clients caught up", res.caught, len(users))
	v.check(res.p99 <= catchupTarget, "p99 %s > %s", res.p99, catchupTarget)
	v.check(t.lost == 0, "%d messages lost (%d users)", t.lost, t.usersMissing)
	v.check(res.dups == 0, "%d duplicated", res.dups)
	v.check(res.outOfOrder == 0, "%d out of order", res.outOfOrder)
	v.check(res.notRecovered == 0, "%d recovered:false", res.notRecovered)

	var b strings.Builder
	fmt.Fprintf(&b, "## catchup: %d clients each catch up %d missed messages\n\n", c.Users, c.Missed)
	fmt.Fprintf(&b, "Target (issue 16): catch-up of 100 missed messages p99 ≤ %s, every number present once. Result: %s\n\n", catchupTarget, v.String())
	fmt.Fprintf(&b, "Conditions: %s; %s; %d users, one connection each, over %d edges; each received one message (its position), then all sockets were dropped (closed with a TCP reset, no close handshake); %d messages per user (%d in all) were published and acknowledged meanwhile at %.0f msg/s; then the clients reconnected with `?since=<epoch>:<seq>`, %.0f per second (target %g), each to its own edge. Nothing else is published during the catch-up.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine(), c.Users, c.Edges, c.Missed, total, pubRate, reconnectRate, c.ReconnectRate)
	fmt.Fprintf(&b, "Command: `%s`\n\n", c.command())
	b.WriteString("| time | count | p50 ms | p99 ms | max ms | rates |\n|---|---:|---:|---:|---:|---|\n")
	rate := fmt.Sprintf("%.0f reconnections/s; missed messages published at %.0f msg/s before", reconnectRate, pubRate)
	b.WriteString(latencyRow("new socket open → Server/recovery", m.openToRec.Snapshot(), rate))
	b.WriteString(latencyRow(fmt.Sprintf("new socket open → %dth missed message received", c.Missed), catch, rate))
	b.WriteString("\n| delivery | count |\n|---|---:|\n")
	fmt.Fprintf(&b, "| recovered: true | %d |\n| recovered: false | %d |\n| caught up | %d |\n", m.recovered.Load(), res.notRecovered, res.caught)
	fmt.Fprintf(&b, "| messages replayed | %d |\n| numbers expected | %d |\n| received (distinct) | %d |\n", m.replayed.Load(), t.expected, t.received)
	fmt.Fprintf(&b, "| lost | %d |\n| duplicated | %d |\n| out of order (or seq not increasing) | %d |\n\n", t.lost, res.dups, res.outOfOrder)
	res.section = b.String()
	return res, v.err("catchup")
}
