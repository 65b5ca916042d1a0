package history_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// interleaved publishes n messages, each to a random one of users u0..u<users-1>,
// one in ten to all and one in seven to group g (whose members are the
// even users), and returns the stream sequences of each subject.
func interleaved(ctx context.Context, t *testing.T, nc *nats.Conn, users, n int) map[string][]uint64 {
	t.Helper()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<14))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var futures []jetstream.PubAckFuture
	var subjects []string
	for i := range n {
		subject := "ws.send.user.u" + strconv.Itoa(rng.IntN(users))
		switch {
		case i%10 == 0:
			subject = "ws.send.all"
		case i%7 == 0:
			subject = "ws.send.group.g"
		}
		f, err := js.PublishAsync(subject, []byte(`{"action":"m","details":`+strconv.Itoa(i)+`}`))
		if err != nil {
			t.Fatal(err)
		}
		futures, subjects = append(futures, f), append(subjects, subject)
	}
	seqs := map[string][]uint64{}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			seqs[subjects[i]] = append(seqs[subjects[i]], ack.Sequence)
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("publish acknowledgements did not come")
		}
	}
	return seqs
}

// replayedSeqs are the sequences of a recovery's frames, in order.
func replayedSeqs(t *testing.T, r history.Result) []uint64 {
	t.Helper()
	out := make([]uint64, len(r.Frames))
	for i, f := range r.Frames {
		var frame []json.RawMessage
		if err := json.Unmarshal(f, &frame); err != nil || len(frame) != 4 || json.Unmarshal(frame[3], &out[i]) != nil {
			t.Fatalf("frame %d: %s", i, f)
		}
	}
	return out
}

// wantAfter is what user u (in group g when even) gets of seqs after since.
func wantAfter(seqs map[string][]uint64, u int, since uint64) []uint64 {
	var want []uint64
	subjects := []string{"ws.send.all", "ws.send.user.u" + strconv.Itoa(u)}
	if u%2 == 0 {
		subjects = append(subjects, "ws.send.group.g")
	}
	for _, s := range subjects {
		for _, seq := range seqs[s] {
			if seq > since {
				want = append(want, seq)
			}
		}
	}
	slices.Sort(want)
	return want
}

// TestRecover_TheWindowGivesEachReplayExactlyItsMessages: replays that use
// the window (every replay here, however few run at once) get exactly the
// messages of their own targets after their own since, in order, whether
// the window holds their whole range (64 MiB) or only its recent part (a
// window of about 200 messages: the older part is read subject by
// subject), from positions spread over the stream, 40 at once.
func TestRecover_TheWindowGivesEachReplayExactlyItsMessages(t *testing.T) {
	for _, size := range []int64{64 << 20, 30 << 10} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) {
			ns := testkit.RunJetStream(t)
			nc := testkit.Connect(t, ns.ClientURL())
			h := ensured(t, nc, history.Config{MaxPerSubject: 10_000, Replays: 8, ReplayTimeout: 20 * time.Second, Window: size})
			history.SetWindowAtOnce(h, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			const users, messages = 20, 3000
			seqs := interleaved(ctx, t, nc, users, messages)
			rng := rand.New(rand.NewPCG(3, 4))
			for round := range 3 {
				var wg sync.WaitGroup
				for i := range 40 {
					u, since := rng.IntN(users), rng.Uint64N(messages+1)
					wg.Go(func() {
						r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: since}, history.Targets{User: "u" + strconv.Itoa(u), Groups: groupsOf(u)})
						want := wantAfter(seqs, u, since)
						if !r.Recovery.Recovered || r.Recovery.Count != len(want) {
							t.Errorf("round %d replay %d (u%d since %d): %+v (%s), want %d recovered", round, i, u, since, r.Recovery, r.Reason, len(want))
							return
						}
						if got := replayedSeqs(t, r); !slices.Equal(got, want) {
							t.Errorf("round %d replay %d (u%d since %d): got seqs %v, want %v", round, i, u, since, got, want)
						}
					})
				}
				wg.Wait()
			}
		})
	}
}

