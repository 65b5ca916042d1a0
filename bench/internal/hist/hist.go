// Package hist is a fixed-size, lock-free latency histogram in the manner of
// HdrHistogram: values below 128 are counted exactly, larger ones in
// log-linear buckets of 64 per power of two, so any recorded value is known
// to within 1/64 (1.6 %) whatever the count, in bounded memory (~30 KiB).
package hist

import (
	"math"
	"math/bits"
	"sync/atomic"
)

const (
	subBits   = 6
	subCount  = 1 << subBits       // buckets per power of two
	exactMax  = 2 * subCount       // values below it have a bucket each
	maxShift  = 63 - (subBits + 1) // largest shift of a non-negative int64
	numBucket = exactMax + maxShift*subCount
)

// Hist counts non-negative values (microseconds, by convention of this
// module). Record may be called from any goroutine; so may Snapshot, which
// sees each bucket either before or after a concurrent Record.
type Hist struct {
	counts [numBucket]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Int64
}

// New returns an empty histogram.
func New() *Hist { return &Hist{} }

func index(v int64) int {
	if v < exactMax {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - (subBits + 1)
	return exactMax + (shift-1)*subCount + int(v>>shift) - subCount
}

// highest is the largest value that falls in bucket i.
func highest(i int) int64 {
	if i < exactMax {
		return int64(i)
	}
	shift := (i-exactMax)/subCount + 1
	m := int64((i-exactMax)%subCount + subCount)
	return (m+1)<<shift - 1
}

// Record counts v; negative values (clock steps) count as 0.
func (h *Hist) Record(v int64) {
	v = max(v, 0)
	h.counts[index(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count is the number of values recorded.
func (h *Hist) Count() uint64 { return h.total.Load() }

// Snapshot copies the histogram into a plain, mergeable value.
func (h *Hist) Snapshot() Snapshot {
	s := Snapshot{Max: h.max.Load(), Sum: h.sum.Load()}
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			s.Buckets = append(s.Buckets, Bucket{Index: i, Count: n})
			s.Count += n
		}
	}
	return s
}

// Bucket is one non-empty bucket of a Snapshot.
type Bucket struct {
	Index int    `json:"i"`
	Count uint64 `json:"n"`
}

// Snapshot is a histogram as plain data: sparse buckets in index order, so
// that it crosses a process boundary as small JSON and merges by addition.
type Snapshot struct {
	Buckets []Bucket `json:"buckets,omitempty"`
	Count   uint64   `json:"count"`
	Sum     uint64   `json:"sum"`
	Max     int64    `json:"max"`
}

// Merge adds o to s.
func (s *Snapshot) Merge(o Snapshot) {
	merged := make([]Bucket, 0, len(s.Buckets)+len(o.Buckets))
	i, j := 0, 0
	for i < len(s.Buckets) || j < len(o.Buckets) {
		switch {
		case j == len(o.Buckets) || (i < len(s.Buckets) && s.Buckets[i].Index < o.Buckets[j].Index):
			merged = append(merged, s.Buckets[i])
			i++
		case i == len(s.Buckets) || o.Buckets[j].Index < s.Buckets[i].Index:
			merged = append(merged, o.Buckets[j])
			j++
		default:
			merged = append(merged, Bucket{Index: s.Buckets[i].Index, Count: s.Buckets[i].Count + o.Buckets[j].Count})
			i++
			j++
		}
	}
	s.Buckets = merged
	s.Count += o.Count
	s.Sum += o.Sum
	s.Max = max(s.Max, o.Max)
}

// Quantile returns the value at quantile q (0 < q ≤ 1): the highest value of
// the bucket holding the ⌈q·count⌉-th smallest sample, never above Max, so
// it errs high by at most one bucket width. An empty snapshot gives 0.
func (s Snapshot) Quantile(q float64) int64 {
	if s.Count == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	rank = min(max(rank, 1), s.Count)
	var seen uint64
	for _, b := range s.Buckets {
		seen += b.Count
		if seen >= rank {
			return min(highest(b.Index), s.Max)
		}
	}
	return s.Max
}

// Mean is the average of the recorded values.
func (s Snapshot) Mean() float64 {
	if s.Count == 0 {
		return 0
	}
	return float64(s.Sum) / float64(s.Count)
}
