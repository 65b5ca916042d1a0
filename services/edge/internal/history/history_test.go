package history_test

import (
	"cmp"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestEnsure_EdgesStartingTogetherAllSucceed: several edges create or
// update the stream at the same moment; each one succeeds and sees the
// same epoch.
func TestEnsure_EdgesStartingTogetherAllSucceed(t *testing.T) {
	ns := testkit.RunJetStream(t)
	const edges = 6
	hs := make([]*history.History, edges)
	for i := range hs {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		hs[i], err = history.New(nc, history.Config{Storage: history.StorageMemory, Stream: "WS_HISTORY",
			Subjects: wire.NewSubjects(""), MaxAge: time.Minute, MaxPerSubject: 10, MaxBytes: -1, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, edges)
	for i, h := range hs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errs[i] = h.Ensure(ctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("edge %d: %v", i, err)
		}
		if hs[i].Ready() != nil || hs[i].Epoch() == "" || hs[i].Epoch() != hs[0].Epoch() {
			t.Fatalf("edge %d: ready %v, epoch %q (edge 0: %q)", i, hs[i].Ready(), hs[i].Epoch(), hs[0].Epoch())
		}
	}
}

// TestEnsure_AnEdgeWithNewLimitsUpdatesTheStreamAndKeepsItsEpoch: the edges
// create or update the stream at start (DESIGN §8): an edge started with
// other limits (a rollout of new settings) updates the stream in place.
// Its messages and epoch stay, so connections still recover across the
// rollout.
func TestEnsure_AnEdgeWithNewLimitsUpdatesTheStreamAndKeepsItsEpoch(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	old := ensured(t, nc, history.Config{MaxPerSubject: 10, MaxAge: time.Minute})
	since := wire.Since{Epoch: old.Epoch(), Seq: store(t, nc, "ws.send.user.u1")}
	store(t, nc, "ws.send.user.u1")

	h := ensured(t, nc, history.Config{MaxPerSubject: 50, MaxAge: 5 * time.Minute, MaxBytes: 1 << 20, Replays: 1, ReplayTimeout: 10 * time.Second})
	if h.Epoch() != old.Epoch() {
		t.Fatalf("epoch %q after the update, was %q", h.Epoch(), old.Epoch())
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "WS_HISTORY")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxMsgsPerSubject != 50 || c.MaxAge != 5*time.Minute || c.MaxBytes != 1<<20 {
		t.Fatalf("stream limits after the update: per subject %d, age %v, bytes %d", c.MaxMsgsPerSubject, c.MaxAge, c.MaxBytes)
	}
	if r := h.Recover(ctx, &since, history.Targets{User: "u1"}); !r.Recovery.Recovered || r.Recovery.Count != 1 {
		t.Fatalf("recovery across the update: %+v (%s), want 1 recovered", r.Recovery, r.Reason)
	}
}

// ensured is a History of the stream WS_HISTORY on nc, with cfg's settings
// (memory storage, no byte cap, MaxAge a minute and one replica unless cfg
// says), its stream made.
func ensured(t testing.TB, nc *nats.Conn, cfg history.Config) *history.History {
	t.Helper()
	cfg.Stream, cfg.Subjects = "WS_HISTORY", wire.NewSubjects("")
	cfg.Storage = cmp.Or(cfg.Storage, history.StorageMemory)
	cfg.MaxAge = cmp.Or(cfg.MaxAge, time.Minute)
	cfg.MaxBytes = cmp.Or(cfg.MaxBytes, -1)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	h, err := history.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

// store publishes a message to subject, which the stream stores, and
// returns its sequence.
func store(t testing.TB, nc *nats.Conn, subject string) uint64 {
	t.Helper()
	m, err := nc.Request(subject, []byte(`{"action":"m","details":1}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ack struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(m.Data, &ack); err != nil {
		t.Fatalf("stream acknowledgement %q: %v", m.Data, err)
	}
	return ack.Seq
}

// recoverAtOnce runs n recoveries of user u1 from the stream's start at
// once, and checks that each recovered count messages.
func recoverAtOnce(ctx context.Context, t *testing.T, h *history.History, n, count int) {
	t.Helper()
	since := wire.Since{Epoch: h.Epoch(), Seq: 0}
	results := make([]history.Result, n)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = h.Recover(ctx, &since, history.Targets{User: "u1"}) })
	}
	wg.Wait()
	for i, r := range results {
		if !r.Recovery.Recovered || r.Recovery.Count != count {
			t.Fatalf("replay %d: %+v (%s), want %d recovered", i, r.Recovery, r.Reason, count)
		}
	}
}

// spy sees the requests sent to a subject. Its subscription is synchronous:
// what the server routed to it before a flush is queued when the flush
// returns, so a count taken then misses nothing sent before it.
type spy struct {
	nc  *nats.Conn
	sub *nats.Subscription
}

func newSpy(t *testing.T, url, subject string) *spy {
	t.Helper()
	nc := testkit.Connect(t, url)
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &spy{nc: nc, sub: sub}
}

// directGet is a direct get request as the spy sees it.
type directGet struct {
	Seq     uint64 `json:"seq"`
	NextFor string `json:"next_by_subj"`
}

// take returns the requests sent since the last take, decoded.
func (s *spy) take(t *testing.T) []directGet {
	t.Helper()
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []directGet
	for {
		m, err := s.sub.NextMsg(time.Millisecond)
		if err != nil {
			return out
		}
		var req directGet
		_ = json.Unmarshal(m.Data, &req) // not a direct get: its zero value
		out = append(out, req)
	}
}

// TestRecover_AStormSharesStreamReadsAndCreatesNoConsumer: a burst of
// recoveries at once asks the JetStream API for the stream's state a few
// times, not once each, and on a stream of one replica reads with direct
// gets, creating no consumer: the API's one queue is what a storm of
// thousands of reconnects on one edge used to time out in.
func TestRecover_AStormSharesStreamReadsAndCreatesNoConsumer(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	const replays = 100
	h := ensured(t, nc, history.Config{MaxPerSubject: 10, Replays: replays, ReplayTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 3 {
		store(t, nc, "ws.send.user.u1")
	}
	infos := newSpy(t, ns.ClientURL(), "$JS.API.STREAM.INFO.WS_HISTORY")
	creates := newSpy(t, ns.ClientURL(), "$JS.API.CONSUMER.CREATE.>")
	gets := newSpy(t, ns.ClientURL(), "$JS.API.DIRECT.GET.WS_HISTORY")

	recoverAtOnce(ctx, t, h, replays, 3)
	if n := len(infos.take(t)); n == 0 || n > replays/4 {
		t.Errorf("%d stream info requests for %d replays at once, want a few shared ones", n, replays)
	}
	if n := len(creates.take(t)); n != 0 {
		t.Errorf("%d consumers created, want none on a stream of one replica", n)
	}
	allReads := 0 // direct gets of ws.send.all, which every replay covers
	for _, req := range gets.take(t) {
		if req.NextFor == "ws.send.all" {
			allReads++
		}
	}
	if allReads == 0 || allReads > replays/4 {
		t.Errorf("ws.send.all read %d times for %d replays, want a few shared reads", allReads, replays)
	}
}

// TestRecover_SharedSubjectsGiveEachReplayExactlyItsRange: what one replay
// read of all is kept for the next ones, which still get exactly the
// messages after their own since, however their ranges overlap.
func TestRecover_SharedSubjectsGiveEachReplayExactlyItsRange(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	h := ensured(t, nc, history.Config{MaxPerSubject: 5, Replays: 1, ReplayTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seqs []uint64 // of the messages to all, by number - 1
	publish := func(subject string, n int) {
		for range n {
			if seq := store(t, nc, subject); subject == "ws.send.all" {
				seqs = append(seqs, seq)
			}
		}
	}
	recoverFrom := func(since uint64) history.Result {
		r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: since}, history.Targets{User: "u1"})
		if r.Reason != "" {
			t.Fatalf("since %d: not recovered (%s)", since, r.Reason)
		}
		return r
	}
	want := func(r history.Result, from, to int) {
		t.Helper()
		if len(r.Frames) != to-from+1 || r.Last != seqs[to-1] {
			t.Fatalf("got %d frames up to seq %d, want numbers %d..%d (seqs %v)", len(r.Frames), r.Last, from, to, seqs)
		}
	}
	publish("ws.send.all", 3)
	publish("ws.send.user.other", 2) // not u1's: seqs of all are not contiguous
	publish("ws.send.all", 1)
	want(recoverFrom(0), 1, 4)
	publish("ws.send.all", 2)
	want(recoverFrom(seqs[1]), 3, 6) // partly from the cache, partly read
	want(recoverFrom(seqs[4]), 6, 6) // inside what was read
	want(recoverFrom(seqs[0]), 2, 6) // from before the last replay's range
	publish("ws.send.all", 3)        // the stream keeps 5 of all: 5..9
	want(recoverFrom(seqs[3]), 5, 9)
}

// TestRecover_ALongSparseRangeGivesEveryMessageOnceInOrder: a user whose
// messages are one in ten of the stream, more of them than one direct get
// batch holds, recovers every one of them once and in sequence order,
// merged with the messages to all, whether it asks from the start or from
// the middle (the replay reads its subject in several batches, each from
// where the last ended).
func TestRecover_ALongSparseRangeGivesEveryMessageOnceInOrder(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	h := ensured(t, nc, history.Config{Storage: history.StorageFile, MaxPerSubject: 1000, Replays: 1, ReplayTimeout: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Room for every publish below in flight: the default (4,000) stalls a
	// publisher that a loaded machine's server acknowledges slowly.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<14))
	if err != nil {
		t.Fatal(err)
	}
	const (
		mine   = 700 // u1's messages: more than two batches
		others = 9   // other users' messages around each of u1's
	)
	var futures []jetstream.PubAckFuture
	var subjects []string
	publish := func(subject string) {
		f, err := js.PublishAsync(subject, []byte(`{"action":"m","details":1}`))
		if err != nil {
			t.Fatal(err)
		}
		futures, subjects = append(futures, f), append(subjects, subject)
	}
	for i := range mine {
		for o := range others {
			publish("ws.send.user.o" + strconv.Itoa(o))
		}
		publish("ws.send.user.u1")
		if i%100 == 0 {
			publish("ws.send.all")
		}
	}
	var want []uint64 // the sequences u1 receives, in order
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if subjects[i] == "ws.send.user.u1" || subjects[i] == "ws.send.all" {
				want = append(want, ack.Sequence)
			}
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("publish acknowledgements did not come")
		}
	}
	for _, from := range []int{0, len(want) / 2} {
		since := uint64(0)
		if from > 0 {
			since = want[from-1]
		}
		r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: since}, history.Targets{User: "u1"})
		if !r.Recovery.Recovered || r.Recovery.Count != len(want)-from {
			t.Fatalf("from %d: %+v (%s), want %d recovered", from, r.Recovery, r.Reason, len(want)-from)
		}
		for i, f := range r.Frames {
			var frame []json.RawMessage
			var seq uint64
			if err := json.Unmarshal(f, &frame); err != nil || len(frame) != 4 || json.Unmarshal(frame[3], &seq) != nil {
				t.Fatalf("from %d: frame %d %s", from, i, f)
			}
			if seq != want[from+i] {
				t.Fatalf("from %d: frame %d has seq %d, want %d", from, i, seq, want[from+i])
			}
		}
	}
}

// TestRecover_MessagesDroppedWhileReadingAreNotASilentGap: the limits drop
// messages after since between the replay's read of the stream's state and
// its read of the messages, by the subject's cap (three more messages of
// the user) or from the stream's head (a purge, as the age limit drops);
// the replay answers recovered: false, never true with a gap. Without a
// drop, the same replay recovers everything. Fails when the limits check
// trusts the state read before the messages (the stream's first sequence,
// or the count of the messages read instead of what the subject holds).
// The same holds for a replay served from a window read before the drop,
// which still holds the dropped messages.
func TestRecover_MessagesDroppedWhileReadingAreNotASilentGap(t *testing.T) {
	for _, c := range []struct{ drop, window string }{{"none", ""}, {"cap", ""}, {"head", ""}, {"none", "window"}, {"cap", "window"}, {"head", "window"}} {
		drop := c.drop
		t.Run(strings.TrimSuffix(drop+"/"+c.window, "/"), func(t *testing.T) {
			ns := testkit.RunJetStream(t)
			nc := testkit.Connect(t, ns.ClientURL())
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cfg := history.Config{MaxPerSubject: 5, Replays: 1, ReplayTimeout: 20 * time.Second}
			if c.window != "" {
				cfg.Window = 64 << 20
			}
			h := ensured(t, nc, cfg)
			msg := []byte(`{"action":"m","details":1}`)
			publish := func(subject string) uint64 {
				ack, err := js.Publish(ctx, subject, msg)
				if err != nil {
					t.Error(err)
					return 0
				}
				return ack.Sequence
			}
			publish("ws.send.user.other") // keeps the stream's head before since
			var seqs []uint64
			for range 5 {
				seqs = append(seqs, publish("ws.send.user.u1"))
			}
			stream, err := js.Stream(ctx, "WS_HISTORY")
			if err != nil {
				t.Fatal(err)
			}
			if c.window != "" {
				history.SetWindowAtOnce(h, 1)
				r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: seqs[1]}, history.Targets{User: "u1"})
				if !r.Recovery.Recovered || r.Recovery.Count != 3 {
					t.Fatalf("filling the window: %+v (%s), want 3 recovered", r.Recovery, r.Reason)
				}
			}
			history.SetBeforeRead(h, func() {
				switch drop {
				case "cap": // u1 holds 5 at most: its oldest three go, one after since
					for range 3 {
						publish("ws.send.user.u1")
					}
				case "head":
					if err := stream.Purge(ctx, jetstream.WithPurgeSequence(seqs[3])); err != nil {
						t.Error(err)
					}
				}
			})
			r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: seqs[1]}, history.Targets{User: "u1"})
			if drop == "none" {
				if !r.Recovery.Recovered || r.Recovery.Count != 3 {
					t.Fatalf("no drop: %+v (%s), want 3 recovered", r.Recovery, r.Reason)
				}
				return
			}
			if r.Recovery.Recovered || r.Reason != history.ReasonLimits {
				t.Fatalf("drop by %s while reading: %+v (reason %q), want recovered false for the limits", drop, r.Recovery, r.Reason)
			}
		})
	}
}

// TestRecover_AReplayThatWaitedForASlotStillHasItsWholeTimeout: the wait
// for a replay slot (ReplayWait) and the replay (ReplayTimeout) have
// budgets of their own. With one slot, four replays each held 500 ms
// and a timeout of 1.2 s, the last waits 1.5 s for its slot and still
// recovers; only past ReplayWait does a replay give up waiting.
func TestRecover_AReplayThatWaitedForASlotStillHasItsWholeTimeout(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	h := ensured(t, nc, history.Config{MaxPerSubject: 10, Replays: 1, ReplayWait: 5 * time.Second, ReplayTimeout: 1200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store(t, nc, "ws.send.user.u1")
	history.SetBeforeRead(h, func() { time.Sleep(500 * time.Millisecond) })
	recoverAtOnce(ctx, t, h, 4, 1)
	since := wire.Since{Epoch: h.Epoch(), Seq: 0}

	// Past ReplayWait: a replay that finds the only slot taken too long.
	h2 := ensured(t, nc, history.Config{MaxPerSubject: 10, Replays: 1, ReplayWait: 200 * time.Millisecond, ReplayTimeout: 5 * time.Second})
	reading := make(chan struct{}, 1)
	history.SetBeforeRead(h2, func() {
		reading <- struct{}{}
		time.Sleep(time.Second)
	})
	first := make(chan history.Result)
	go func() { first <- h2.Recover(ctx, &since, history.Targets{User: "u1"}) }()
	<-reading // the first has the slot
	if r := h2.Recover(ctx, &since, history.Targets{User: "u1"}); r.Recovery.Recovered || r.Reason != history.ReasonUnavailable {
		t.Fatalf("a replay past its wait: %+v (%s), want unavailable", r.Recovery, r.Reason)
	}
	if r := <-first; !r.Recovery.Recovered {
		t.Fatalf("the replay that had the slot: %+v (%s)", r.Recovery, r.Reason)
	}
}

// TestRecover_ReplaysTheGroupsTheConnectionIsInWhenItReads: a replay asks
// for the connection's groups once it has read the stream's last sequence,
// not when it starts waiting for a slot: a group joined meanwhile (a
// backend that joins a connection to its rooms as it connects) has its
// messages up to that sequence replayed; they would otherwise be held as
// live, then dropped as replayed already.
func TestRecover_ReplaysTheGroupsTheConnectionIsInWhenItReads(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	h := ensured(t, nc, history.Config{MaxPerSubject: 10, Replays: 1, ReplayWait: 10 * time.Second, ReplayTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	since := wire.Since{Epoch: h.Epoch(), Seq: store(t, nc, "ws.send.user.u1")}
	store(t, nc, "ws.send.user.u1")

	// The only slot is taken by another replay until released.
	reading, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	history.SetBeforeRead(h, func() {
		once.Do(func() {
			close(reading)
			<-release
		})
	})
	first := make(chan history.Result)
	go func() { first <- h.Recover(ctx, &since, history.Targets{User: "u1"}) }()
	<-reading

	var mu sync.Mutex
	var groups []string
	second := make(chan history.Result)
	go func() {
		second <- h.Recover(ctx, &since, history.Targets{User: "u2", Groups: func() []string {
			mu.Lock()
			defer mu.Unlock()
			return groups
		}})
	}()
	time.Sleep(100 * time.Millisecond) // u2's replay waits for the slot
	mu.Lock()
	groups = []string{"room"}
	mu.Unlock()
	seq := store(t, nc, "ws.send.group.room")
	close(release)
	if r := <-first; !r.Recovery.Recovered || r.Recovery.Count != 1 {
		t.Fatalf("the replay that had the slot: %+v (%s), want 1 recovered", r.Recovery, r.Reason)
	}
	r := <-second
	if !r.Recovery.Recovered || r.Recovery.Count != 1 || r.Last != seq {
		t.Fatalf("%+v (%s), last %d: want the group's message (seq %d) recovered", r.Recovery, r.Reason, r.Last, seq)
	}
}

// TestRecover_NoLimitsLookupWhenTheCapCannotHaveBeenReached: without a
// gap in the stream, only the per-subject cap drops messages after since,
// and it leaves a subject holding the cap's count. A replay that read
// fewer than the cap, with fewer than the cap stored since, asks the
// stream nothing more about its subjects: no first-message lookup (a scan
// of the stream's blocks for the server) after reading. A since at the
// stream's last sequence reads nothing at all.
func TestRecover_NoLimitsLookupWhenTheCapCannotHaveBeenReached(t *testing.T) {
	ns := testkit.RunJetStream(t)
	nc := testkit.Connect(t, ns.ClientURL())
	h := ensured(t, nc, history.Config{MaxPerSubject: 100, Replays: 4, ReplayTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last uint64
	for range 5 {
		last = store(t, nc, "ws.send.user.u1")
	}
	gets := newSpy(t, ns.ClientURL(), "$JS.API.DIRECT.GET.WS_HISTORY")
	r := h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: 2}, history.Targets{User: "u1", Groups: func() []string { return []string{"g"} }})
	if !r.Recovery.Recovered || r.Recovery.Count != 3 {
		t.Fatalf("%+v (%s), want 3 recovered", r.Recovery, r.Reason)
	}
	for _, req := range gets.take(t) {
		if req.Seq == 1 { // from the stream's start: a first message or a count
			t.Errorf("a lookup from the stream's start (%+v) after a replay of 3 under a cap of 100, want none", req)
		}
	}
	r = h.Recover(ctx, &wire.Since{Epoch: h.Epoch(), Seq: last}, history.Targets{User: "u1"})
	if !r.Recovery.Recovered || r.Recovery.Count != 0 {
		t.Fatalf("%+v (%s), want 0 recovered", r.Recovery, r.Reason)
	}
	if n := len(gets.take(t)); n != 0 {
		t.Errorf("%d direct gets for a since at the stream's last sequence, want none", n)
	}
}
