package wsconn

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Micro-benchmarks of the per-frame work of the edge's connections, over
// AF_UNIX socket pairs (a real descriptor, as on the edge, without TCP's
// cost). `make microbench` runs them.

// benchPayload is a typical small server-to-client or client-to-server
// message (about 100 bytes of JSON).
var benchPayload = []byte(`["chat/message",{"room":"lobby-42","text":"hello there, how is everyone doing today?"},"req-17"]`)

// BenchmarkReaderNext reads one small masked text frame per op; the client
// side writes them batchSize at a time, in the loop (a write per batch).
func BenchmarkReaderNext(b *testing.B) {
	const batchSize = 256
	server, client := socketPair(b)
	defer server.Close()
	defer client.Close()
	r, err := NewReader(server, 1<<16)
	if err != nil {
		b.Fatal(err)
	}
	batch := bytes.Repeat(clientFrame(true, OpText, benchPayload), batchSize)
	pending := 0
	b.ReportAllocs()
	b.SetBytes(int64(len(batch) / batchSize))
	for b.Loop() {
		if pending == 0 {
			if _, err := client.Write(batch); err != nil {
				b.Fatal(err)
			}
			pending = batchSize
		}
		for {
			m, ok, err := r.Next()
			if err != nil {
				b.Fatal(err)
			}
			if ok {
				if len(m.Data) != len(benchPayload) {
					b.Fatalf("message of %d bytes", len(m.Data))
				}
				break
			}
			if err := r.Wait(); err != nil {
				b.Fatal(err)
			}
		}
		pending--
	}
}

func BenchmarkTextFrame(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		_ = TextFrame(benchPayload)
	}
}

// drainPeer reads everything from c until it ends, in a goroutine; wait
// waits for that end.
func drainPeer(c net.Conn) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, c)
	}()
	return func() { <-done }
}

// BenchmarkQueueFlush queues one frame and flushes it, as the hub does for
// a unicast. With peer=inline, the benchmark reads what it wrote every 64
// frames (the read is part of the figure), so the socket never fills and
// every frame is written by Flush itself: the path of a reader that keeps
// up. With peer=goroutine, a goroutine drains the peer: on 2 cores the
// writer then often outruns it, a writer goroutine takes over while the
// socket is full and Queue only appends; the queue is long enough never to
// overflow.
func BenchmarkQueueFlush(b *testing.B) {
	frame := TextFrame(benchPayload)
	b.Run("peer=inline", func(b *testing.B) {
		const every = 64
		server, client := socketPair(b)
		defer client.Close()
		c := New(server, 256, nopStats{}, nil)
		defer func() { c.Abort(); c.Wait() }()
		buf := make([]byte, every*len(frame))
		queued := 0
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		var batch Batch
		for b.Loop() {
			if err := c.Queue(&batch, frame, time.Now()); err != nil {
				b.Fatal(err)
			}
			batch.Flush()
			if queued++; queued == every {
				if _, err := io.ReadFull(client, buf); err != nil {
					b.Fatal(err)
				}
				queued = 0
			}
		}
	})
	b.Run("peer=goroutine", func(b *testing.B) {
		server, client := socketPair(b)
		defer client.Close()
		wait := drainPeer(client)
		c := New(server, 1<<20, nopStats{}, nil)
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		var batch Batch
		for b.Loop() {
			if err := c.Queue(&batch, frame, time.Now()); err != nil {
				b.Fatal(err)
			}
			batch.Flush()
		}
		b.StopTimer()
		c.Abort()
		c.Wait()
		wait()
	})
}

// BenchmarkFanout1000 queues one frame to 1000 connections, then flushes
// those it was handed, as the hub's router does for a broadcast; an op is
// one broadcast. Peers are drained by a few goroutines with blocking reads
// on raw descriptors (no poller), each reading one frame per peer in turn.
// allocs/delivery is the steady-state allocation per connection reached.
func BenchmarkFanout1000(b *testing.B) {
	const conns, drainers = 1000, 4
	frame := TextFrame(benchPayload)
	cs := make([]*Conn, conns)
	peers := make([]int, conns)
	for i := range cs {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		cs[i] = New(fileConn(b, fds[0]), 256, nopStats{}, nil)
		peers[i] = fds[1]
	}
	var wg sync.WaitGroup
	for d := range drainers {
		wg.Go(func() {
			buf := make([]byte, len(frame))
			for i := d; ; i = (i + drainers) % conns {
				for got := 0; got < len(frame); {
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
	var before, after runtime.MemStats
	b.ReportAllocs()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		now := time.Now()
		for _, c := range cs {
			if err := c.Queue(&pending, frame, now); err != nil {
				b.Fatal(err)
			}
		}
		pending.Flush()
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*conns), "allocs/delivery")
	b.StopTimer()
	for _, c := range cs {
		c.Abort()
		c.Wait()
	}
	wg.Wait()
	for _, fd := range peers {
		syscall.Close(fd)
	}
}
