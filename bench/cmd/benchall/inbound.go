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
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The inbound set (issue 17's figures, DESIGN.md §8): the echo round trip
// as core frames and as reliable actions side by side, interleaved run by
// run, at one rate and stepped up to the highest passing one; the long run
// with kills (bench/.bin/inboundrun); NATS memory per message id in the
// dedupe window (bench/.bin/inboundmem). It writes docs/perf/inbound.md.

// inboundConfig are the parameters of an inbound set.
type inboundConfig struct {
	conns       int
	rate        float64
	duration    time.Duration
	steps       []float64
	longActions int
	longClients int
	longRate    float64
	longKill    time.Duration
	memIDs      int
	parts       []string // of inboundParts
	runs        int
}

// Parts of the inbound set, for -only.
var inboundParts = []string{"compare", "max", "long", "memory"}

// inboundFlags registers the inbound set's flags on fs.
func inboundFlags(fs *flag.FlagSet) func(only string) (inboundConfig, error) {
	conns := fs.Int("inbound-conns", 1000, "-set inbound: connections sending echoes")
	rate := fs.Float64("inbound-rate", 5000, "-set inbound: echoes per second of the side-by-side runs")
	duration := fs.Duration("inbound-duration", 10*time.Second, "-set inbound: sending time of each run and step")
	steps := fs.String("inbound-steps", "2000,5000,8000,12000,16000,20000,24000", "-set inbound: rates of the step search (echoes per second)")
	longActions := fs.Int("long-actions", 1000000, "-set inbound: reliable actions of the long run with kills")
	longClients := fs.Int("long-clients", 200, "-set inbound: clients of the long run")
	longRate := fs.Float64("long-rate", 5000, "-set inbound: actions per second of the long run")
	longKill := fs.Duration("long-kill-every", 15*time.Second, "-set inbound: pause between two kills of the long run")
	memIDs := fs.Int("mem-ids", 1000000, "-set inbound: message ids published for the memory figure")
	return func(only string) (inboundConfig, error) {
		c := inboundConfig{conns: *conns, rate: *rate, duration: *duration, longActions: *longActions,
			longClients: *longClients, longRate: *longRate, longKill: *longKill, memIDs: *memIDs, parts: inboundParts}
		for _, s := range strings.Split(*steps, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || v <= 0 {
				return c, fmt.Errorf("-inbound-steps: %q is not a positive rate", s)
			}
			c.steps = append(c.steps, v)
		}
		if only != "" {
			c.parts = strings.Split(only, ",")
			for _, p := range c.parts {
				if !slices.Contains(inboundParts, p) {
					return c, fmt.Errorf("-only: the inbound set has %v, not %q", inboundParts, p)
				}
			}
		}
		return c, nil
	}
}

func (c inboundConfig) has(part string) bool { return slices.Contains(c.parts, part) }

// inboundModes are the two ways of sending an echo, in run order.
var inboundModes = []string{"core", "reliable"}

// args are loadgen's arguments of a run of mode (without -start and -rate).
func (c inboundConfig) args(mode string) []string {
	a := []string{"-scenario", "roundtrip", "-conns", strconv.Itoa(c.conns), "-workers", "1", "-duration", c.duration.String()}
	if mode == "reliable" {
		a = append(a, "-reliable")
	}
	return a
}

// ackFigures are the parts of loadgen's record that the shared result
// type does not read: the Server/ack of reliable runs, and per-process CPU.
type ackFigures struct {
	Acked      uint64 `json:"acked"`
	Unacked    uint64 `json:"unacked"`
	AckLatency *struct {
		P50 float64 `json:"p50_ms"`
		P99 float64 `json:"p99_ms"`
	} `json:"ack_latency"`
}

// inboundRun is one side-by-side run.
type inboundRun struct {
	res *result
	ack ackFigures
}

// cpuPerAction is the servers' CPU (edges + NATS + dispatcher) per echo
// answered, in µs; by process name when name is set.
func (r inboundRun) cpuPerAction(name string) float64 { return r.res.cpuPerMsg(name) }

// longRecord is what benchall reads of inboundrun's record.
type longRecord struct {
	Command       string         `json:"command"`
	Actions       int            `json:"actions"`
	Clients       int            `json:"clients"`
	Edges         int            `json:"edges"`
	Rate          float64        `json:"rate_per_s"`
	Seconds       float64        `json:"seconds"`
	KillEvery     string         `json:"kill_every"`
	AckWait       string         `json:"ack_wait"`
	Storage       string         `json:"storage"`
	Kills         map[string]int `json:"kills"`
	KillsTotal    int            `json:"kills_total"`
	Sent          uint64         `json:"sent"`
	Resent        uint64         `json:"resent"`
	Acked         uint64         `json:"acked"`
	DuplicateAcks uint64         `json:"duplicate_acks"`
	AckErrors     uint64         `json:"ack_errors"`
	Reconnects    uint64         `json:"reconnects"`
	DeadLetters   uint64         `json:"dead_letters"`
	OK            bool           `json:"ok"`
	Tally         struct {
		Deliveries   uint64   `json:"deliveries"`
		Redeliveries uint64   `json:"redeliveries"`
		Skipped      uint64   `json:"skipped"`
		Handled      int      `json:"handled"`
		Lost         int      `json:"lost"`
		HandledTwice int      `json:"handled_twice"`
		StoredTwice  int      `json:"stored_twice"`
		Examples     []string `json:"examples"`
	} `json:"tally"`
}

// memRecord is what benchall reads of inboundmem's record.
type memRecord struct {
	Command              string  `json:"command"`
	Storage              string  `json:"storage"`
	Dedupe               string  `json:"dedupe_window"`
	KeyBytes             int     `json:"key_bytes"`
	StreamConfig         string  `json:"stream_config"`
	BytesPerID           float64 `json:"bytes_per_id"`
	BytesPerIDLive       float64 `json:"bytes_per_id_live"`
	BytesPerIDPurged     float64 `json:"bytes_per_id_purged"`
	BytesPerActionWithID float64 `json:"bytes_per_action_with_id"`
	StreamBytesPerAction float64 `json:"stream_bytes_per_action"`
	IDs                  struct {
		Actions        int   `json:"actions"`
		RSSBeforeKiB   int64 `json:"rss_before_kib"`
		RSSStoredKiB   int64 `json:"rss_stored_kib"`
		WindowHoldsIDs bool  `json:"window_holds_ids"`
	} `json:"ids"`
	NoIDs struct {
		RSSBeforeKiB int64 `json:"rss_before_kib"`
		RSSStoredKiB int64 `json:"rss_stored_kib"`
	} `json:"no_ids"`
}

// inboundOutcome is everything the report shows.
type inboundOutcome struct {
	cfg      inboundConfig
	runs     map[string][]inboundRun // by mode
	commands map[string]string       // by mode
	max      map[string]*cell        // by mode
	long     *longRecord
	longErr  string
	mem      *memRecord
	memErr   string
	errs     []string
}

// inboundSet checks what the inbound set needs and runs it.
func inboundSet(ctx context.Context, fs *flag.FlagSet, get func(string) (inboundConfig, error), runs int, out, results, loadgen, only string, stdout io.Writer) error {
	outGiven := false
	fs.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	if !outGiven {
		out = "docs/perf/inbound.md"
	}
	c, err := get(only)
	if err != nil {
		return err
	}
	c.runs = max(runs, 1)
	bin := filepath.Dir(loadgen)
	for _, p := range []string{loadgen, filepath.Join(bin, "natsd"), filepath.Join(bin, "inboundrun"), filepath.Join(bin, "inboundmem"), "bin/edge", "bin/dispatcher", "bin/counthandler"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing: run make bench-inbound (or see its recipe in the Makefile)", p)
		}
	}
	r, err := newRunner(loadgen, results, stdout)
	if err != nil {
		return err
	}
	started := time.Now()
	if err := runInbound(ctx, r, c, out, environment(), started); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s); raw records in %s\n", out, time.Since(started).Round(time.Second), r.results)
	return nil
}

