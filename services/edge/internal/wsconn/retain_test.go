package wsconn

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/internal/testkit"
)

// TestConnDropsWrittenFrames: once written, a frame is not kept reachable
// by the connection (its queue arrays are reused for the connection's whole
// life), also when a batch was written partly at once and partly by the
// writer goroutine, or split in writevs of maxIovecs frames.
func TestConnDropsWrittenFrames(t *testing.T) {
	tests := []struct {
		name   string
		frames int // small frames queued first
		large  int // then one frame of this size (0: none)
	}{
		{name: "written partly at once, partly by the writer", frames: 1, large: 8 << 20},
		{name: "more frames than one writev takes", frames: maxIovecs + 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			c := newTestConn(t, server, 4*maxIovecs)
			var collected atomic.Int64
			total := queueTracked(t, c, tc.frames, tc.large, &collected)
			// The peer reads everything; the writer then ends.
			buf := make([]byte, 64<<10)
			_ = client.SetReadDeadline(time.Now().Add(testTimeout))
			for got := 0; got < total; {
				n, err := client.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
			c.Wait()
			testkit.Eventually(t, "frames written", func() bool { return c.stats.frames.Load() == int64(c.sent) })
			deadline := time.Now().Add(2 * time.Second)
			for collected.Load() < int64(tc.frames) && time.Now().Before(deadline) {
				runtime.GC()
				time.Sleep(10 * time.Millisecond)
			}
			if n := collected.Load(); n != int64(tc.frames) {
				t.Errorf("%d of %d written frames collected: the connection keeps the others reachable", n, tc.frames)
			}
			runtime.KeepAlive(c)
		})
	}
}

// queueTracked queues frames small frames, each with a cleanup counting its
// collection, and a large one; then flushes. It returns the bytes queued.
// No reference to the frames is left on the caller's stack.
func queueTracked(t *testing.T, c *testConn, frames, large int, collected *atomic.Int64) (total int) {
	t.Helper()
	var batch Batch
	for i := range frames {
		f := TextFrame(numbered(i, 200))
		runtime.AddCleanup(&f[0], func(*atomic.Int64) { collected.Add(1) }, collected)
		if err := c.Queue(&batch, f, time.Now()); err != nil || batch.Len() != 1 {
			t.Fatalf("Queue %d: batch of %d, %v", i, batch.Len(), err)
		}
		total += len(f)
	}
	c.sent = frames
	if large > 0 {
		f := TextFrame(make([]byte, large))
		if err := c.Queue(&batch, f, time.Now()); err != nil {
			t.Fatal(err)
		}
		total += len(f)
		c.sent++
	}
	batch.Flush()
	return total
}
