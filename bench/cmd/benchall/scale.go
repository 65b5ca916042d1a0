package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/bench/internal/plots"
)

// The scale set: wsgate alone, its clients spread over K edges (K = 1, 2,
// 4, 8) on one NATS server and on a cluster of NATS nodes (edges spread
// over the nodes), idle, unicast and broadcast at each K.

// scaleConfig are the parameters of a scale set.
type scaleConfig struct {
	edges          []int
	nodes          []int // NATS topologies: 1 is one server, more a cluster
	conns          int   // idle and unicast
	broadcastConns int
	hold           time.Duration // idle
	duration       time.Duration // unicast
	unicastRate    float64
	broadcastRate  float64
	messages       int
	client         string
	runs           int
}

// scaleFlags registers the scale set's flags on fs.
func scaleFlags(fs *flag.FlagSet) func() (scaleConfig, error) {
	edges := fs.String("edges", "1,2,4,8", "-set scale: edge counts K")
	nodes := fs.String("nats-nodes", "1,3", "-set scale: NATS topologies (1: one server; n > 1: a cluster of n natsd processes)")
	conns := fs.Int("conns", 20000, "-set scale: connections of the idle and unicast runs (one user each)")
	bconns := fs.Int("broadcast-conns", 10000, "-set scale: connections of the broadcast runs")
	hold := fs.Duration("hold", 30*time.Second, "-set scale: idle hold (longer than the edge's ping period to include the pings)")
	duration := fs.Duration("duration", 10*time.Second, "-set scale: unicast sending time")
	urate := fs.Float64("unicast-rate", 4000, "-set scale: unicast messages per second to random users")
	brate := fs.Float64("broadcast-rate", 5, "-set scale: broadcast messages per second")
	messages := fs.Int("messages", 50, "-set scale: broadcast messages")
	client := fs.String("client", "", "loadgen's -client for every run (epoll or gorilla; empty: loadgen's default, epoll)")
	return func() (scaleConfig, error) {
		c := scaleConfig{
			conns: *conns, broadcastConns: *bconns, hold: *hold, duration: *duration,
			unicastRate: *urate, broadcastRate: *brate, messages: *messages, client: *client,
		}
		var err error
		if c.edges, err = intList(*edges); err != nil {
			return c, fmt.Errorf("-edges: %w", err)
		}
		if c.nodes, err = intList(*nodes); err != nil {
			return c, fmt.Errorf("-nats-nodes: %w", err)
		}
		if c.conns < 1 || c.broadcastConns < 1 || c.messages < 1 || c.unicastRate <= 0 || c.broadcastRate <= 0 {
			return c, errors.New("-conns, -broadcast-conns, -messages and the rates must be positive")
		}
		return c, nil
	}
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// scaleRun is one loadgen invocation of the set.
type scaleRun struct {
	scenario string // idle, unicast, broadcast
	nodes    int
	edges    int
	conns    int
}

func (r scaleRun) name() string {
	return fmt.Sprintf("%s-n%d-k%d-c%d", r.scenario, r.nodes, r.edges, r.conns)
}

// args are loadgen's arguments for r, but -start and -json.
func (c scaleConfig) args(r scaleRun) []string {
	a := []string{"-scenario", r.scenario, "-conns", strconv.Itoa(r.conns), "-ramp", "2000",
		"-edges", strconv.Itoa(r.edges), "-nats-nodes", strconv.Itoa(r.nodes)}
	switch r.scenario {
	case "idle":
		a = append(a, "-duration", c.hold.String())
	case "unicast":
		a = append(a, "-rate", fmtFlag(c.unicastRate), "-duration", c.duration.String())
	case "broadcast":
		a = append(a, "-rate", fmtFlag(c.broadcastRate), "-messages", strconv.Itoa(c.messages))
	}
	if c.client != "" {
		a = append(a, "-client", c.client)
	}
	return a
}

func fmtFlag(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// plan is every run of one pass of the set, in order: for each topology
// and K idle, unicast and broadcast; then idle at a quarter and half of
// the connections on one edge and one server, for the curve of cost per
// connection against connections.
func (c scaleConfig) plan() []scaleRun {
	var p []scaleRun
	for _, n := range c.nodes {
		for _, k := range c.edges {
			p = append(p,
				scaleRun{"idle", n, k, c.conns},
				scaleRun{"unicast", n, k, c.conns},
				scaleRun{"broadcast", n, k, c.broadcastConns})
		}
	}
	for _, f := range []int{4, 2} {
		if n := c.conns / f; n >= 1 && n != c.conns {
			p = append(p, scaleRun{"idle", c.nodes[0], c.edges[0], n})
		}
	}
	return p
}

// runScale runs the scale set and writes its report and pictures.
func runScale(ctx context.Context, r *runner, c scaleConfig, out string, env machine, started time.Time) error {
	cells := map[scaleRun]*cell{}
	plan := c.plan()
	for k := 0; k < c.runs; k++ {
		for _, sr := range plan {
			cl := cells[sr]
			if cl == nil {
				cl = &cell{command: "bench/.bin/loadgen " + strings.Join(append([]string{"-start", "wsgate"}, c.args(sr)...), " ")}
				cells[sr] = cl
			}
			res, err := r.loadgen(ctx, sr.name(), "wsgate", c.args(sr))
			if err != nil {
				cl.errs = append(cl.errs, err.Error())
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			cl.runs = append(cl.runs, res)
		}
	}
	env.elapsed = time.Since(started)
	env.loadAfter = loadavg()
	pics, perr := scalePictures(c, cells, filepath.Dir(out))
	doc := renderScale(c, cells, env, r.results, out, pics, perr)
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		return err
	}
	return nil
}

// picture is a PNG written for the report, relative to its directory.
type picture struct {
	file, caption string
}

func topology(n int) string {
	if n <= 1 {
		return "one NATS server"
	}
	return fmt.Sprintf("%d-node NATS cluster", n)
}

// Scale figures.
var (
	mLostPlusErr = metric{"lost messages and errors", "lower", func(r *result) float64 {
		return float64(r.Lost + r.PublishErrors + r.ClientErrors + uint64(r.Failed) + uint64(r.Dropped))
	}}
	mAsked = metric{"asked rate (/s)", "higher", func(r *result) float64 { return r.Params.Rate }}
	// The split of mCPUPerMsg: interest routing is NATS's part.
	mNATSPerMsg  = metric{"… of which NATS (µs)", "lower", func(r *result) float64 { return r.cpuPerMsg("nats") }}
	mEdgesPerMsg = metric{"… of which the edges (µs)", "lower", func(r *result) float64 { return r.cpuPerMsg("edge") }}
)

// scalePictures draws the set's curves into dir/plots.
func scalePictures(c scaleConfig, cells map[scaleRun]*cell, dir string) ([]picture, error) {
	pdir := filepath.Join(dir, "plots")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	xs := func() []float64 {
		var x []float64
		for _, k := range c.edges {
			x = append(x, float64(k))
		}
		return x
	}
	byEdges := func(scenario string, n int, m metric) plots.Series {
		s := plots.Series{Name: topology(n), X: xs()}
		for _, k := range c.edges {
			s.Y = append(s.Y, cellVal(orEmpty(cells[scaleRun{scenario, n, k, c.connsOf(scenario)}]), m))
		}
		return s
	}
	var charts []struct {
		file, caption string
		chart         plots.Chart
	}
	add := func(file, caption string, ch plots.Chart) {
		charts = append(charts, struct {
			file, caption string
			chart         plots.Chart
		}{file, caption, ch})
	}
	perEdges := func(file, caption, scenario, ylabel string, m metric) {
		ch := plots.Chart{Title: caption, XLabel: "edges (K)", YLabel: ylabel, LogX: true}
		for _, n := range c.nodes {
			ch.Series = append(ch.Series, byEdges(scenario, n, m))
		}
		add(file, caption, ch)
	}
	perEdges("scaling-idle-rss.png", "idle: server RSS per connection against edges", "idle", "KiB per connection", mRSSPerConn)
	perEdges("scaling-idle-cpu.png", "idle: server CPU per connection per second against edges", "idle", "µs per connection per second", mIdleCPU)
	perEdges("scaling-unicast-cpu.png", "unicast: server CPU per delivered message against edges", "unicast", "µs per delivery (edges + NATS)", mCPUPerMsg)
	perEdges("scaling-broadcast-cpu.png", "broadcast: server CPU per delivery against edges", "broadcast", "µs per delivery (edges + NATS)", mCPUPerMsg)
	for _, sc := range []string{"unicast", "broadcast"} {
		ch := plots.Chart{Title: sc + ": latency against edges", XLabel: "edges (K)", YLabel: "ms", LogX: true}
		for _, n := range c.nodes {
			for _, q := range []metric{mP50, mP99} {
				s := byEdges(sc, n, q)
				s.Name = strings.TrimSuffix(strings.TrimPrefix(q.name, "latency "), " (ms)") + ", " + topology(n)
				ch.Series = append(ch.Series, s)
			}
		}
		add("scaling-"+sc+"-latency.png", ch.Title, ch)
	}
	// Cost per connection against connections: idle on the first edge
	// count and topology at a quarter, half and all of -conns.
	var conns []int
	for sr := range cells {
		if sr.scenario == "idle" && sr.nodes == c.nodes[0] && sr.edges == c.edges[0] {
			conns = append(conns, sr.conns)
		}
	}
	slices.Sort(conns)
	if len(conns) > 1 {
		for _, m := range []struct {
			file, caption, ylabel string
			m                     metric
		}{
			{"scaling-conns-rss.png", "idle: server RSS per connection against connections", "KiB per connection", mRSSPerConn},
			{"scaling-conns-cpu.png", "idle: server CPU per connection per second against connections", "µs per connection per second", mIdleCPU},
		} {
			s := plots.Series{Name: fmt.Sprintf("%d edge(s), %s", c.edges[0], topology(c.nodes[0]))}
			for _, n := range conns {
				s.X = append(s.X, float64(n))
				s.Y = append(s.Y, cellVal(orEmpty(cells[scaleRun{"idle", c.nodes[0], c.edges[0], n}]), m.m))
			}
			add(m.file, m.caption, plots.Chart{Title: m.caption, XLabel: "connections", YLabel: m.ylabel, LogX: true, Series: []plots.Series{s}})
		}
	}
	var pics []picture
	var errs []error
	for _, ch := range charts {
		if err := ch.chart.Save(filepath.Join(pdir, ch.file)); err != nil {
			errs = append(errs, err)
			continue
		}
		pics = append(pics, picture{filepath.Join("plots", ch.file), ch.caption})
	}
	return pics, errors.Join(errs...)
}

func (c scaleConfig) connsOf(scenario string) int {
	if scenario == "broadcast" {
		return c.broadcastConns
	}
	return c.conns
}

func orEmpty(c *cell) *cell {
	if c == nil {
		return &cell{}
	}
	return c
}

// command is the benchall command line that reproduces the set.
func (c scaleConfig) command(out string) string {
	ints := func(v []int) string {
		var s []string
		for _, n := range v {
			s = append(s, strconv.Itoa(n))
		}
		return strings.Join(s, ",")
	}
	cmd := fmt.Sprintf("bench/.bin/benchall -set scale -runs %d -edges %s -nats-nodes %s -conns %d -broadcast-conns %d -hold %s -duration %s -unicast-rate %s -broadcast-rate %s -messages %d",
		c.runs, ints(c.edges), ints(c.nodes), c.conns, c.broadcastConns, c.hold, c.duration, fmtFlag(c.unicastRate), fmtFlag(c.broadcastRate), c.messages)
	if c.client != "" {
		cmd += " -client " + c.client
	}
	return cmd + " -out " + out
}

func renderScale(c scaleConfig, cells map[scaleRun]*cell, env machine, rawDir, out string, pics []picture, picErr error) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cmd := c.command(out)
	w("# Scaling out: K edges on one NATS server and on a NATS cluster\n\n")
	w("Generated by `%s`. Do not edit by hand: that command rewrites it.\n\n", cmd)
	w("## Conditions\n\n")
	w("- Machine: %d cores, %.0f GiB, loopback only; the load tool, every edge and every NATS node share the cores, so more edges means more processes on the same two cores: read the *cost* rows (CPU per delivery, per connection), not the highest rate. Load average %s before, %s after (1, 5, 15 min); the set took %s.\n",
		env.cpus, env.memGiB, env.loadBefore, env.loadAfter, env.elapsed.Round(time.Second))
	w("- wsgate revision: %s. Go %s. Each figure is the median of %d runs.\n", orDash(env.revision), env.goVersion, c.runs)
	w("- Clients: one user per connection, users spread round robin over the K edges (`loadgen -edges K`); worker processes of at most 15,000 connections each (open-files limit 20,000 per process)%s.\n", clientNote(c.client))
	w("- NATS: `bench/.bin/natsd` (nats-server v2.15.2); for a cluster, that many natsd processes routed to each other, edge i connected to node i mod n, the publisher on node 1 (so a message to an edge on another node crosses a route). **Server figures are the sum over every edge and every NATS node.**\n")
	w("- idle: %d connections held %s; unicast: %d users, %s msg/s to random users for %s; broadcast: %d connections, %d messages of 128 B at %s msg/s.\n",
		c.conns, c.hold, c.conns, fmtFlag(c.unicastRate), c.duration, c.broadcastConns, c.messages, fmtFlag(c.broadcastRate))
	w("- Raw JSON records and logs: `%s` (not committed).\n\n", rawDir)

	row := func(scenario string, ms []metric) {
		w("| NATS | edges |")
		for _, m := range ms {
			w(" %s |", m.name)
		}
		w("\n|---|---:|")
		for range ms {
			w("---:|")
		}
		w("\n")
		for _, n := range c.nodes {
			for _, k := range c.edges {
				cl := orEmpty(cells[scaleRun{scenario, n, k, c.connsOf(scenario)}])
				w("| %s | %d |", topology(n), k)
				for _, m := range ms {
					w(" %s |", fmtNum(cellVal(cl, m)))
				}
				w("\n")
			}
		}
		w("\n")
	}
	w("## Idle: cost per connection\n\n")
	row("idle", []metric{mConnected, mRSSPerConn, mRSS, mIdleCPU, mRampCPU})
	w("## Unicast: cost per delivered message\n\n")
	row("unicast", []metric{mAsked, mRate, mDeliveries, mCPUPerMsg, mNATSPerMsg, mEdgesPerMsg, mServerCPU, mP50, mP99, mLostPlusErr, mClientCPU})
	w("%s", unicastSplitNote)
	w("## Broadcast: cost per delivery\n\n")
	row("broadcast", []metric{mAsked, mRate, mDeliveries, mCPUPerMsg, mNATSPerMsg, mEdgesPerMsg, mServerCPU, mP50, mP99, mLostPlusErr, mClientCPU})

	w("## Pictures\n\n")
	w("Every picture below is drawn by `%s` from the runs of the tables (the command of each run is listed under *Runs*).\n\n", cmd)
	for _, p := range pics {
		w("### %s\n\n![%s](%s)\n\n", p.caption, p.caption, p.file)
	}
	if picErr != nil {
		w("Pictures that could not be drawn: %v\n\n", picErr)
	}
	w("## Runs\n\n")
	for _, sr := range c.plan() {
		cl := orEmpty(cells[sr])
		w("- %s, %s, %d edge(s), %d connections (%d runs): `%s`\n", sr.scenario, topology(sr.nodes), sr.edges, sr.conns, len(cl.runs), cl.command)
		for _, e := range cl.errs {
			w("  - failed run: %s\n", e)
		}
		for _, r := range cl.runs {
			if !r.ok() {
				w("  - run with loss or errors: lost %d of %d, failed %d, dropped %d, errors %d %v\n", r.Lost, r.Expected, r.Failed, r.Dropped, r.PublishErrors+r.ClientErrors, first(r.ErrorSamples, 2))
			}
		}
	}
	w("\n")
	return b.String()
}

// unicastSplitNote reads the split of the unicast cost.
const unicastSplitNote = `Reading the split: interest routing sends each message to the one edge that holds its user, whatever
K. A fan-out to every edge would multiply NATS's part by K. What remains is a smaller rise: natsd writes
to K connections, each less often, so fewer messages share each system call. The edges' part is CPU over
the run of every edge process, their idle work included (pings, timers, the runtime's monitor: *server CPU
per connection per second* above, times the connections, over the rate). It grows with K because each
extra edge is one more process whose fixed work, and whose wake-ups for a share of the messages, the two
cores pay. On a cluster NATS's part roughly doubles from K = 2 on: the publisher is on node 1 and most
edges on others, so most messages cross a route.

`

func clientNote(client string) string {
	if client == "gorilla" {
		return "; clients read with a goroutine per connection (gorilla/websocket, `-client gorilla`)"
	}
	return "; clients read with the tool's epoll loops"
}
