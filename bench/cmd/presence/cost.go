package main

import (
	"context"
	"encoding/json"
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

// costConfig is the presence cost figure: the standard idle scenario of
// loadgen with presence off and on, interleaved run by run.
type costConfig struct {
	loadgen string
	results string
	conns   int
	workers int
	hold    time.Duration
	runs    int
}

// costRecord is the part of loadgen's JSON record the figure reads.
type costRecord struct {
	Connected  int64    `json:"connected"`
	Failed     int64    `json:"failed"`
	Dropped    int64    `json:"dropped"`
	RunSeconds float64  `json:"run_seconds"`
	Errors     []string `json:"error_samples"`
	Server     struct {
		Names     []string `json:"names"`
		Before    []sample `json:"before"`
		AfterRamp []sample `json:"after_ramp"`
		AfterRun  []sample `json:"after_run"`
	} `json:"server"`
}

type sample struct {
	RSSKiB int64 `json:"rss_kib"`
	CPUus  int64 `json:"cpu_us"`
}

// perConn is one process kind's cost per connection in one run.
type perConn struct {
	rssKiB  float64 // RSS growth over the ramp per connection
	cpuUsPS float64 // CPU per connection per second of the idle hold
}

// costRun is one loadgen run's costs by process kind (edge, natsd, dispatcher).
type costRun struct {
	presence bool
	byKind   map[string]perConn
	conns    int64
	ok       bool
	note     string
}

// costCell is the runs of one setting.
type costCell struct {
	runs    []costRun
	errs    []string
	command string
}

// args are loadgen's arguments of one run, but -json and -timeout.
func (c costConfig) args(presence bool) []string {
	a := []string{"-start", "wsgate", "-scenario", "idle", "-conns", strconv.Itoa(c.conns),
		"-workers", strconv.Itoa(c.workers), "-ramp", "2000", "-duration", c.hold.String()}
	if presence {
		a = append(a, "-presence")
	}
	return a
}

// runCost runs the cost figure: presence off then on, runs times.
func runCost(ctx context.Context, c costConfig, log io.Writer) (off, on *costCell) {
	off, on = &costCell{command: "bench/.bin/loadgen " + strings.Join(c.args(false), " ")},
		&costCell{command: "bench/.bin/loadgen " + strings.Join(c.args(true), " ")}
	for k := range c.runs {
		for _, presence := range []bool{false, true} {
			cell := off
			if presence {
				cell = on
			}
			r, err := costOnce(ctx, c, presence, k)
			if err != nil {
				cell.errs = append(cell.errs, err.Error())
				fmt.Fprintln(log, "presence cost:", err)
				if ctx.Err() != nil {
					return off, on
				}
				continue
			}
			fmt.Fprintf(log, "presence cost: presence=%v run %d: %d connections, edge %.2f KiB and %.2f µs/s per connection\n",
				presence, k+1, r.conns, r.byKind["edge"].rssKiB, r.byKind["edge"].cpuUsPS)
			cell.runs = append(cell.runs, r)
		}
	}
	return off, on
}

func costOnce(ctx context.Context, c costConfig, presence bool, k int) (costRun, error) {
	name := fmt.Sprintf("cost-%s-%d", map[bool]string{true: "on", false: "off"}[presence], k+1)
	out := filepath.Join(c.results, name+".json")
	logf, err := os.Create(filepath.Join(c.results, name+".log"))
	if err != nil {
		return costRun{}, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, c.loadgen, append(c.args(presence), "-json", out, "-timeout", "10m")...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return costRun{}, fmt.Errorf("%s: %w (see %s)", name, err, logf.Name())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return costRun{}, err
	}
	var rec costRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return costRun{}, fmt.Errorf("%s: %w", out, err)
	}
	r := costRun{presence: presence, byKind: map[string]perConn{}, conns: rec.Connected,
		ok: rec.Failed == 0 && rec.Dropped == 0 && rec.Connected == int64(c.conns)}
	if !r.ok {
		r.note = fmt.Sprintf("connected %d of %d, failed %d, dropped %d %v", rec.Connected, c.conns, rec.Failed, rec.Dropped, rec.Errors)
	}
	s := rec.Server
	if rec.Connected == 0 || rec.RunSeconds <= 0 {
		return r, fmt.Errorf("%s: no connection held", name)
	}
	for i, n := range s.Names {
		if i >= len(s.Before) || i >= len(s.AfterRamp) || i >= len(s.AfterRun) {
			break
		}
		kind := strings.TrimRight(n, "0123456789")
		p := r.byKind[kind]
		p.rssKiB += float64(s.AfterRamp[i].RSSKiB-s.Before[i].RSSKiB) / float64(rec.Connected)
		p.cpuUsPS += float64(s.AfterRun[i].CPUus-s.AfterRamp[i].CPUus) / float64(rec.Connected) / rec.RunSeconds
		r.byKind[kind] = p
	}
	return r, nil
}

// median of one figure of a cell's runs; NaN without runs.
func (c *costCell) median(kind string, get func(perConn) float64) float64 {
	var v []float64
	for _, r := range c.runs {
		if p, ok := r.byKind[kind]; ok {
			v = append(v, get(p))
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
