package wsconn

import (
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wsgate/wsgate/api/wire"
)

// TestConnLingerWaitsItsBoundAndNoMore: on the bubble's clock, Linger
// returns the moment the close frame is written when the peer reads, and
// exactly at its bound when the peer does not (the owner then closes the
// socket anyway). Fails when Linger ignores its bound, or waits it out
// although the close frame went out.
func TestConnLingerWaitsItsBoundAndNoMore(t *testing.T) {
	const bound = time.Second // less than CloseGrace and WriteWait: the writer is still stuck at the bound
	for _, tc := range []struct {
		name      string
		peerReads bool
		want      time.Duration
	}{
		{name: "peer reads", peerReads: true, want: 0},
		{name: "peer does not read", want: bound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				server, peer := net.Pipe()
				c := New(server, 16, nopStats{}, nil)
				defer func() { c.Abort(); _ = peer.Close(); c.Wait() }()
				if tc.peerReads {
					go func() { _, _ = io.Copy(io.Discard, peer) }()
				}
				start := time.Now()
				c.Close(wire.CloseGoingAway, "bye")
				c.Linger(bound)
				if got := time.Since(start); got != tc.want {
					t.Fatalf("Linger returned after %v, want %v", got, tc.want)
				}
			})
		})
	}
}
