package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
)

// replayRetry is the pause before a replay that could not read the stream
// tries again (within Config.ReplayTimeout).
const replayRetry = 100 * time.Millisecond

// Reasons for recovered:false, as counted in the metrics.
const (
	ReasonNone        = "none"        // no since: nothing was asked
	ReasonInvalid     = "invalid"     // since was malformed
	ReasonEpoch       = "epoch"       // since names another incarnation of the stream
	ReasonAhead       = "ahead"       // since is past the stream's last sequence
	ReasonLimits      = "limits"      // messages after since may have been dropped by the limits
	ReasonUnavailable = "unavailable" // the stream could not be read in time
)

// fetchBatch is how many messages one pull request asks for.
const fetchBatch = 256

// consumerIdle: a replay's consumer that its edge forgot (it died) is
// removed by the server after this long.
const consumerIdle = 30 * time.Second

// Targets are a connection's delivery targets (DESIGN.md §8: its current
// ones). Groups is asked once the replay has read the stream's last
// sequence: a group joined by then is replayed, and a message sent to one
// joined later is stored after that sequence and comes live.
type Targets struct {
	User    string                  // "" for anonymous connections (no users, no user subject)
	Session string                  // "" when none
	Groups  func() []string         // the connection's groups: its token's and the joined ones (nil: none)
	Matches func(*wire.Filter) bool // whether a filter message is for the connection
}

// Result is what a connection is told and sent when it starts.
type Result struct {
	Recovery wire.Recovery
	Reason   string   // why Recovery.Recovered is false ("" when true)
	Frames   [][]byte // the replayed frames, in sequence order
	Last     uint64   // the sequence of the last replayed frame, or since's
}

// Recover answers a connection's start. Without since (nil) it only
// announces the epoch. With since it replays, in order, every stored
// message for targets after since.Seq, or says recovered:false when that
// cannot be complete. It waits for a replay slot (Config.Replays) at most
// Config.ReplayWait, then replays for at most Config.ReplayTimeout.
func (h *History) Recover(ctx context.Context, since *wire.Since, t Targets) Result {
	if since == nil {
		return Result{Recovery: wire.Recovery{Epoch: h.Epoch()}, Reason: ReasonNone}
	}
	start := time.Now()
	h.busy.Add(1)
	defer h.busy.Add(-1)
	// Waiting for a slot is the edge's own queue, not the stream's health:
	// it has a budget of its own, so that a replay that waited long in a
	// reconnect storm still has its whole ReplayTimeout to read.
	wait := h.cfg.ReplayWait
	if wait <= 0 {
		wait = h.cfg.ReplayTimeout
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	case <-timer.C:
		return h.unrecovered(ctx, ReasonUnavailable, h.Epoch(), errors.New("no replay slot in time"))
	case <-ctx.Done():
		return h.unrecovered(ctx, ReasonUnavailable, h.Epoch(), fmt.Errorf("waiting for a replay slot: %w", ctx.Err()))
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ReplayTimeout)
	defer cancel()
	res, err := h.replay(ctx, *since, t, start)
	for err != nil && ctx.Err() == nil {
		// The stream could not be read (its leader moving, say): try again
		// while the replay's time lasts, rather than answer a recovery that
		// would succeed a moment later with recovered:false.
		select {
		case <-time.After(replayRetry):
		case <-ctx.Done():
		}
		// Read afresh: the state shared as of start may be what failed
		// (a leader since moved, say).
		res, err = h.replay(ctx, *since, t, time.Now())
	}
	if err != nil {
		return h.unrecovered(ctx, ReasonUnavailable, h.Epoch(), err)
	}
	if res.Reason != "" {
		h.m.unrecovered(ctx, res.Reason)
		return res
	}
	h.m.replayed(ctx, len(res.Frames), time.Since(start))
	return res
}

