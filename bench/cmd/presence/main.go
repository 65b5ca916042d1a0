// Command presence measures wsgate's rooms and presence (DESIGN.md §9,
// issue 18) on real processes and writes docs/perf/presence.md:
//
//   - join: how long a join takes to be in force on every edge (K = 2, 4);
//
//   - cost: memory and idle CPU per connection with presence off and on
//     (loadgen's idle scenario, interleaved);
//
//   - soak: edges killed with SIGKILL while thousands of users reconnect:
//     ghosts, missing or duplicated Client/online and Client/offline, and
//     the offline latency;
//
//   - count: ws.presence.group of a group of 100,000 members.
//
//     bench/.bin/presence -out docs/perf/presence.md          (make bench-presence)
//     bench/.bin/presence -parts soak -kills 10 -users 300     (one part, smaller)
//
// Run it from the repository root after make build and after building
// bench/.bin (loadgen, natsd, presence). It exits with status 1 when a
// promise broke: a ghost, a missing or duplicated event, a group message
// lost after a join's ok.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/bench/internal/presenceload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "presence:", err)
		os.Exit(1)
	}
}

// outcome is every figure a run made (nil: the part did not run).
type outcome struct {
	joins    []*presenceload.JoinResult
	joinErrs []string
	off, on  *costCell
	soak     *presenceload.SoakResult
	soakErr  string
	count    *presenceload.CountResult
	countErr string
	command  string
	elapsed  time.Duration
	load     [2]string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("presence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "docs/perf/presence.md", "the report to write")
	parts := fs.String("parts", "join,cost,soak,count", "comma-separated parts to run: join, cost, soak, count")
	binDir := fs.String("bin", "bin", "directory of edge and dispatcher")
	benchBin := fs.String("bench-bin", "bench/.bin", "directory of natsd and loadgen")
	results := fs.String("results", "bench/results", "directory of the raw records and the servers' logs")
	timeout := fs.Duration("timeout", 2*time.Hour, "hard limit of the whole run")

	joinEdges := fs.String("join-edges", "2,4", "join: edge counts K")
	joinUsers := fs.Int("join-users", 250, "join: users, each with a connection on every edge")
	joins := fs.Int("joins", 3000, "join: joins per K")
	joinRate := fs.Float64("join-rate", 100, "join: joins per second")

	costConns := fs.Int("cost-conns", 10000, "cost: idle connections")
	costWorkers := fs.Int("cost-workers", 2, "cost: loadgen worker processes")
	costHold := fs.Duration("cost-hold", 30*time.Second, "cost: idle hold (longer than the edge's ping period)")
	runs := fs.Int("runs", 3, "cost: runs of each setting, off and on interleaved (medians are reported)")

	soakEdges := fs.Int("soak-edges", 3, "soak: edges")
	dispatchers := fs.Int("dispatchers", 2, "soak: dispatcher replicas, racing for every reap and offline")
	users := fs.Int("users", 3000, "soak: users, one connection each")
	kills := fs.Int("kills", 100, "soak: SIGKILLs")
	killEvery := fs.Duration("kill-every", 3*time.Second, "soak: time between kills")
	lease := fs.Duration("lease", 3*time.Second, "soak: WS_PRESENCE_LEASE (default 10s in production)")
	grace := fs.Duration("grace", time.Second, "soak: WS_PRESENCE_GRACE (default 5s in production)")
	away := fs.Float64("away", 0.5, "soak: fraction of a killed edge's users that stay away until their Client/offline")
	closeAtEnd := fs.Float64("close-at-end", 0.25, "soak: fraction of the users that close cleanly at the end")
	seed := fs.Uint64("seed", 1, "soak: seed of the kills' choices")

	members := fs.Int("members", 100000, "count: members of the group")
	countRequests := fs.Int("count-requests", 2000, "count: requests of each kind")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	want := map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		switch p = strings.TrimSpace(p); p {
		case "join", "cost", "soak", "count":
			want[p] = true
		default:
			return fmt.Errorf("-parts: unknown part %q (join, cost, soak, count)", p)
		}
	}
	edges, err := intList(*joinEdges)
	if err != nil {
		return fmt.Errorf("-join-edges: %w", err)
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	resDir, err := filepath.Abs(filepath.Join(*results, "presence-"+stamp))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(resDir, 0o755); err != nil {
		return err
	}
	bin := presenceload.Bin{Dir: *binDir, NATSD: filepath.Join(*benchBin, "natsd"), Work: resDir}
	if err := bin.Check(); err != nil {
		return err
	}
	loadgen := filepath.Join(*benchBin, "loadgen")
	if want["cost"] {
		if _, err := os.Stat(loadgen); err != nil {
			return fmt.Errorf("%s is missing: build bench/.bin first", loadgen)
		}
	}
	if err := paceServers(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	started := time.Now()
	o := &outcome{command: "bench/.bin/presence " + strings.Join(args, " ")}
	o.load[0] = loadavg()

	if want["join"] {
		for _, k := range edges {
			r, err := presenceload.Join(ctx, presenceload.JoinConfig{Bin: bin, Edges: k, Users: *joinUsers, Joins: *joins, Rate: *joinRate, Progress: stderr})
			if err != nil {
				o.joinErrs = append(o.joinErrs, fmt.Sprintf("K=%d: %v", k, err))
				fmt.Fprintln(stderr, "presence join:", err)
				continue
			}
			fmt.Fprintf(stdout, "join K=%d: in force p50 %.1f ms p99 %.1f ms max %.1f ms at %.0f joins/s; lost %d refused %d\n",
				k, r.InForce.P50, r.InForce.P99, r.InForce.Max, r.AchievedRate, r.Lost, r.Refused)
			o.joins = append(o.joins, r)
		}
	}
	if want["cost"] && ctx.Err() == nil {
		o.off, o.on = runCost(ctx, costConfig{loadgen: loadgen, results: resDir, conns: *costConns, workers: *costWorkers, hold: *costHold, runs: max(*runs, 1)}, stderr)
	}
	if want["soak"] && ctx.Err() == nil {
		r, err := presenceload.Soak(ctx, presenceload.SoakConfig{
			Bin: bin, Edges: *soakEdges, Dispatchers: *dispatchers, Users: *users, Kills: *kills, KillEvery: *killEvery,
			Lease: *lease, Grace: *grace, Away: *away, CloseAtEnd: *closeAtEnd, Seed: *seed, Progress: stderr,
		})
		if err != nil {
			o.soakErr = err.Error()
			fmt.Fprintln(stderr, "presence soak:", err)
		} else {
			o.soak = r
			fmt.Fprintf(stdout, "soak: %d kills, ghosts %d+%d, missing users %d, events %+v, offline p99 %.0f ms (limit %.0f)\n",
				r.Kills, r.GhostConnections, r.GhostUsers, r.MissingUsers, r.Events, r.OfflineLatency.P99, r.OfflineLimitMs)
		}
	}
	if want["count"] && ctx.Err() == nil {
		r, err := presenceload.Count(ctx, presenceload.CountConfig{Bin: bin, Members: *members, Requests: *countRequests, Progress: stderr})
		if err != nil {
			o.countErr = err.Error()
			fmt.Fprintln(stderr, "presence count:", err)
		} else {
			o.count = r
			for _, row := range r.Rows {
				fmt.Fprintf(stdout, "count %q: p50 %.2f ms p99 %.2f ms max %.2f ms\n", row.Payload, row.Latency.P50, row.Latency.P99, row.Latency.Max)
			}
		}
	}
	o.elapsed = time.Since(started)
	o.load[1] = loadavg()
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	shown := resDir
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, resDir); err == nil && !strings.HasPrefix(rel, "..") {
			shown = rel
		}
	}
	if err := os.WriteFile(*out, []byte(render(o, shown)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s); raw records and logs in %s\n", *out, o.elapsed.Round(time.Second), resDir)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return broken(o)
}

// broken returns an error naming the promises the run saw broken.
func broken(o *outcome) error {
	var errs []error
	for _, j := range o.joins {
		if j.Lost > 0 {
			errs = append(errs, fmt.Errorf("join K=%d: %d group messages sent after an ok answer missed a connection", j.Edges, j.Lost))
		}
	}
	if s := o.soak; s != nil {
		if g := s.GhostConnections + s.GhostUsers; g > 0 {
			errs = append(errs, fmt.Errorf("soak: %d ghost connections in presence", g))
		}
		if s.MissingUsers > 0 {
			errs = append(errs, fmt.Errorf("soak: %d connected users missing from presence", s.MissingUsers))
		}
		if !s.Events.OK() {
			errs = append(errs, fmt.Errorf("soak: %d missing, %d duplicated, %d unreadable user events", s.Events.Missing, s.Events.Duplicated, s.Events.Unreadable))
		}
		if s.OfflineTimedOut > 0 {
			errs = append(errs, fmt.Errorf("soak: %d users got no Client/offline after a kill", s.OfflineTimedOut))
		}
	}
	for _, e := range []string{o.soakErr, o.countErr} {
		if e != "" {
			errs = append(errs, errors.New(e))
		}
	}
	for _, e := range o.joinErrs {
		errs = append(errs, errors.New(e))
	}
	return errors.Join(errs...)
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
	slices.Sort(out)
	return out, nil
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// sysmonPace is the GODEBUG setting loadgen gives every server it starts
// (see loadgen -h, -godebug): the servers of this command get it too, so
// that their figures compare with docs/PERFORMANCE.md's.
const sysmonPace = "schedtrace=2147483647"

// paceServers adds sysmonPace to GODEBUG, which the servers inherit,
// unless GODEBUG sets schedtrace already.
func paceServers() error {
	cur := os.Getenv("GODEBUG")
	for _, s := range strings.Split(cur, ",") {
		if strings.HasPrefix(s, "schedtrace=") {
			return nil
		}
	}
	if cur != "" {
		cur += ","
	}
	return os.Setenv("GODEBUG", cur+sysmonPace)
}
