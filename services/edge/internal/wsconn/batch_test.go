package wsconn

import (
	"testing"
	"time"
)

// TestBatch_HoldsEachRightOnceAndCutMovesIt: a batch holds a connection's
// writing once, however many frames are queued to it; Cut moves the last
// connections into a batch with its own array; Flush writes every queue it
// holds and gives the rights back, so that the next Queue hands the writing
// over again. Fails when Queue adds a connection someone already writes, Cut
// shares the array, or Flush leaves a right held.
func TestBatch_HoldsEachRightOnceAndCutMovesIt(t *testing.T) {
	var conns []*Conn
	for range 3 {
		server, client := tcpPair(t)
		t.Cleanup(func() { _ = client.Close() })
		c := New(server, 16, nopStats{}, nil)
		t.Cleanup(func() { c.Abort(); c.Wait() })
		conns = append(conns, c)
	}
	var batch Batch
	for range 2 {
		for _, c := range conns {
			if err := c.Queue(&batch, TextFrame([]byte("x")), time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if batch.Len() != len(conns) {
		t.Fatalf("batch holds %d rights for %d connections", batch.Len(), len(conns))
	}
	share := batch.Cut(2)
	if batch.Len() != 1 || share.Len() != 2 || share.conns[0] != conns[1] || share.conns[1] != conns[2] {
		t.Fatalf("after Cut(2): %d left, a share of %d", batch.Len(), share.Len())
	}
	if &batch.conns[:cap(batch.conns)][1] == &share.conns[0] {
		t.Fatal("the share uses the batch's array")
	}
	share.Flush()
	batch.Flush()
	if batch.Len() != 0 || share.Len() != 0 {
		t.Fatal("Flush left connections in its batch")
	}
	for i, c := range conns {
		if n := c.Queued(); n != 0 {
			t.Fatalf("connection %d still has %d frames queued after Flush", i, n)
		}
	}
	for _, c := range conns {
		if err := c.Queue(&batch, TextFrame([]byte("y")), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if batch.Len() != len(conns) {
		t.Fatalf("after Flush, Queue handed over %d of %d writings: a right was kept", batch.Len(), len(conns))
	}
	batch.Flush()
}