// Invalid is the answer to a since that could not be parsed.
func (h *History) Invalid(ctx context.Context) Result {
	h.m.unrecovered(ctx, ReasonInvalid)
	return Result{Recovery: wire.Recovery{Epoch: h.Epoch()}, Reason: ReasonInvalid}
}

func (h *History) unrecovered(ctx context.Context, reason, epoch string, err error) Result {
	h.cfg.Logger.Warn("history replay failed", "reason", reason, "err", err)
	h.m.unrecovered(ctx, reason)
	return Result{Recovery: wire.Recovery{Epoch: epoch}, Reason: reason}
}

// subject is one stored subject of a connection, with what the replay saw.
type subject struct {
	name  string
	first uint64 // sequence of its first replayed message (0: none)
	count int64  // its replayed messages, filtered out ones included
}

// replay reads the stream as of a moment after start, when the connection
// had subscribed: every message stored later reaches it live.
func (h *History) replay(ctx context.Context, since wire.Since, t Targets, start time.Time) (Result, error) {
	st, err := h.stream(ctx, start)
	if err != nil {
		return Result{}, err
	}
	// The epoch is compared here, but only Run records it: a replay's
	// info may be older than what Run has already seen.
	info := st.CachedInfo()
	epoch := EpochOf(info)
	no := func(reason string) (Result, error) {
		return Result{Recovery: wire.Recovery{Epoch: epoch}, Reason: reason}, nil
	}
	state := info.State
	switch {
	case since.Epoch != epoch:
		return no(ReasonEpoch)
	case since.Seq > state.LastSeq:
		return no(ReasonAhead)
	}
	res := Result{Recovery: wire.Recovery{Epoch: epoch, Recovered: true}, Last: since.Seq}
	if since.Seq == state.LastSeq {
		// Nothing after since was stored before the connection subscribed:
		// everything after it comes live, and nothing can have been lost.
		return res, nil
	}
	subjects := t.subjects(h.cfg.Subjects)
	direct := info.Config.Replicas <= 1
	if h.beforeRead != nil {
		h.beforeRead()
	}
	if since.Seq < state.LastSeq {
		if direct {
			err = h.readDirect(ctx, since.Seq, state.LastSeq, subjects, t, &res)
		} else {
			err = h.read(ctx, st, since.Seq, subjects, t, &res)
		}
		if err != nil {
			return Result{}, err
		}
	}
	// Limits drop the oldest messages first: of the stream for age and
	// bytes, of the subject for the per-subject cap. They may drop messages
	// after since while this replay reads, so what the stream holds is
	// looked at once the messages are read: the stream's first sequence,
	// then each subject's first message and count.
	gap := state.FirstSeq > since.Seq+1
	read := time.Now()
	var newer uint64 // messages stored since the replay's start, at most
	if !gap {
		now, err := h.stream(ctx, read)
		if err != nil {
			return Result{}, err
		}
		info := now.CachedInfo()
		if EpochOf(info) != epoch {
			return no(ReasonEpoch)
		}
		gap = info.State.FirstSeq > since.Seq+1
		newer = info.State.LastSeq - min(info.State.LastSeq, state.LastSeq)
	}
	for _, s := range subjects {
		if !gap && (h.cfg.MaxPerSubject <= 0 || uint64(s.count)+newer < uint64(h.cfg.MaxPerSubject)) {
			// Without a gap only the per-subject cap drops messages after
			// since, and a drop leaves the subject holding the cap's count,
			// all after since: those up to the replay's start it read
			// (s.count), the others came after it (newer at most). Fewer
			// than the cap in all: nothing of s was lost, no need to ask.
			continue
		}
		lost, err := h.lostAfter(ctx, st, s.name, direct, since.Seq, gap, read)
		if err != nil {
			return Result{}, err
		}
		if lost {
			return no(ReasonLimits)
		}
	}
	res.Recovery.Count = len(res.Frames)
	return res, nil
}

