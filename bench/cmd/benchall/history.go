package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The history set (issue 16's figures): what WS_HISTORY costs. Unicast and
// broadcast, each with history off and on (memory), interleaved run by run
// so that the machine's noise falls on both alike; then NATS's memory per
// stored subject and per stored message (historymem.go).

// Parts of the history set, for -only.
const (
	partUnicast   = "unicast"
	partBroadcast = "broadcast"
	partMemory    = "memory"
)

// historyModes are the WS_HISTORY values compared, off first.
var historyModes = []string{"off", "memory"}

// Targets of issue 16.
const (
	cpuRatioLimit = 1.3 // server CPU per delivery, history on / off
	p99SlackMs    = 2.0 // unicast p99, history on − off
	// shortRate: a row whose publisher kept less than this share of the
	// asked rate is marked, since its latency is not the asked rate's.
	shortRate = 0.98
)

// historyConfig are the parameters of a history set.
type historyConfig struct {
	unicastConns   int
	unicastRate    float64
	duration       time.Duration
	broadcastConns int
	broadcastRate  float64
	messages       int
	mem            memConfig
	parts          []string // parts to run
	runs           int
}

// historyFlags registers the history set's flags on fs.
func historyFlags(fs *flag.FlagSet) func() (historyConfig, error) {
	uconns := fs.Int("history-conns", 10000, "-set history: users of the unicast runs (one connection each)")
	urate := fs.Float64("history-unicast-rate", 12000, "-set history: unicast messages per second to random users")
	duration := fs.Duration("history-duration", 10*time.Second, "-set history: unicast sending time")
	bconns := fs.Int("history-broadcast-conns", 10000, "-set history: connections of the broadcast runs")
	brate := fs.Float64("history-broadcast-rate", 5, "-set history: broadcast messages per second")
	messages := fs.Int("history-messages", 50, "-set history: broadcast messages")
	memUsers := fs.Int("history-mem-users", 100000, "-set history: distinct ws.send.user.<id> subjects of the memory part")
	memPer := fs.Int("history-mem-per-subject", 10, "-set history: messages per subject in the memory part's last round (the first has one)")
	memStorage := fs.String("history-mem-storage", "memory,file", "-set history: WS_HISTORY storages of the memory part, each on a fresh natsd")
	return func() (historyConfig, error) {
		c := historyConfig{
			unicastConns: *uconns, unicastRate: *urate, duration: *duration,
			broadcastConns: *bconns, broadcastRate: *brate, messages: *messages,
			mem:   memConfig{users: *memUsers, perSubject: *memPer, size: 128},
			parts: []string{partUnicast, partBroadcast, partMemory},
		}
		for _, s := range strings.Split(*memStorage, ",") {
			if s != "memory" && s != "file" {
				return c, fmt.Errorf("-history-mem-storage: %q is not memory or file", s)
			}
			c.mem.storages = append(c.mem.storages, s)
		}
		if c.unicastConns < 1 || c.broadcastConns < 1 || c.messages < 1 || c.unicastRate <= 0 || c.broadcastRate <= 0 || c.duration <= 0 {
			return c, errors.New("-history-conns, -history-broadcast-conns, -history-messages, -history-duration and the rates must be positive")
		}
		if c.mem.users < 1 || c.mem.perSubject < 2 {
			return c, errors.New("-history-mem-users must be positive and -history-mem-per-subject at least 2")
		}
		return c, nil
	}
}

// setParts keeps the parts named in only (comma-separated; empty: all).
func (c *historyConfig) setParts(only string) error {
	if only == "" {
		return nil
	}
	var keep []string
	for _, p := range strings.Split(only, ",") {
		if !slices.Contains([]string{partUnicast, partBroadcast, partMemory}, p) {
			return fmt.Errorf("-only: the history set has unicast, broadcast and memory, not %q", p)
		}
		keep = append(keep, p)
	}
	c.parts = keep
	return nil
}

func (c historyConfig) has(part string) bool { return slices.Contains(c.parts, part) }

// args are loadgen's arguments for a scenario and history mode, but -start
// and -json.
func (c historyConfig) args(scenario, mode string) []string {
	a := []string{"-scenario", scenario, "-history", mode, "-ramp", "2000"}
	switch scenario {
	case partUnicast:
		a = append(a, "-conns", strconv.Itoa(c.unicastConns), "-rate", fmtFlag(c.unicastRate), "-duration", c.duration.String())
	case partBroadcast:
		a = append(a, "-conns", strconv.Itoa(c.broadcastConns), "-rate", fmtFlag(c.broadcastRate), "-messages", strconv.Itoa(c.messages))
	}
	return a
}

// command is the benchall invocation that makes the report.
func (c historyConfig) command(out string) string {
	a := []string{"bench/.bin/benchall", "-set", "history"}
	if c.has(partUnicast) || c.has(partBroadcast) {
		a = append(a, "-runs", strconv.Itoa(c.runs))
	}
	def := historyConfig{unicastConns: 10000, unicastRate: 12000, duration: 10 * time.Second, broadcastConns: 10000, broadcastRate: 5, messages: 50,
		mem: memConfig{users: 100000, perSubject: 10, storages: []string{"memory", "file"}}}
	add := func(flag, v, d string) {
		if v != d {
			a = append(a, flag, v)
		}
	}
	add("-history-conns", strconv.Itoa(c.unicastConns), strconv.Itoa(def.unicastConns))
	add("-history-unicast-rate", fmtFlag(c.unicastRate), fmtFlag(def.unicastRate))
	add("-history-duration", c.duration.String(), def.duration.String())
	add("-history-broadcast-conns", strconv.Itoa(c.broadcastConns), strconv.Itoa(def.broadcastConns))
	add("-history-broadcast-rate", fmtFlag(c.broadcastRate), fmtFlag(def.broadcastRate))
	add("-history-messages", strconv.Itoa(c.messages), strconv.Itoa(def.messages))
	add("-history-mem-users", strconv.Itoa(c.mem.users), strconv.Itoa(def.mem.users))
	add("-history-mem-per-subject", strconv.Itoa(c.mem.perSubject), strconv.Itoa(def.mem.perSubject))
	add("-history-mem-storage", strings.Join(c.mem.storages, ","), strings.Join(def.mem.storages, ","))
	if len(c.parts) != 3 {
		a = append(a, "-only", strings.Join(c.parts, ","))
	}
	return strings.Join(append(a, "-out", out), " ")
}

// historyCells are the cost part's outcomes by scenario and history mode.
type historyCells map[string]map[string]*cell

func (h historyCells) get(scenario, mode string) *cell {
	if c := h[scenario][mode]; c != nil {
		return c
	}
	return &cell{}
}

// runHistory runs the set and writes its report to out.
func runHistory(ctx context.Context, r *runner, c historyConfig, out string, env machine, started time.Time) error {
	cells := historyCells{}
	for _, sc := range []string{partUnicast, partBroadcast} {
		if !c.has(sc) {
			continue
		}
		cells[sc] = map[string]*cell{}
		for _, mode := range historyModes {
			cells[sc][mode] = &cell{command: "bench/.bin/loadgen " + strings.Join(append([]string{"-start", "wsgate"}, c.args(sc, mode)...), " ")}
		}
	}
	for k := 0; k < c.runs; k++ {
		for _, sc := range []string{partUnicast, partBroadcast} {
			if !c.has(sc) {
				continue
			}
			for _, mode := range historyModes {
				cl := cells[sc][mode]
				res, err := r.loadgen(ctx, sc+"-history-"+mode, "wsgate", c.args(sc, mode))
				if err != nil {
					cl.errs = append(cl.errs, err.Error())
					if ctx.Err() != nil {
						return ctx.Err()
					}
					continue
				}
				if res.Params.History != mode {
					cl.errs = append(cl.errs, fmt.Sprintf("the record says history %q, asked %q (a loadgen without -history?)", res.Params.History, mode))
					continue
				}
				if mode != "off" && res.Sent > 0 && res.HistoryStored == 0 {
					cl.errs = append(cl.errs, fmt.Sprintf("the history stream held none of the %d messages published: not a run with history, or a bench/.bin/loadgen older than benchall (%v)", res.Sent, first(res.ErrorSamples, 2)))
					continue
				}
				cl.command = res.Command
				cl.runs = append(cl.runs, res)
			}
		}
	}
	var mems []memResult
	var memErrs []string
	if c.has(partMemory) {
		natsd := filepath.Join(filepath.Dir(r.bin), "natsd")
		binDir := filepath.Join(filepath.Dir(r.bin), "..", "..", "bin")
		for _, storage := range c.mem.storages {
			r.n++
			base := fmt.Sprintf("%02d-memory-%s", r.n, storage)
			t0 := time.Now()
			m, err := measureMemory(ctx, c.mem, storage, natsd, binDir, memDir(r.results, storage))
			if err != nil {
				memErrs = append(memErrs, fmt.Sprintf("%s: %v", base, err))
				fmt.Fprintf(r.log, "%-40s %5.0fs  error: %v\n", base, time.Since(t0).Seconds(), err)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			fmt.Fprintf(r.log, "%-40s %5.0fs  %.2f KiB per subject, %.0f B per further message, stream %.0f B per message\n",
				base, time.Since(t0).Seconds(), m.kibPerSubject(), m.bytesPerMessage(), m.streamBytesPerMessage())
			if data, err := json.MarshalIndent(m, "", "  "); err == nil {
				_ = os.WriteFile(filepath.Join(r.results, base+".json"), append(data, '\n'), 0o644)
			}
			mems = append(mems, m)
		}
	}
	env.elapsed = time.Since(started)
	env.loadAfter = loadavg()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(renderHistory(c, cells, mems, memErrs, env, r.results, out)), 0o644)
}

// achieved is the rate the publisher kept: messages sent over the time
// publishing took (the record's achieved_rate_per_s divides by the asked
// duration instead, so it cannot fall short).
func achieved(r *result) float64 {
	if r.PublishSeconds <= 0 {
		return r.AchievedRate
	}
	return float64(r.Sent) / r.PublishSeconds
}

var (
	mKept     = metric{"achieved rate (/s)", "higher", achieved}
	mDupes    = metric{"duplicates", "lower", func(r *result) float64 { return float64(r.Duplicates) }}
	histTable = []metric{mKept, mDeliveries, mP50, mP90, mP99, mMax, mLost, mDupes, mCPUPerMsg}
)

// verdict is one target's outcome.
type verdict struct {
	what            string
	off, on, limit  float64
	unit, pass, why string
}

// historyVerdicts are the targets of issue 16 against the medians.
func historyVerdicts(c historyConfig, cells historyCells) []verdict {
	var out []verdict
	judge := func(v verdict, ok bool) verdict {
		switch {
		case math.IsNaN(v.on) || math.IsNaN(v.off):
			v.pass = "not measured"
		case ok:
			v.pass = "**pass**"
		default:
			v.pass = "**fail**"
		}
		return v
	}
	for _, sc := range []string{partUnicast, partBroadcast} {
		if !c.has(sc) {
			continue
		}
		off, on := cellVal(cells.get(sc, "off"), mCPUPerMsg), cellVal(cells.get(sc, "memory"), mCPUPerMsg)
		v := verdict{what: sc + ": server CPU per delivery (edge + NATS), history on ≤ " + fmtFlag(cpuRatioLimit) + "× off",
			off: off, on: on, limit: cpuRatioLimit * off, unit: "µs", why: ratioText(on, off)}
		out = append(out, judge(v, on <= cpuRatioLimit*off))
	}
	if c.has(partUnicast) {
		off, on := cellVal(cells.get(partUnicast, "off"), mP99), cellVal(cells.get(partUnicast, "memory"), mP99)
		v := verdict{what: "unicast: latency p99, history on ≤ off + " + fmtFlag(p99SlackMs) + " ms",
			off: off, on: on, limit: off + p99SlackMs, unit: "ms", why: signedMs(on - off)}
		out = append(out, judge(v, on <= off+p99SlackMs))
	}
	return out
}

// signedMs is a difference in ms with its sign.
func signedMs(d float64) string {
	switch {
	case math.IsNaN(d):
		return "—"
	case d < 0:
		return "−" + fmtNum(-d) + " ms"
	}
	return "+" + fmtNum(d) + " ms"
}

func ratioText(on, off float64) string {
	if math.IsNaN(on) || math.IsNaN(off) || off == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", on/off)
}

// short reports whether a cell's publisher kept less than the asked rate.
func short(cl *cell, asked float64) bool {
	v := cellVal(cl, mKept)
	return !math.IsNaN(v) && v < shortRate*asked
}

func renderHistory(c historyConfig, cells historyCells, mems []memResult, memErrs []string, env machine, rawDir, out string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	cmd := c.command(out)
	w("# The cost of history (WS_HISTORY)\n\n")
	if len(c.parts) == 3 {
		w("Generated by `%s` (`make bench-history`). Do not edit by hand: that command rewrites it.\n\n", cmd)
	} else {
		w("Generated by `%s` (parts of the set run alone; `make bench-history` runs them all). Do not edit by hand: that command rewrites it.\n\n", cmd)
	}
	w("## Conditions\n\n")
	w("- Machine: %d cores, %.0f GiB, loopback only; the load tool, the edge and NATS share the cores. Load average %s before, %s after (1, 5, 15 min); the set took %s.\n",
		env.cpus, env.memGiB, env.loadBefore, env.loadAfter, env.elapsed.Round(time.Second))
	w("- wsgate revision: %s. Go %s.\n", orDash(env.revision), env.goVersion)
	w("- Servers: `bench/.bin/natsd` (nats-server v2.15.2) and one `bin/edge` (EDGE_RATE_LIMIT=0, EDGE_SEND_QUEUE=4096), child processes of the load tool. " +
		"**History off**: `WS_HISTORY=off`, natsd without JetStream, today's core NATS path. **History on**: natsd with JetStream and the edge with `WS_HISTORY=memory` " +
		"(stream defaults: `WS_HISTORY_MAX_AGE=2m`, `WS_HISTORY_MAX_PER_SUBJECT=100`, `WS_HISTORY_MAX_BYTES=256 MiB`, one replica); the edge creates the stream and subscribes to `ws.out.*`.\n")
	w("- The publisher does not change between the two: it publishes with **core NATS** to `ws.send.all` (broadcast) and `ws.send.user.<id>` (unicast); with history on, the stream stores those messages and republishes each with its sequence to `ws.out.*`, and clients receive `[action, details, null, seq]` after a `Server/recovery` frame (neither is counted as an error).\n")
	w("- Clients: one user per connection, 128-byte JSON payloads carrying the send time; latency is from the publisher's clock to the client's read, same machine.\n")
	w("- Off and on are interleaved run by run (%d runs each, %s), so that other work on the machine falls on both alike; each figure is the median of its runs.\n", c.runs, "unicast off, unicast on, broadcast off, broadcast on, then again")
	w("- **Server CPU per delivery** = CPU time of the edge **plus** NATS (natsd, JetStream included) over the run phase / messages delivered to clients.\n")
	w("- *Achieved rate* is messages published / the time publishing took; a row marked ⚠ kept less than %.0f %% of the asked rate, so its latency is not the asked rate's.\n", shortRate*100)
	w("- Raw JSON records and logs: `%s` (not committed).\n\n", rawDir)

	w("## Targets (issue 16)\n\n")
	vs := historyVerdicts(c, cells)
	if len(vs) == 0 {
		w("Not measured in this generation (`-only %s`): run `make bench-history` on a quiet machine.\n\n", strings.Join(c.parts, ","))
	} else {
		w("| target | history off | history on | limit | on vs off | result |\n|---|---:|---:|---:|---:|---|\n")
		for _, v := range vs {
			w("| %s | %s %s | %s %s | %s %s | %s | %s |\n", v.what, fmtNum(v.off), v.unit, fmtNum(v.on), v.unit, fmtNum(v.limit), v.unit, v.why, v.pass)
		}
		w("\n")
	}

	for _, sc := range []string{partUnicast, partBroadcast} {
		if !c.has(sc) {
			continue
		}
		asked, what := c.unicastRate, fmt.Sprintf("%d users, %s msg/s to random users for %s", c.unicastConns, fmtFlag(c.unicastRate), c.duration)
		if sc == partBroadcast {
			asked, what = c.broadcastRate, fmt.Sprintf("%d connections, %d messages to all at %s msg/s", c.broadcastConns, c.messages, fmtFlag(c.broadcastRate))
		}
		w("## %s: %s\n\n", sc, what)
		w("| history | asked rate (/s) |")
		for _, m := range histTable {
			w(" %s |", strings.Replace(m.name, "server CPU per delivered message (µs)", "server CPU per delivery, edge + NATS (µs)", 1))
		}
		w("\n|---|---:|")
		for range histTable {
			w("---:|")
		}
		w("\n")
		for _, mode := range historyModes {
			cl := cells.get(sc, mode)
			label := "off"
			if mode != "off" {
				label = "on (" + mode + ")"
			}
			if short(cl, asked) {
				label += " ⚠"
			}
			w("| %s | %s |", label, fmtFlag(asked))
			for _, m := range histTable {
				w(" %s |", fmtNum(cellVal(cl, m)))
			}
			w("\n")
		}
		w("| on / off | |")
		for _, m := range histTable {
			on, off := cellVal(cells.get(sc, "memory"), m), cellVal(cells.get(sc, "off"), m)
			if m.name == mLost.name {
				w(" — |")
				continue
			}
			w(" %s |", ratioText(on, off))
		}
		w("\n\n")
		for _, mode := range historyModes {
			cl := cells.get(sc, mode)
			w("- history %s (%d runs): `%s`\n", mode, len(cl.runs), cl.command)
			if short(cl, asked) {
				w("  - ⚠ the publisher kept %s msg/s of the %s asked: this row measured a lower rate.\n", fmtNum(cellVal(cl, mKept)), fmtFlag(asked))
			}
			for _, e := range cl.errs {
				w("  - failed run: %s\n", e)
			}
			for _, r := range cl.runs {
				if mode != "off" && r.HistoryStored < r.Sent {
					w("  - run whose stream stored %d of the %d messages published (JetStream did not keep up with core NATS publishing)\n", r.HistoryStored, r.Sent)
				}
				if !r.ok() || r.Duplicates > 0 {
					w("  - run with loss, duplicates or errors: lost %d of %d, duplicates %d, failed %d, dropped %d, errors %d %v\n",
						r.Lost, r.Expected, r.Duplicates, r.Failed, r.Dropped, r.PublishErrors+r.ClientErrors, first(r.ErrorSamples, 2))
				}
			}
		}
		w("\n")
	}

	w("## NATS memory per stored subject and per message\n\n")
	if !c.has(partMemory) {
		w("Not measured in this generation: `-only` left the memory part out.\n\n")
	} else {
		renderMemory(w, c, mems, memErrs)
	}
	w("## How to reproduce\n\n```sh\n")
	w("make build                                               # bin/edge\n")
	w("(cd bench && GOWORK=off go build -trimpath -o .bin/ ./cmd/loadgen ./cmd/natsd ./cmd/benchall)\n")
	w("ulimit -n $(ulimit -Hn)\n")
	w("bench/.bin/benchall -set history -runs 3 -out docs/perf/history.md     # make bench-history: everything below\n")
	w("bench/.bin/benchall -set history -only memory -out docs/perf/history.md   # the memory part alone (not spoiled by other load)\n")
	w("bench/.bin/loadgen -start wsgate -history memory -scenario unicast -conns 2000 -rate 2000 -duration 10s   # one run by hand\n")
	w("```\n")
	return b.String()
}

func renderMemory(w func(string, ...any), c historyConfig, mems []memResult, errs []string) {
	w("natsd (nats-server v2.15.2, JetStream, default options) and one edge with `WS_HISTORY=<storage>`, which creates the history stream with the configuration of a deployment "+
		"(its subjects, the republication to `ws.out.*`, `WS_HISTORY_MAX_PER_SUBJECT=100`), except `WS_HISTORY_MAX_AGE=1h` and `WS_HISTORY_MAX_BYTES=-1` so that nothing is dropped before it is measured. "+
		"No client is connected. The tool publishes a %d-byte JSON payload to each of %d distinct subjects `ws.send.user.u0` … `ws.send.user.u%d` "+
		"(JetStream publish, acknowledged: the stored message is the same as a core `nats pub`'s), then %d more rounds, so every subject holds %d messages. "+
		"After each step it waits until the stream info shows every message, then reads natsd's resident memory (VmRSS, once three readings 0.5 s apart agree within 1 %%). "+
		"Memory figures are not spoiled by other load on the machine.\n\n",
		c.mem.size, c.mem.users, c.mem.users-1, c.mem.perSubject-1, c.mem.perSubject)
	for _, e := range errs {
		w("- failed: %s\n", e)
	}
	if len(mems) == 0 {
		w("\n")
		return
	}
	w("| storage | messages per subject | messages in the stream | subjects | stream bytes (MiB) | natsd RSS (MiB) |\n|---|---:|---:|---:|---:|---:|\n")
	for _, m := range mems {
		for _, p := range m.Points {
			w("| %s | %d | %d | %d | %s | %s |\n", m.Storage, p.PerSubject, p.Msgs, p.Subjects, fmtNum(float64(p.StreamBytes)/(1<<20)), fmtNum(float64(p.RSSKiB)/1024))
		}
	}
	w("\n| storage | natsd memory per subject with its first message (KiB) | natsd memory per further message (bytes) | the stream's own bytes per message | time (s) |\n|---|---:|---:|---:|---:|\n")
	for _, m := range mems {
		w("| %s | %s | %s | %s | %.0f |\n", m.Storage, fmtNum(m.kibPerSubject()), fmtNum(m.bytesPerMessage()), fmtNum(m.streamBytesPerMessage()), m.Seconds)
	}
	w("\n*Per subject* = (RSS with one message on every subject − RSS of the empty stream) / subjects; *per further message* = (RSS with %d per subject − RSS with one) / the messages added. "+
		"RSS is what the process holds, Go's garbage-collector headroom included (GOGC=100), which is what a container's memory limit must allow. "+
		"With `file` storage the messages are on disk; natsd's memory then holds the per-subject index and the block caches.\n\n", c.mem.perSubject)
	w("Command: `%s`\n\n", c.memoryCommand())
}

// memoryCommand is the command that measures the memory part alone.
func (c historyConfig) memoryCommand() string {
	m := c
	m.parts = []string{partMemory}
	return m.command("docs/perf/history.md")
}

// runHistorySet is benchall -set history: it checks the tools and runs
// the set into out (docs/perf/history.md unless -out is given).
func runHistorySet(ctx context.Context, fs *flag.FlagSet, cfg func() (historyConfig, error), runs int, only, out, results, loadgen string, stdout io.Writer) error {
	outGiven := false
	fs.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	if !outGiven {
		out = "docs/perf/history.md"
	}
	c, err := cfg()
	if err != nil {
		return err
	}
	if err := c.setParts(only); err != nil {
		return err
	}
	c.runs = max(runs, 1)
	binDir := filepath.Join(filepath.Dir(loadgen), "..", "..", "bin")
	for _, p := range []string{loadgen, filepath.Join(filepath.Dir(loadgen), "natsd"), filepath.Join(binDir, "edge")} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing: run make build and build bench/.bin first (see docs/perf/history.md)", p)
		}
	}
	r, err := newRunner(loadgen, results, stdout)
	if err != nil {
		return err
	}
	started := time.Now()
	if err := runHistory(ctx, r, c, out, environment(), started); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s); raw records in %s\n", out, time.Since(started).Round(time.Second), r.results)
	return nil
}
