package wsconn

import (
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Micro-benchmarks of permessage-deflate's compress-once path. They report
// the bytes on the wire of one message (wire-B/msg) beside the time.

// BenchmarkDeflatedTextFrame compresses one realistic JSON server frame per
// op: the cost paid once per message and edge, at the level of a message
// for few connections and at that of one shared by many.
func BenchmarkDeflatedTextFrame(b *testing.B) {
	for _, size := range []int{128, 2048} {
		payload := realisticPayload(size)
		for _, shared := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/shared=%v", size, shared), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size))
				var n int
				for b.Loop() {
					n = len(DeflatedTextFrame(payload, shared))
				}
				b.ReportMetric(float64(n), "wire-B/msg")
				b.ReportMetric(float64(len(TextFrame(payload))), "plain-B/msg")
			})
		}
	}
}

// BenchmarkFanoutDeflate delivers one message to 100 connections, all of
// which negotiated compression (deflate=on) or none (deflate=off), as the
// hub does: an Outbound per message, FrameFor per connection, then Queue
// and Flush. An op is one broadcast; ns/delivery is the cost per connection
// reached, compression included (once per op), and wire-B/msg the frame's
// size. Peers are drained by goroutines with blocking reads.
func BenchmarkFanoutDeflate(b *testing.B) {
	for _, size := range []int{128, 2048} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/deflate=%v", size, map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
				benchFanoutDeflate(b, realisticPayload(size), on)
			})
		}
	}
}

func benchFanoutDeflate(b *testing.B, payload []byte, on bool) {
	const conns, drainers = 100, 2
	cs := make([]*Conn, conns)
	peers := make([]int, conns)
	for i := range cs {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		cs[i] = New(fileConn(b, fds[0]), 1<<16, nopStats{}, nil)
		if on {
			cs[i].SetDeflate()
		}
		peers[i] = fds[1]
	}
	probe := NewOutbound(payload)
	probe.MayReach(conns)
	frameLen := len(probe.FrameFor(cs[0]))
	var wg sync.WaitGroup
	for d := range drainers {
		wg.Go(func() {
			buf := make([]byte, frameLen)
			for i := d; ; i = (i + drainers) % conns {
				for got := 0; got < frameLen; {
					n, err := syscall.Read(peers[i], buf[got:])
					if n <= 0 || err != nil {
						return // the Conn was aborted
					}
					got += n
				}
			}
		})
	}
	pending := Batch{conns: make([]*Conn, 0, conns)}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		out := NewOutbound(payload)
		out.MayReach(conns)
		now := time.Now()
		for _, c := range cs {
			if err := c.Queue(&pending, out.FrameFor(c), now); err != nil {
				b.Fatal(err)
			}
		}
		pending.Flush()
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*conns), "ns/delivery")
	b.ReportMetric(float64(frameLen), "wire-B/msg")
	b.StopTimer()
	for _, c := range cs {
		c.Abort()
		c.Wait()
	}
	wg.Wait()
	for _, fd := range peers {
		syscall.Close(fd)
	}
	runtime.KeepAlive(cs)
}
