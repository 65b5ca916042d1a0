package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The tabs set: what the JS client's shared mode (one connection per
// browser through a SharedWorker, clients/js) saves the edges. The same
// users idle twice on the same edges: once with a connection per tab (as
// every tab opens its own WebSocket), once with one connection per user.
// Memory only: the figures are not spoiled by a loaded machine.

// tabsConfig are the parameters of the tabs set.
type tabsConfig struct {
	users int
	tabs  int
	edges int
	hold  time.Duration
	runs  int
}

// tabsFlags registers the tabs set's flags on fs.
func tabsFlags(fs *flag.FlagSet) func() (tabsConfig, error) {
	users := fs.Int("users", 10000, "-set tabs: simulated users")
	tabs := fs.Int("tabs", 3, "-set tabs: browser tabs per user (connections per user without shared mode)")
	edges := fs.Int("tabs-edges", 2, "-set tabs: edges the users are spread over")
	hold := fs.Duration("tabs-hold", 10*time.Second, "-set tabs: idle hold after the ramp (memory is read when the ramp ends)")
	return func() (tabsConfig, error) {
		c := tabsConfig{users: *users, tabs: *tabs, edges: *edges, hold: *hold}
		if c.users < 1 || c.tabs < 2 || c.edges < 1 || c.hold <= 0 {
			return c, errors.New("-users, -tabs-edges and -tabs-hold must be positive, -tabs at least 2")
		}
		return c, nil
	}
}

// tabsMode is one side of the comparison.
type tabsMode struct {
	name string
	tabs int // connections per user
}

func (c tabsConfig) modes() []tabsMode {
	return []tabsMode{{"per tab", c.tabs}, {"shared", 1}}
}

// args are loadgen's arguments for m, but -start and -json: worker
// processes of at most 7,500 connections (the open-files limit is 20,000
// per process), at least two.
func (c tabsConfig) args(m tabsMode) []string {
	conns := c.users * m.tabs
	workers := max(2, (conns+7499)/7500)
	return []string{"-scenario", "idle", "-conns", strconv.Itoa(conns), "-tabs", strconv.Itoa(m.tabs),
		"-edges", strconv.Itoa(c.edges), "-workers", strconv.Itoa(workers), "-ramp", "2000", "-duration", c.hold.String()}
}

// command is the benchall command line that reproduces the set.
func (c tabsConfig) command(out string) string {
	return fmt.Sprintf("bench/.bin/benchall -set tabs -runs %d -users %d -tabs %d -tabs-edges %d -tabs-hold %s -out %s",
		c.runs, c.users, c.tabs, c.edges, c.hold, out)
}

// serverRSS sums the RSS (KiB) of the record's processes whose name has
// prefix (edge: every edge) or, with not, of every other one (NATS), when
// all connections are open and before any.
func serverRSS(r *result, prefix string, not bool) (after, before float64, ok bool) {
	for i, name := range r.Server.Names {
		if strings.HasPrefix(name, prefix) == not {
			continue
		}
		if i >= len(r.Server.Before) || i >= len(r.Server.AfterRamp) {
			return 0, 0, false
		}
		after += float64(r.Server.AfterRamp[i].RSSKiB)
		before += float64(r.Server.Before[i].RSSKiB)
		ok = true
	}
	return after, before, ok
}

// tabsMetrics are the table's figures; users divides the per-user ones.
func tabsMetrics(users int) []metric {
	edge := func(f func(after, before float64, r *result) float64) func(*result) float64 {
		return func(r *result) float64 {
			after, before, ok := serverRSS(r, "edge", false)
			if !ok || r.Connected == 0 {
				return math.NaN()
			}
			return f(after, before, r)
		}
	}
	return []metric{
		mConnected,
		{"edge RSS, sum over edges (MiB)", "lower", edge(func(a, _ float64, _ *result) float64 { return a / 1024 })},
		{"edge RSS growth with the connections (MiB)", "lower", edge(func(a, b float64, _ *result) float64 { return (a - b) / 1024 })},
		{"edge RSS growth per user (KiB)", "lower", edge(func(a, b float64, _ *result) float64 { return (a - b) / float64(users) })},
		{"edge RSS growth per connection (KiB)", "lower", edge(func(a, b float64, r *result) float64 { return (a - b) / float64(r.Connected) })},
		{"NATS RSS (MiB)", "lower", func(r *result) float64 {
			after, _, ok := serverRSS(r, "edge", true)
			if !ok {
				return math.NaN()
			}
			return after / 1024
		}},
	}
}

