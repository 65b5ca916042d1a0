package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wsgate/wsgate/bench/internal/plots"
)

// standardPictures draws, for every step search of a set, latency p50 and
// p99 and server CPU per delivery against the rate, wsgate beside
// Centrifugo, into dir/plots.
func standardPictures(set string, specs []spec, cells map[string]map[string]*cell, dir string) ([]picture, error) {
	var charts []struct {
		file, caption, from string
		chart               plots.Chart
	}
	for _, s := range specs {
		if s.steps == nil {
			continue
		}
		lat := plots.Chart{Title: s.name + ": latency against rate", XLabel: "messages per second", YLabel: "ms", LogX: true}
		cpu := plots.Chart{Title: s.name + ": server CPU per delivery against rate", XLabel: "messages per second", YLabel: "µs per delivery", LogX: true}
		for _, gw := range gateways {
			c := cells[s.name][gw]
			if c == nil || c.na != "" {
				continue
			}
			rates, byRate := lastTryPerRate(c.steps)
			p50 := plots.Series{Name: "p50, " + gw}
			p99 := plots.Series{Name: "p99, " + gw}
			cost := plots.Series{Name: gw}
			for _, rate := range rates {
				r := byRate[rate]
				p50.X, p50.Y = append(p50.X, rate), append(p50.Y, r.Latency.P50)
				p99.X, p99.Y = append(p99.X, rate), append(p99.Y, r.Latency.P99)
				cost.X, cost.Y = append(cost.X, rate), append(cost.Y, mCPUPerMsg.get(r))
			}
			lat.Series = append(lat.Series, p50, p99)
			cpu.Series = append(cpu.Series, cost)
		}
		from := fmt.Sprintf("the steps of %s (their commands and log are in its section below)", s.name)
		charts = append(charts,
			struct {
				file, caption, from string
				chart               plots.Chart
			}{fmt.Sprintf("%s-%s-latency.png", set, s.name), lat.Title, from, lat},
			struct {
				file, caption, from string
				chart               plots.Chart
			}{fmt.Sprintf("%s-%s-cpu.png", set, s.name), cpu.Title, from, cpu})
	}
	if len(charts) == 0 {
		return nil, nil
	}
	pdir := filepath.Join(dir, "plots")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	var pics []picture
	var errs []error
	for _, ch := range charts {
		if err := ch.chart.Save(filepath.Join(pdir, ch.file)); err != nil {
			errs = append(errs, err)
			continue
		}
		pics = append(pics, picture{file: filepath.Join("plots", ch.file), caption: ch.caption + " — from " + ch.from})
	}
	return pics, errors.Join(errs...)
}

// lastTryPerRate returns the rates stepped through, in increasing order,
// and the last try at each.
func lastTryPerRate(steps []*result) ([]float64, map[float64]*result) {
	by := map[float64]*result{}
	var rates []float64
	for _, r := range steps {
		if _, ok := by[r.Params.Rate]; !ok {
			rates = append(rates, r.Params.Rate)
		}
		by[r.Params.Rate] = r
	}
	slices.Sort(rates)
	return rates, by
}

// renderPictures is the report's section of pictures, each with the
// command that drew it.
func renderPictures(set string, pics []picture, err error) string {
	if len(pics) == 0 && err == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Pictures\n\nDrawn by `bench/.bin/benchall -set %s` (what `make bench` runs) from the runs of this report; each point is one step of a step search.\n\n", set)
	for _, p := range pics {
		title, _, _ := strings.Cut(p.caption, " — ")
		fmt.Fprintf(&b, "### %s\n\n![%s](%s)\n\n", p.caption, title, p.file)
	}
	if err != nil {
		fmt.Fprintf(&b, "Pictures that could not be drawn: %v\n", err)
	}
	return b.String()
}