// lostAfter reports whether the limits may have dropped messages of subject
// after since, from what the stream holds of it once the replay read its
// messages (read) and whether the stream's age or bytes limits may have
// dropped messages after since (gap). A subject that still holds a message
// at or right after since lost nothing after it (limits drop the oldest
// first). Otherwise what it lacks after since may never have been stored,
// or been dropped by the stream's limits (gap), or by its cap: a cap drop
// leaves it with the cap's count, and without gap nothing brings it below
// that again, so an empty subject, or one holding fewer, lost nothing.
// The count is read only then: counting costs the server a scan.
func (h *History) lostAfter(ctx context.Context, st jetstream.Stream, subject string, direct bool, since uint64, gap bool, read time.Time) (bool, error) {
	first, err := h.firstHeld(ctx, st, subject, direct, read)
	switch {
	case err != nil:
		return false, err
	case first != 0 && first <= since+1:
		return false, nil
	case gap:
		return true, nil
	case first == 0 || h.cfg.MaxPerSubject <= 0:
		return false, nil
	}
	count, err := h.countHeld(ctx, st, subject, direct)
	if err != nil {
		return false, err
	}
	return count >= uint64(h.cfg.MaxPerSubject), nil
}

// firstHeld is the sequence of the oldest message the stream holds of
// subject (0: none), read after the moment read. The subjects every
// connection replays share the read.
func (h *History) firstHeld(ctx context.Context, st jetstream.Stream, subject string, direct bool, read time.Time) (uint64, error) {
	first := func(ctx context.Context) (uint64, error) {
		if direct {
			return h.firstDirect(ctx, subject)
		}
		return h.firstByLeader(ctx, subject)
	}
	if c := h.shared[subject]; c != nil {
		return c.first.get(ctx, read, first)
	}
	return first(ctx)
}

// firstByLeader is firstDirect asked of the stream's leader: the direct
// gets a stream of several replicas allows are answered by any of them, and
// one that lags may still hold a message the leader has dropped, hiding a
// loss.
func (h *History) firstByLeader(ctx context.Context, subject string) (uint64, error) {
	req, _ := json.Marshal(directGet{Seq: 1, NextFor: subject})
	m, err := h.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+h.cfg.Stream, req)
	if err != nil {
		return 0, fmt.Errorf("first message of %s: %w", subject, err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	switch err := json.Unmarshal(m.Data, &resp); {
	case err != nil:
		return 0, fmt.Errorf("first message of %s: %w", subject, err)
	case resp.Error != nil && resp.Error.ErrCode == jsNoMessageFound:
		return 0, nil
	case resp.Error != nil:
		return 0, fmt.Errorf("first message of %s: %s", subject, resp.Error.Description)
	case resp.Message == nil:
		return 0, fmt.Errorf("first message of %s: an answer without a message", subject)
	}
	return resp.Message.Seq, nil
}

// jsNoMessageFound is the JetStream API's error code for "no message found".
const jsNoMessageFound = 10037

// countHeld is how many messages the stream holds of subject.
func (h *History) countHeld(ctx context.Context, st jetstream.Stream, subject string, direct bool) (uint64, error) {
	if direct {
		return h.countDirect(ctx, subject)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("messages of %s: %w", subject, err)
	}
	return info.State.Subjects[subject], nil
}

// read replays the stored messages of subjects after seq into res, through
// an ephemeral consumer that exists only for this replay. It reads what was
// stored when the consumer was made; what comes later is live.
func (h *History) read(ctx context.Context, st jetstream.Stream, seq uint64, subjects []*subject, t Targets, res *Result) error {
	filters := make([]string, len(subjects))
	for i, s := range subjects {
		filters[i] = s.name
	}
	cons, err := h.replayConsumer(ctx, st, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       seq + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubjects:    filters,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: consumerIdle,
	})
	if err != nil {
		return err
	}
	defer h.deleteConsumer(st, cons)
	bySubject := make(map[string]*subject, len(subjects))
	for _, s := range subjects {
		bySubject[s.name] = s
	}
	pending := cons.CachedInfo().NumPending
	for read := uint64(0); read < pending; {
		batch, err := cons.FetchNoWait(int(min(pending-read, fetchBatch)))
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("message metadata: %w", err)
			}
			h.add(res, bySubject[m.Subject()], meta.Sequence.Stream, m.Data(), t)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("fetch: %w", err)
		}
		if got == 0 {
			break // the rest was removed meanwhile: the limits check tells
		}
		read += uint64(got)
	}
	return nil
}