// runTabs runs the tabs set and writes its report.
func runTabs(ctx context.Context, r *runner, c tabsConfig, out string, env machine, started time.Time) error {
	cells := map[string]*cell{}
	for range c.runs {
		for _, m := range c.modes() {
			cl := cells[m.name]
			if cl == nil {
				cl = &cell{command: "bench/.bin/loadgen " + strings.Join(append([]string{"-start", "wsgate"}, c.args(m)...), " ")}
				cells[m.name] = cl
			}
			res, err := r.loadgen(ctx, "tabs-"+strconv.Itoa(m.tabs), "wsgate", c.args(m))
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
	return os.WriteFile(out, []byte(renderTabs(c, cells, env, r.results, out)), 0o644)
}

// tabsPass reports whether every run of both modes held all its
// connections, none failed or dropped, and shared mode used less edge
// memory than a connection per tab.
func tabsPass(c tabsConfig, cells map[string]*cell) (bool, []string) {
	var why []string
	for _, m := range c.modes() {
		cl := orEmpty(cells[m.name])
		if len(cl.runs) == 0 || len(cl.errs) > 0 {
			why = append(why, fmt.Sprintf("%s: %d runs, %d failed", m.name, len(cl.runs), len(cl.errs)))
		}
		for _, r := range cl.runs {
			if r.Connected != int64(c.users*m.tabs) || r.Failed != 0 || r.Dropped != 0 {
				why = append(why, fmt.Sprintf("%s: %d of %d connections held, %d failed, %d dropped", m.name, r.Connected, c.users*m.tabs, r.Failed, r.Dropped))
			}
		}
	}
	grow := tabsMetrics(c.users)[2]
	perTab, shared := cellVal(orEmpty(cells["per tab"]), grow), cellVal(orEmpty(cells["shared"]), grow)
	if !(shared < perTab) {
		why = append(why, fmt.Sprintf("shared mode's edge memory growth %s MiB is not below per tab's %s MiB", fmtNum(shared), fmtNum(perTab)))
	}
	return len(why) == 0, why
}

func renderTabs(c tabsConfig, cells map[string]*cell, env machine, rawDir, out string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cmd := c.command(out)
	w("# Shared mode: edge connections and memory for %s users with %d tabs each\n\n", fmtInt(c.users), c.tabs)
	w("Generated by `%s` (`make bench-tabs`). Do not edit by hand: that command rewrites it.\n\n", cmd)
	w("The JS client's shared mode (`createClient({url, shared: true})`, clients/js/README.md) runs one\n")
	w("connection per browser in a SharedWorker; without it every tab opens its own WebSocket. This set\n")
	w("holds the same users idle on the same edges both ways and reads the edges' memory.\n\n")
	w("## Conditions\n\n")
	w("- Machine: %d cores, %.0f GiB, loopback only. Load average %s before, %s after (1, 5, 15 min); the set took %s. Memory figures do not depend on the machine's load.\n",
		env.cpus, env.memGiB, env.loadBefore, env.loadAfter, env.elapsed.Round(time.Second))
	w("- wsgate revision: %s. Go %s. Each figure is the median of %d run(s) per mode, the modes interleaved.\n", orDash(env.revision), env.goVersion, c.runs)
	w("- %s users, authenticated, spread round robin over %d edges on one NATS server (`bench/.bin/natsd`); per tab: %d connections per user (%s in all), a user's tabs on consecutive edges (so on more than one edge, as behind a load balancer); shared: one connection per user (%s). Clients: loadgen's worker processes (at most 7,500 connections each; open-files limit 20,000 per process), ramp 2,000 connections/s, held %s.\n",
		fmtInt(c.users), c.edges, c.tabs, fmtInt(c.users*c.tabs), fmtInt(c.users), c.hold)
	w("- RSS is read from /proc when every worker has opened its connections (and two report periods later); *growth* is that minus the RSS before the first connection. **Edge figures are the sum over the %d edges.**\n", c.edges)
	w("- Raw JSON records and logs: `%s` (not committed).\n\n", rawDir)

	ms := tabsMetrics(c.users)
	w("## Figures\n\n| mode | connections per user |")
	for _, m := range ms {
		w(" %s |", m.name)
	}
	w("\n|---|---:|")
	for range ms {
		w("---:|")
	}
	w("\n")
	for _, m := range c.modes() {
		cl := orEmpty(cells[m.name])
		w("| %s | %d |", m.name, m.tabs)
		for _, mt := range ms {
			w(" %s |", fmtNum(cellVal(cl, mt)))
		}
		w("\n")
	}
	w("\n")
	perTab, shared := orEmpty(cells["per tab"]), orEmpty(cells["shared"])
	conns := cellVal(perTab, mConnected) / cellVal(shared, mConnected)
	grow := cellVal(perTab, ms[2]) / cellVal(shared, ms[2])
	total := cellVal(perTab, ms[1]) / cellVal(shared, ms[1])
	w("Per tab holds **%s×** the connections of shared mode and its edges grow **%s×** as much (total edge RSS %s×).\n\n",
		fmtNum(conns), fmtNum(grow), fmtNum(total))
	ok, why := tabsPass(c, cells)
	w("## Result\n\n")
	if ok {
		w("**Pass**: every run held all its connections (%s per tab, %s shared) with none failed or dropped, and shared mode's edges grew less.\n\n",
			fmtInt(c.users*c.tabs), fmtInt(c.users))
	} else {
		w("**Fail**:\n\n")
		for _, s := range why {
			w("- %s\n", s)
		}
		w("\n")
	}
	w("## Runs\n\n")
	for _, m := range c.modes() {
		cl := orEmpty(cells[m.name])
		w("- %s (%d runs): `%s`\n", m.name, len(cl.runs), cl.command)
		for _, e := range cl.errs {
			w("  - failed run: %s\n", e)
		}
	}
	w("\n")
	return b.String()
}

// fmtInt writes n with thousands separators.
func fmtInt(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// runTabsSet checks the tabs set's flags and programs, runs it and says
// where its report is; out defaults to docs/perf/tabs.md.
func runTabsSet(ctx context.Context, fs *flag.FlagSet, cfg func() (tabsConfig, error), runs int, out, results, loadgen string, stdout io.Writer) error {
	outGiven := false
	fs.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	if !outGiven {
		out = "docs/perf/tabs.md"
	}
	c, err := cfg()
	if err != nil {
		return err
	}
	c.runs = max(runs, 1)
	for _, p := range []string{loadgen, filepath.Join(filepath.Dir(loadgen), "natsd"), "bin/edge"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing: run make build and build bench/.bin first (make bench-tabs does both)", p)
		}
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	r, err := newRunner(loadgen, results, stdout)
	if err != nil {
		return err
	}
	started := time.Now()
	if err := runTabs(ctx, r, c, out, environment(), started); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s); raw records in %s\n", out, time.Since(started).Round(time.Second), r.results)
	return nil
}
