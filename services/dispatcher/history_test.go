package dispatcher_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

func TestSenderWithHistory_ReportsTheStoredSequence(t *testing.T) {
	nc, js := natstest.HistoryServer(t)
	s := dispatcher.NewSender(nc, "", dispatcher.SenderWithHistory())
	ctx := context.Background()
	var last uint64
	for _, to := range []dispatcher.Target{
		{Kind: dispatcher.TargetUser, ID: "42"},
		{Kind: dispatcher.TargetGroup, ID: "g"},
		{Kind: dispatcher.TargetSession, ID: "s"},
		{Kind: dispatcher.TargetAll},
		{Kind: dispatcher.TargetUsers},
		{Kind: dispatcher.TargetFilter, Filter: wire.Filter{Property: "language", Value: "de"}},
	} {
		seq, err := s.Send(ctx, to, "hi", map[string]int{"n": 1})
		if err != nil || seq <= last {
			t.Fatalf("%+v: seq %d (after %d), err %v", to, seq, last, err)
		}
		last = seq
	}
	// The error-only methods store too.
	if err := s.ToUser(ctx, "42", "hi", nil); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "WS_HISTORY")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "ws.send.user.42")
	if err != nil || m.Sequence != last+1 {
		t.Fatalf("ToUser not stored: %+v %v", m, err)
	}
	// A connection's messages are never stored.
	if seq, err := s.Send(ctx, dispatcher.Target{Kind: dispatcher.TargetConn, ID: "e.c"}, "hi", nil); err != nil || seq != 0 {
		t.Fatalf("conn: seq %d err %v", seq, err)
	}
	// Bad targets publish nothing.
	if _, err := s.Send(ctx, dispatcher.Target{Kind: dispatcher.TargetUser, ID: "a.b"}, "hi", nil); !errors.Is(err, dispatcher.ErrInvalidID) {
		t.Fatalf("bad id: %v", err)
	}
}

func TestSenderWithHistory_ErrorWhenNotStored(t *testing.T) {
	nc, js := natstest.HistoryServer(t)
	if err := js.DeleteStream(context.Background(), "WS_HISTORY"); err != nil {
		t.Fatal(err)
	}
	s := dispatcher.NewSender(nc, "", dispatcher.SenderWithHistory())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.ToUser(ctx, "42", "hi", nil); !errors.Is(err, dispatcher.ErrNotStored) {
		t.Fatalf("got %v, want ErrNotStored", err)
	}
	if _, err := s.Send(ctx, dispatcher.Target{Kind: dispatcher.TargetAll}, "hi", nil); !errors.Is(err, dispatcher.ErrNotStored) {
		t.Fatalf("got %v, want ErrNotStored", err)
	}
	// Without history the same send is a plain publish, with no sequence.
	if seq, err := dispatcher.NewSender(nc, "").Send(ctx, dispatcher.Target{Kind: dispatcher.TargetAll}, "hi", nil); err != nil || seq != 0 {
		t.Fatalf("seq %d err %v", seq, err)
	}
}
