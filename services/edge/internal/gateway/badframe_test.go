package gateway

import (
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/wire"
)

// TestBadFrames_ASecondWithinTheWindowCloses1008: a bad frame is answered
// Client/error [400, reason]; a second one within badFrameWindow closes the
// connection with 1008, but one that follows the previous by more than the
// window is answered again (DESIGN §2). Fails when the window is not
// looked at (every second bad frame closes) or not kept (none does).
func TestBadFrames_ASecondWithinTheWindowCloses1008(t *testing.T) {
	u := newUnit(t)
	expect400 := func(reason string) {
		t.Helper()
		f := u.peer.Expect(wire.ActionClientError)
		if code, msg := f.Error(); code != wire.CodeBadRequest || msg != reason {
			t.Fatalf("error %d %q, want 400 %q", code, msg, reason)
		}
	}
	u.s.bad("first")
	expect400("first")
	u.s.lastBad = time.Now().Add(-badFrameWindow - time.Second) // the first was long ago
	u.s.bad("past the window")
	expect400("past the window")
	u.s.bad("within it")
	u.peer.ExpectClose(wire.ClosePolicy)
}
