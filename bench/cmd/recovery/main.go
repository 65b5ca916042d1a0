// Command recovery measures wsgate's history and recovery (DESIGN.md §8,
// issue 16) on real processes: natsd with JetStream and edges with
// WS_HISTORY=memory, started by bench/internal/stack. Three scenarios, each
// writing its section of docs/perf/recovery.md:
//
//   - longrun: numbered messages to every user while edges are SIGKILLed
//     and restarted; every number must arrive exactly once and in order;
//   - catchup: clients reconnect after missing 100 messages each: time to
//     the last missed one;
//   - storm: 10,000 clients reconnect with since within 10 s beside
//     bystanders whose latency is measured before and during it.
//
// It exits with an error when a scenario fails its check (any loss,
// duplicate or recovered:false; catchup's p99 above 50 ms).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "recovery:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("recovery", flag.ContinueOnError)
	fs.SetOutput(stderr)
	exe, _ := os.Executable()
	exeDir := filepath.Dir(exe)
	which := fs.String("scenario", "all", "longrun, catchup, storm, or all (comma-separated)")
	out := fs.String("out", "docs/perf/recovery.md", "the report; each scenario replaces its own section")
	binDir := fs.String("bin", filepath.Join(exeDir, "..", "..", "bin"), "directory of the edge program")
	natsd := fs.String("natsd", filepath.Join(exeDir, "natsd"), "bench's natsd program")
	dir := fs.String("dir", "", "servers' logs and JetStream storage (default: a new temporary directory)")
	edges := fs.Int("edges", 2, "longrun, catchup: edges")
	storage := fs.String("storage", "memory", "WS_HISTORY of the edges: memory or file (the stream's storage)")
	lr := longrunConfig{Drain: 2 * time.Minute}
	fs.IntVar(&lr.Users, "users", 10000, "longrun: users, one connection each")
	fs.Int64Var(&lr.Messages, "messages", 1000000, "longrun: numbered messages, round robin over the users")
	fs.Float64Var(&lr.Rate, "rate", 2000, "longrun: messages per second")
	fs.DurationVar(&lr.KillEvery, "kill-every", 30*time.Second, "longrun: one edge SIGKILLed (in turn) and restarted this often")
	fs.IntVar(&lr.MaxKills, "max-kills", 0, "longrun: most kills (0: as many as fit)")
	fs.DurationVar(&lr.Jitter, "jitter", time.Second, "longrun: a client whose socket ended reconnects after a random wait up to this")
	cu := catchupConfig{Drain: time.Minute}
	fs.IntVar(&cu.Users, "catchup-users", 1000, "catchup: users, one connection each")
	fs.IntVar(&cu.Missed, "missed", 100, "catchup: messages each user misses")
	fs.Float64Var(&cu.Rate, "catchup-rate", 0, "catchup: messages per second while the users are away (0: as fast as the stream acknowledges)")
	fs.Float64Var(&cu.ReconnectRate, "reconnect-rate", 100, "catchup: reconnections per second")
	sc := stormConfig{Drain: 2 * time.Minute}
	fs.IntVar(&sc.Users, "storm-users", 10000, "storm: users with history that drop and reconnect")
	fs.IntVar(&sc.Bystanders, "bystanders", 500, "storm: connections on the same edge that stay")
	fs.Float64Var(&sc.Rate, "storm-rate", 2000, "storm: messages per second to the storm users")
	fs.Float64Var(&sc.ByRate, "bystander-rate", 500, "storm: messages per second to the bystanders")
	fs.DurationVar(&sc.Spread, "spread", 10*time.Second, "storm: reconnections spread over this")
	fs.DurationVar(&sc.Before, "before", 10*time.Second, "storm: steady state measured before the storm")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lr.Edges, cu.Edges = *edges, *edges
	if err := setStorage(*storage); err != nil {
		return err
	}
	want := strings.Split(*which, ",")
	if *which == "all" {
		want = scenarios
	}
	for _, w := range want {
		if !slices.Contains(scenarios, w) {
			return fmt.Errorf("unknown scenario %q (longrun, catchup, storm or all)", w)
		}
	}
	for _, p := range []string{filepath.Join(*binDir, "edge"), *natsd} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing: run make build and build bench/.bin/natsd first (make bench-recovery does both)", p)
		}
	}
	raiseOpenFiles()
	e := env{binDir: *binDir, natsd: *natsd, dir: *dir, secret: randomHex(), prefix: "ws", log: stdout}
	var errs []error
	if *dir == "" {
		d, err := os.MkdirTemp("", "wsgate-recovery-")
		if err != nil {
			return err
		}
		e.dir = d
		defer func() {
			if len(errs) == 0 {
				_ = os.RemoveAll(d)
			} else {
				e.logf("the servers' logs are kept in %s", d)
			}
		}()
	}
	for _, w := range want {
		var section string
		var err error
		switch w {
		case "longrun":
			var r longrunResult
			r, err = longrun(ctx, e, lr)
			section = r.section
		case "catchup":
			var r catchupResult
			r, err = catchup(ctx, e, cu)
			section = r.section
		case "storm":
			var r stormResult
			r, err = storm(ctx, e, sc)
			section = r.section
		}
		if section != "" {
			if werr := writeSection(*out, w, section); werr != nil {
				return werr
			}
			e.logf("%s: wrote its section of %s", w, *out)
		}
		if err != nil {
			e.logf("%s: %v", w, err)
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// raiseOpenFiles lifts the soft limit of open files to the hard one, for
// this process and the servers it starts.
func raiseOpenFiles() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
