package hist

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIndexBoundsAndOrder(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<40 + 12345, 1<<62 + 1, 1<<63 - 1} {
		i := index(v)
		if i < 0 || i >= numBucket {
			t.Fatalf("index(%d) = %d, out of [0,%d)", v, i, numBucket)
		}
		if i < prev {
			t.Fatalf("index(%d) = %d is below the previous %d: buckets must be ordered", v, i, prev)
		}
		prev = i
		if h := highest(i); h < v {
			t.Fatalf("highest(index(%d)) = %d, below the value", v, h)
		}
	}
}

func TestBucketWidthWithinPrecision(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Int64N(1 << 40)
		h := highest(index(v))
		if v >= exactMax && float64(h-v) > float64(v)/subCount {
			t.Fatalf("value %d reported as %d: error above 1/%d", v, h, subCount)
		}
		if v < exactMax && h != v {
			t.Fatalf("small value %d reported as %d, want exact", v, h)
		}
	}
}

func TestQuantilesAgainstSortedSamples(t *testing.T) {
	cases := []struct {
		name string
		gen  func(r *rand.Rand) int64
	}{
		{"uniform-small", func(r *rand.Rand) int64 { return r.Int64N(100) }},
		{"uniform-ms", func(r *rand.Rand) int64 { return 1000 + r.Int64N(99000) }},
		{"exponential", func(r *rand.Rand) int64 { return int64(r.ExpFloat64() * 2000) }},
		{"bimodal", func(r *rand.Rand) int64 {
			if r.IntN(100) == 0 {
				return 500000 + r.Int64N(1000)
			}
			return 300 + r.Int64N(50)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, 9))
			h := New()
			samples := make([]int64, 20000)
			for i := range samples {
				samples[i] = tc.gen(r)
				h.Record(samples[i])
			}
			slices.Sort(samples)
			s := h.Snapshot()
			if s.Count != uint64(len(samples)) {
				t.Fatalf("count %d, want %d", s.Count, len(samples))
			}
			if s.Max != samples[len(samples)-1] {
				t.Fatalf("max %d, want %d", s.Max, samples[len(samples)-1])
			}
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				rank := int(float64(len(samples))*q+0.999999) - 1
				want := samples[max(rank, 0)]
				got := s.Quantile(q)
				tol := want/subCount + 1
				if got < want || got > want+tol {
					t.Errorf("q%.3f = %d, want %d (+%d)", q, got, want, tol)
				}
			}
		})
	}
}

func TestEmptyAndNegative(t *testing.T) {
	var s Snapshot
	if s.Quantile(0.99) != 0 || s.Mean() != 0 {
		t.Fatal("empty snapshot must give zeros")
	}
	h := New()
	h.Record(-5)
	if got := h.Snapshot().Quantile(1); got != 0 {
		t.Fatalf("negative value recorded as %d, want 0", got)
	}
}

func TestMergeEqualsRecordingTogether(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	a, b, all := New(), New(), New()
	for i := range 5000 {
		v := int64(r.ExpFloat64() * 5000)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
		all.Record(v)
	}
	m := a.Snapshot()
	m.Merge(b.Snapshot())
	// Through JSON, as it crosses from a worker process to the parent.
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	want := all.Snapshot()
	if !slices.Equal(back.Buckets, want.Buckets) || back.Count != want.Count || back.Sum != want.Sum || back.Max != want.Max {
		t.Fatalf("merged snapshot differs from one recorded together")
	}
	var empty Snapshot
	empty.Merge(want)
	if empty.Quantile(0.9) != want.Quantile(0.9) {
		t.Fatal("merge into empty changed the quantiles")
	}
}

func TestConcurrentRecord(t *testing.T) {
	h := New()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10000 {
				h.Record(int64(g*1000 + i%1000))
			}
		})
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count != 80000 || h.Count() != 80000 {
		t.Fatalf("count %d, want 80000", s.Count)
	}
	if s.Max != 7999 {
		t.Fatalf("max %d, want 7999", s.Max)
	}
}

func BenchmarkRecord(b *testing.B) {
	h := New()
	b.RunParallel(func(pb *testing.PB) {
		v := int64(1)
		for pb.Next() {
			h.Record(v)
			v = (v*31 + 7) % 1000000
		}
	})
}
