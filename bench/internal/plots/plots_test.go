package plots

import (
	"bytes"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestPNGDecodes(t *testing.T) {
	c := Chart{
		Title: "server CPU per delivery against edges", XLabel: "edges", YLabel: "µs", LogX: true,
		Series: []Series{
			{Name: "one NATS server", X: []float64{1, 2, 4, 8}, Y: []float64{40, 41, 43, 44}},
			// A run without a figure leaves a hole, not a zero.
			{Name: "3-node cluster", X: []float64{1, 2, 4, 8}, Y: []float64{45, math.NaN(), 47, 49}},
		},
	}
	data, err := c.PNG()
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() < 300 || b.Dy() < 200 {
		t.Fatalf("picture of %v, want a readable size", b)
	}
	if colours(img) < 3 {
		t.Fatal("the picture is blank: no axes, text or lines drawn")
	}

	path := filepath.Join(t.TempDir(), "c.png")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("saved file is not a PNG: %v", err)
	}
}

// colours counts the distinct colours of img (a blank picture has one).
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}

func TestNothingToDraw(t *testing.T) {
	c := Chart{Title: "empty", Series: []Series{{Name: "none", X: []float64{1}, Y: []float64{math.NaN()}}}}
	if _, err := c.PNG(); err == nil {
		t.Fatal("a chart without a point must fail, not draw empty axes")
	}
	c = Chart{Title: "log of zero", LogX: true, Series: []Series{{Name: "zero", X: []float64{0}, Y: []float64{1}}}}
	if _, err := c.PNG(); err == nil {
		t.Fatal("x = 0 cannot be drawn on a log scale")
	}
}