func groupsOf(u int) func() []string {
	if u%2 == 0 {
		return func() []string { return []string{"g"} }
	}
	return nil
}

// TestRecover_AStormReadsTheStreamOnceNotEachUsersSubject: 200 replays at
// once, each of its own user from a position before the drop, ask the
// stream for their users' subjects a few times at most: the window read
// the range once for all of them, every subject in sequence order. A lone
// replay afterwards reads its subjects only, not the whole range, and so do
// a few replays at once of a range long for their number (a catch-up).
// Fails when the window is off (a storm asks once or more per user), always
// on, or reads without a budget per replay.
func TestRecover_AStormReadsTheStreamOnceNotEachUsersSubject(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	const users = 200
	h := ensured(t, nc, history.Config{MaxPerSubject: 1000, Replays: 8, ReplayTimeout: 20 * time.Second, Window: 64 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seqs := interleaved(ctx, t, nc, users, 4000)

	gets := newSpy(t, ns.ClientURL(), "$JS.API.DIRECT.GET.WS_HISTORY")
	// count is how many of the requests sent since the last count asked for
	// user subjects, and how many for every subject (a window's read).
	count := func() (perUser, whole int) {
		for _, req := range gets.take(t) {
			switch {
			case strings.HasPrefix(req.NextFor, "ws.send.user."):
				perUser++
			case req.NextFor == "":
				whole++
			}
		}
		return perUser, whole
	}
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			since := uint64(1000 + u) // spread, all well inside the stream
			r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: since}, history.Targets{User: "u" + strconv.Itoa(u), Groups: groupsOf(u)})
			if want := wantAfter(seqs, u, since); !r.Recovery.Recovered || !slices.Equal(replayedSeqs(t, r), want) {
				t.Errorf("u%d: %+v (%s), want %d recovered", u, r.Recovery, r.Reason, len(want))
			}
		})
	}
	wg.Wait()
	perUser, whole := count()
	if perUser > users/10 {
		t.Errorf("%d direct gets of user subjects for %d replays at once, want a few (the window reads for them)", perUser, users)
	}
	if whole == 0 {
		t.Error("no read of the stream's range: the storm did not use the window")
	}

	const u = 7
	r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: 100}, history.Targets{User: "u" + strconv.Itoa(u)})
	if want := wantAfter(seqs, u, 100); !r.Recovery.Recovered || !slices.Equal(replayedSeqs(t, r), want) {
		t.Fatalf("lone replay: %+v (%s), want %d recovered", r.Recovery, r.Reason, len(want))
	}
	if _, whole := count(); whole != 0 {
		t.Errorf("a lone replay read the stream's whole range (%d batches), want its subjects only", whole)
	}

	// A catch-up on another edge (its window empty): a few replays at once,
	// each of a long range (4,000 messages), too few to pay for reading all
	// of it.
	h2 := ensured(t, nc, history.Config{MaxPerSubject: 1000, Replays: 8, ReplayTimeout: 20 * time.Second, Window: 64 << 20})
	for u := range 5 {
		wg.Go(func() {
			r := h2.Recover(ctx, &wire.Since{Epoch: h2.Epoch(), Seq: 0}, history.Targets{User: "u" + strconv.Itoa(u), Groups: groupsOf(u)})
			if want := wantAfter(seqs, u, 0); !r.Recovery.Recovered || !slices.Equal(replayedSeqs(t, r), want) {
				t.Errorf("catch-up of u%d: %+v (%s), want %d recovered", u, r.Recovery, r.Reason, len(want))
			}
		})
	}
	wg.Wait()
	if _, whole := count(); whole != 0 {
		t.Errorf("5 replays at once read a range of 4,000 whole (%d batches), want their subjects only", whole)
	}
}
