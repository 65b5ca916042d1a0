// Package plots draws the load tool's curves as PNG files with
// gonum.org/v1/plot: lines of figures against a parameter (connections,
// edges, rate), one line per series (a gateway, a NATS topology).
package plots

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Size of every picture.
const (
	width  = 16 * vg.Centimeter
	height = 10 * vg.Centimeter
	// maxTicks is the most X values labelled one by one.
	maxTicks = 12
)

// Series is one line: Y against X, in order. Points where either is NaN or
// infinite (a figure a run could not produce) are left out.
type Series struct {
	Name string
	X, Y []float64
}

// Chart is one picture.
type Chart struct {
	Title, XLabel, YLabel string
	// LogX puts X on a logarithmic scale (rates and counts that double).
	LogX   bool
	Series []Series
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// points returns the drawable points of s.
func (s Series) points(logX bool) plotter.XYs {
	var xys plotter.XYs
	for i := range min(len(s.X), len(s.Y)) {
		x, y := s.X[i], s.Y[i]
		if !finite(x) || !finite(y) || logX && x <= 0 {
			continue
		}
		xys = append(xys, plotter.XY{X: x, Y: y})
	}
	return xys
}

// PNG renders c. It fails when no series has a point to draw.
func (c Chart) PNG() ([]byte, error) {
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	if c.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	var args []any
	xs := map[float64]bool{}
	for _, s := range c.Series {
		if xys := s.points(c.LogX); len(xys) > 0 {
			args = append(args, s.Name, xys)
			for _, xy := range xys {
				xs[xy.X] = true
			}
		}
	}
	// The measured X values (edges 1, 2, 4, 8; a few connection counts)
	// are the ticks, where they are few enough to label.
	if len(xs) <= maxTicks {
		var ticks plot.ConstantTicks
		for _, x := range slices.Sorted(maps.Keys(xs)) {
			ticks = append(ticks, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'g', -1, 64)})
		}
		p.X.Tick.Marker = ticks
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("plots: %q has no point to draw", c.Title)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, fmt.Errorf("plots: %q: %w", c.Title, err)
	}
	// Costs and latencies start at zero: a curve that looks steep only
	// because the axis starts near its lowest point misleads.
	p.Y.Min = min(p.Y.Min, 0)
	// Room above the highest point for the legend, one line per series.
	p.Y.Max += (p.Y.Max - p.Y.Min) * (0.1 + 0.08*float64(len(args)/2))
	wt, err := p.WriterTo(width, height, "png")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Save renders c into the file path.
func (c Chart) Save(path string) error {
	data, err := c.PNG()
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return errors.New("plots: empty picture")
	}
	return os.WriteFile(path, data, 0o644)
}