// consumerPlacements bounds the tries to place a replay's consumer on a
// server that holds the whole stream.
const consumerPlacements = 10

// replayConsumer creates the replay's consumer on a server that holds every
// message the stream acknowledged (DESIGN §8: nothing acknowledged is
// lost). The server places a consumer of one replica on any of the
// stream's peers, and one that lags (it just came back, say) reads less
// than the stream holds: the replay would miss messages and still say
// recovered:true. So the consumer must be on the stream's leader, or on a
// replica its leader reported current with no lag (st's info, read after
// the connection subscribed); elsewhere it is deleted and made again.
func (h *History) replayConsumer(ctx context.Context, st jetstream.Stream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	for try := 1; ; try++ {
		cons, err := st.CreateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("create replay consumer: %w", err)
		}
		host := ""
		if c := cons.CachedInfo().Cluster; c != nil {
			host = c.Leader
		}
		if holdsAll(st.CachedInfo().Cluster, host) {
			return cons, nil
		}
		h.deleteConsumer(st, cons)
		if try == consumerPlacements {
			return nil, fmt.Errorf("replay consumer placed %d times on a replica that may lag (last: %s)", try, host)
		}
	}
}

// holdsAll reports whether host, where a consumer runs, holds every message
// of a stream whose cluster state is c: its leader, or a replica that the
// leader reported current and without lag. Without a cluster there is
// one server.
func holdsAll(c *jetstream.ClusterInfo, host string) bool {
	if c == nil || host == c.Leader {
		return true
	}
	for _, r := range c.Replicas {
		if r != nil && r.Name == host {
			return r.Current && !r.Offline && r.Lag == 0
		}
	}
	return false
}

// deleteConsumer deletes a replay's consumer, with a fresh context: the
// replay's may be spent, the consumer must go.
func (h *History) deleteConsumer(st jetstream.Stream, cons jetstream.Consumer) {
	dctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := st.DeleteConsumer(dctx, cons.CachedInfo().Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		h.cfg.Logger.Debug("delete replay consumer", "err", err)
	}
}

// add appends the frame of one stored message when it is for the connection.
func (h *History) add(res *Result, s *subject, seq uint64, data []byte, t Targets) {
	if s == nil || seq <= res.Last {
		return
	}
	if s.first == 0 {
		s.first = seq
	}
	s.count++
	out, err := wire.DecodeOutbound(data)
	if err != nil {
		return // the hub refuses it live too
	}
	// The filter subject by its name: a group, user or session may be
	// called "filter" too.
	if s.name == h.cfg.Subjects.SendFilter() && (out.Filter == nil || t.Matches == nil || !t.Matches(out.Filter)) {
		return
	}
	res.Frames = append(res.Frames, wire.AppendServerFrameSeq(nil, out.Action, out.Details, out.Ref, seq))
	res.Last = seq
}

// subjects are the stored subjects a connection with t receives.
func (t Targets) subjects(s wire.Subjects) []*subject {
	names := []string{s.SendAll(), s.SendFilter()}
	if t.User != "" {
		names = append(names, s.SendUsers(), s.SendUser(t.User))
	}
	if t.Session != "" {
		names = append(names, s.SendSession(t.Session))
	}
	if t.Groups != nil {
		seen := map[string]bool{}
		for _, g := range t.Groups() {
			if !seen[g] {
				seen[g] = true
				names = append(names, s.SendGroup(g))
			}
		}
	}
	out := make([]*subject, len(names))
	for i, n := range names {
		out[i] = &subject{name: n}
	}
	return out
}