// runInbound runs the inbound set and writes its report to out.
func runInbound(ctx context.Context, r *runner, c inboundConfig, out string, env machine, started time.Time) error {
	binDir := filepath.Dir(r.bin)
	o := &inboundOutcome{cfg: c, runs: map[string][]inboundRun{}, commands: map[string]string{}, max: map[string]*cell{}}
	for _, mode := range inboundModes {
		args := append(c.args(mode), "-rate", fmtRate(c.rate))
		o.commands[mode] = "bench/.bin/loadgen " + strings.Join(append([]string{"-start", "wsgate"}, args...), " ")
	}
	if c.has("compare") {
		// Modes interleaved run by run, so that the machine's noise falls
		// on both alike.
		for k := 0; k < c.runs; k++ {
			for _, mode := range inboundModes {
				args := append(c.args(mode), "-rate", fmtRate(c.rate))
				res, ack, err := r.loadgenAck(ctx, "echo-"+mode, args)
				if err != nil {
					o.errs = append(o.errs, err.Error())
					if ctx.Err() != nil {
						return ctx.Err()
					}
					continue
				}
				o.runs[mode] = append(o.runs[mode], inboundRun{res, ack})
			}
		}
	}
	if c.has("max") {
		for _, mode := range inboundModes {
			s := spec{name: "echo-max-" + mode, args: c.args(mode), steps: c.steps}
			cl := &cell{}
			stepSearch(ctx, r, s, cl, "wsgate")
			o.max[mode] = cl
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	if c.has("long") {
		path := filepath.Join(r.results, "inboundrun.json")
		args := []string{"-actions", strconv.Itoa(c.longActions), "-clients", strconv.Itoa(c.longClients),
			"-rate", fmtRate(c.longRate), "-kill-every", c.longKill.String()}
		var rec longRecord
		if err := r.tool(ctx, filepath.Join(binDir, "inboundrun"), args, path, &rec); err != nil && rec.Command == "" {
			o.longErr = err.Error()
		} else {
			rec.Command = "bench/.bin/inboundrun " + strings.Join(args, " ")
			o.long = &rec
		}
	}
	if c.has("memory") {
		path := filepath.Join(r.results, "inboundmem.json")
		args := []string{"-n", strconv.Itoa(c.memIDs)}
		var rec memRecord
		if err := r.tool(ctx, filepath.Join(binDir, "inboundmem"), args, path, &rec); err != nil && rec.Command == "" {
			o.memErr = err.Error()
		} else {
			rec.Command = "bench/.bin/inboundmem " + strings.Join(args, " ")
			o.mem = &rec
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	env.elapsed = time.Since(started)
	env.loadAfter = loadavg()
	doc := renderInbound(o, env, r.results)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(doc), 0o644)
}

func fmtRate(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// loadgenAck runs loadgen -start wsgate and returns its record with the
// ack figures.
func (r *runner) loadgenAck(ctx context.Context, name string, args []string) (*result, ackFigures, error) {
	var ack ackFigures
	res, err := r.loadgen(ctx, name, "wsgate", args)
	if err != nil {
		return nil, ack, err
	}
	// r.loadgen wrote the record it just read under its run number.
	data, err := os.ReadFile(filepath.Join(r.results, fmt.Sprintf("%02d-%s-wsgate.json", r.n, name)))
	if err == nil {
		err = json.Unmarshal(data, &ack)
	}
	return res, ack, err
}

// tool runs one of the set's own programs with -json path and reads its
// record into rec; a program that exits non-zero (a failed long run) still
// leaves its record, and the error is returned with it.
func (r *runner) tool(ctx context.Context, bin string, args []string, path string, rec any) error {
	r.n++
	base := fmt.Sprintf("%02d-%s", r.n, filepath.Base(bin))
	logf, err := os.Create(filepath.Join(r.results, base+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, bin, append(slices.Clone(args), "-json", path)...)
	var summary strings.Builder
	cmd.Stdout = io.MultiWriter(&summary, logf)
	cmd.Stderr = logf
	start := time.Now()
	runErr := cmd.Run()
	fmt.Fprintf(r.log, "%-40s %5.0fs  %s", base, time.Since(start).Seconds(), summary.String())
	data, err := os.ReadFile(path)
	if err != nil {
		return errors.Join(runErr, err, fmt.Errorf("see %s", logf.Name()))
	}
	if err := json.Unmarshal(data, rec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return runErr
}

// medianOf is the median over runs of get.
func medianOf(runs []inboundRun, get func(inboundRun) float64) float64 {
	var v []float64
	for _, r := range runs {
		v = append(v, get(r))
	}
	return median(v)
}

// passFail is the verdict of a figure against its target.
func passFail(ok bool) string {
	if ok {
		return "**pass**"
	}
	return "**FAIL**"
}

func renderInbound(o *inboundOutcome, env machine, rawDir string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	c := o.cfg
	w("# Reliable inbound: figures\n\n")
	w("Generated by `bench/.bin/benchall -set inbound -runs %d -out docs/perf/inbound.md", c.runs)
	if len(c.parts) < len(inboundParts) {
		w(" -only %s", strings.Join(c.parts, ","))
	}
	w("` (`make bench-inbound` runs the whole set). Do not edit by hand. Issue 17's figures: reliable vs core echo round trip, a long run with kills, NATS memory per message id (DESIGN.md §8).\n\n")
	w("## Conditions\n\n")
	w("- Machine: %d cores, %.0f GiB, loopback only; load tool, edges, NATS and dispatcher share the cores. Load average %s before, %s after (1, 5, 15 min); the set took %s.\n",
		env.cpus, env.memGiB, env.loadBefore, env.loadAfter, env.elapsed.Round(time.Second))
	w("- wsgate revision: %s. Go %s.\n", orDash(env.revision), env.goVersion)
	w("- Round trips: `bin/edge` + `bench/.bin/natsd` (nats-server v2.15.2; JetStream on for the reliable runs) + `bin/dispatcher` (its `echo` handler), each a child process of `loadgen`. *Reliable*: every echo carries a message id (32 hex digits, as the JS client's), the edges store it in the inbound work-queue stream (`WS_INBOUND=memory`, default dedupe window 2m) and answer `Server/ack` once stored; the dispatcher consumes `ws.inq.echo` through its durable consumer and replies. *Core*: the same echo without an id, on `ws.in.echo`.\n")
	w("- Latency is from the client's send to the echo reply's read (and, for reliable actions, to the `Server/ack`); *server CPU per action* is the CPU time of edge + NATS + dispatcher during the sending phase divided by the echoes answered. Each figure is the median of %d runs, the two modes interleaved run by run.\n", c.runs)
	w("- Raw JSON records and logs of this run: `%s` (not committed).\n\n", rawDir)

	w("## Reliable vs core echo at %s/s\n\n", fmtNum(c.rate))
	if !c.has("compare") {
		w("Not run in this generation: `make bench-inbound` runs it (`%s`, and the same with `-reliable`).\n\n", o.commands["core"])
	} else {
		w("| figure | core | reliable | reliable / core |\n|---|---:|---:|---|\n")
		row := func(name, better string, get func(inboundRun) float64) {
			vc, vr := medianOf(o.runs["core"], get), medianOf(o.runs["reliable"], get)
			w("| %s | %s | %s | %s |\n", name, fmtNum(vc), fmtNum(vr), ratioOf(vr, vc))
		}
		row("achieved send rate (/s)", "higher", func(r inboundRun) float64 { return r.res.AchievedRate })
		row("echo latency p50 (ms)", "lower", func(r inboundRun) float64 { return r.res.Latency.P50 })
		row("echo latency p99 (ms)", "lower", func(r inboundRun) float64 { return r.res.Latency.P99 })
		row("echo latency max (ms)", "lower", func(r inboundRun) float64 { return r.res.Latency.Max })
		row("lost echoes", "lower", func(r inboundRun) float64 { return float64(r.res.Lost) })
		row("server CPU per action, edge + NATS + dispatcher (µs)", "lower", func(r inboundRun) float64 { return r.cpuPerAction("") })
		row("… of which the edges (µs)", "lower", func(r inboundRun) float64 { return r.cpuPerAction("edge") })
		row("… of which NATS (µs)", "lower", func(r inboundRun) float64 { return r.cpuPerAction("natsd") })
		row("… of which the dispatcher (µs)", "lower", func(r inboundRun) float64 { return r.cpuPerAction("dispatcher") })
		row("load tool CPU (% of one core)", "lower", func(r inboundRun) float64 { return r.res.Derived.ClientCPUPercent })
		ackP := func(q func(a ackFigures) float64) func(inboundRun) float64 {
			return func(r inboundRun) float64 {
				if r.ack.AckLatency == nil {
					return math.NaN()
				}
				return q(r.ack)
			}
		}
		row("send → Server/ack p50 (ms)", "lower", ackP(func(a ackFigures) float64 { return a.AckLatency.P50 }))
		row("send → Server/ack p99 (ms)", "lower", ackP(func(a ackFigures) float64 { return a.AckLatency.P99 }))
		row("actions never acknowledged", "lower", func(r inboundRun) float64 {
			if r.ack.AckLatency == nil {
				return math.NaN()
			}
			return float64(r.ack.Unacked)
		})
		w("\n")
		for _, mode := range inboundModes {
			ok := len(o.runs[mode]) > 0
			for _, r := range o.runs[mode] {
				ok = ok && r.res.ok() && r.ack.Unacked == 0
			}
			p99 := medianOf(o.runs[mode], func(r inboundRun) float64 { return r.res.Latency.P99 })
			w("- %s, %d runs: zero loss and p99 ≤ 100 ms at %s/s: %s (median p99 %s ms). Command: `%s`\n",
				mode, len(o.runs[mode]), fmtNum(c.rate), passFail(ok && p99 <= 100), fmtNum(p99), o.commands[mode])
			for _, r := range o.runs[mode] {
				if !r.res.ok() || r.ack.Unacked != 0 {
					w("  - run with loss or errors: lost %d of %d, unacked %d, failed %d, dropped %d, errors %d %v\n", r.res.Lost, r.res.Expected, r.ack.Unacked, r.res.Failed, r.res.Dropped, r.res.PublishErrors+r.res.ClientErrors, first(r.res.ErrorSamples, 2))
				}
			}
		}
		w("\n")
	}

	w("## Highest echo rate with zero loss and p99 ≤ 100 ms\n\n")
	if !c.has("max") {
		w("Not run in this generation: `make bench-inbound` runs it (rates %v, %s each).\n\n", c.steps, c.duration)
	} else {
		cc, cr := o.max["core"], o.max["reliable"]
		w("| figure | core | reliable | reliable / core |\n|---|---:|---:|---|\n")
		w("| highest passing rate (echoes/s) | %s | %s | %s |\n", stepVal(cc, cc.maxRate), stepVal(cr, cr.maxRate), ratioOf(cr.maxRate, cc.maxRate))
		w("| latency p99 at that rate (ms) | %s | %s | %s |\n", stepVal(cc, cc.maxP99), stepVal(cr, cr.maxP99), ratioOf(cr.maxP99, cc.maxP99))
		w("| server CPU per action at that rate (µs) | %s | %s | %s |\n\n", stepVal(cc, cc.maxCPU), stepVal(cr, cr.maxCPU), ratioOf(cr.maxCPU, cc.maxCPU))
		w("%s\n\n", stepNote)
		for _, mode := range inboundModes {
			cl := o.max[mode]
			w("- %s, highest passing step: `%s`\n", mode, orDash(cl.command))
			w("  - steps in order (a failing step is tried twice): %s\n", orDash(strings.Join(cl.stepLog, "; ")))
			for _, e := range cl.errs {
				w("  - failed run: %s\n", e)
			}
		}
		w("\n")
	}

	w("## Long run: reliable actions through SIGKILLs of the dispatcher and the edges\n\n")
	switch {
	case !c.has("long"):
		w("Not run in this generation: `make bench-inbound` runs it (`bench/.bin/inboundrun -actions %d -clients %d -rate %s -kill-every %s`).\n\n", c.longActions, c.longClients, fmtRate(c.longRate), c.longKill)
	case o.long == nil:
		w("The run failed before it could count: %s\n\n", o.longErr)
	default:
		l := o.long
		w("%d clients (one user each) send %d numbered reliable actions at %s/s over %d edges to `counthandler` (a dispatcher built on the SDK with `WithReliable`, services/devstack/cmd/counthandler), which records every delivery with the idempotency pattern of `Example_idempotent`. Every %s one server is killed with SIGKILL, in turn the dispatcher, edge1, the dispatcher, edge2, and restarted a second later. Clients keep each action until its `Server/ack` and send it again with the same id after a reconnect (to the other edge) or 5 s without an answer, as the JS client's outbox does. Handler ack wait %s; stream storage %s. Command: `%s` (%s s).\n\n",
			l.Clients, l.Actions, fmtNum(l.Rate), l.Edges, l.KillEvery, l.AckWait, l.Storage, l.Command, fmtNum(l.Seconds))
		w("| figure | value | target |\n|---|---:|---|\n")
		w("| actions sent / acknowledged | %d / %d | all acknowledged: %s |\n", l.Actions, l.Acked, passFail(l.Acked == uint64(l.Actions)))
		w("| kills (SIGKILL) | %d %s | — |\n", l.KillsTotal, fmtKills(l.Kills))
		w("| client resends (same id) / reconnects | %d / %d | — |\n", l.Resent, l.Reconnects)
		w("| acks that said duplicate (a resend the stream already had) | %d | — |\n", l.DuplicateAcks)
		w("| Server/ack:error answers | %d | — |\n", l.AckErrors)
		w("| deliveries to the handler / redeliveries (attempt > 1) | %d / %d | — |\n", l.Tally.Deliveries, l.Tally.Redeliveries)
		w("| redeliveries whose effect had happened (skipped by the idempotency check) | %d | — |\n", l.Tally.Skipped)
		w("| dead letters | %d | 0: %s |\n", l.DeadLetters, passFail(l.DeadLetters == 0))
		w("| lost (effect never happened) | %d | 0: %s |\n", l.Tally.Lost, passFail(l.Tally.Lost == 0))
		w("| handled twice (effect happened twice) | %d | 0: %s |\n", l.Tally.HandledTwice, passFail(l.Tally.HandledTwice == 0))
		w("| stored twice (first delivered twice: dedupe failed) | %d | 0: %s |\n\n", l.Tally.StoredTwice, passFail(l.Tally.StoredTwice == 0))
		if len(l.Tally.Examples) > 0 {
			w("First faults: %s\n\n", strings.Join(l.Tally.Examples, "; "))
		}
	}

	w("## NATS memory per message id in the dedupe window\n\n")
	switch {
	case !c.has("memory"):
		w("Not run in this generation: `make bench-inbound` runs it (`bench/.bin/inboundmem -n %d`).\n\n", c.memIDs)
	case o.mem == nil:
		w("The measurement failed: %s\n\n", o.memErr)
	default:
		m := o.mem
		w("`%s`: one natsd with JetStream and one edge with `WS_INBOUND=%s`, so the stream is the edge's own (%s; the window is set to %s so that every id stays in it while RSS is read). %d actions of 128 B are published to `ws.inq.bench` with distinct `Nats-Msg-Id` keys of %d bytes (`u<user>.<32 hex>`, as the edge makes them from the JS client's ids), then as many without ids on a fresh natsd. The cost of the ids is natsd's RSS growth with ids minus without, less the bytes the id headers add to the stored messages; each reading is taken as the process runs and again after a forced collection (natsd's SIGUSR1: `debug.FreeOSMemory`), which leaves the live heap. After a purge of the stream, which is what the work queue looks like once the dispatchers have consumed the actions, the ids are still in the window (a resend of the first id is a duplicate: %v).\n\n",
			m.Command, m.Storage, m.StreamConfig, m.Dedupe, m.IDs.Actions, m.KeyBytes, m.IDs.WindowHoldsIDs)
		w("| figure | value |\n|---|---:|\n")
		w("| **NATS memory per message id in the window, actions consumed (live heap, B)** | **%s** |\n", fmtNum(m.BytesPerIDPurged))
		w("| the same with the actions still stored, their id headers excluded (live heap, B) | %s |\n", fmtNum(m.BytesPerIDLive))
		w("| the same as the process runs, uncollected garbage included (RSS, B) | %s |\n", fmtNum(m.BytesPerID))
		w("| stream bytes per stored action with its id (B) | %s |\n", fmtNum(m.StreamBytesPerAction))
		w("| natsd RSS growth for %d stored actions, with ids / without (MiB) | %s / %s |\n\n", m.IDs.Actions,
			fmtNum(float64(m.IDs.RSSStoredKiB-m.IDs.RSSBeforeKiB)/1024), fmtNum(float64(m.NoIDs.RSSStoredKiB-m.NoIDs.RSSBeforeKiB)/1024))
		w("Sizing: ids in the window = reliable actions per second × `WS_INBOUND_DEDUPE`. At 1,000/s and the default 2 m that is 120,000 ids: about %s MiB of live heap on each replica of the stream, and up to twice that in RSS between two collections (Go's default GOGC=100).\n\n",
			fmtNum(120000*m.BytesPerIDPurged/(1<<20)))
	}
	w(inboundHowTo)
	return b.String()
}

// ratioOf is a / b, or a dash.
func ratioOf(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || a == 0 || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtKills(k map[string]int) string {
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range k {
			if !yield(n) {
				return
			}
		}
	})
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, k[n]))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

const inboundHowTo = "## How to reproduce\n\n" +
	"```sh\n" +
	"make bench-inbound   # builds bin/ (edge, dispatcher, counthandler) and bench/.bin, then runs the command below\n" +
	"bench/.bin/benchall -set inbound -runs 3 -out docs/perf/inbound.md\n" +
	"bench/.bin/loadgen -start wsgate -scenario roundtrip -reliable -conns 1000 -rate 5000 -duration 10s   # one reliable figure\n" +
	"bench/.bin/inboundrun -actions 1000000 -clients 200 -rate 5000 -kill-every 15s   # the long run alone; exit status 1 on any loss\n" +
	"bench/.bin/inboundmem -n 1000000   # the memory figure alone\n" +
	"```\n\n" +
	"`-only compare,max,long,memory` runs parts of the set; `benchall -h` lists the set's flags (`-inbound-*`, `-long-*`, `-mem-ids`).\n"
