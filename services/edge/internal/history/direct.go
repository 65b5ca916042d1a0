package history

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/internal/natsconn"
)

// A reconnect storm is thousands of replays at once. Each used to ask the
// JetStream API for the stream's state and to create and delete a consumer:
// the server answers API requests one queue at a time, and 5,000 replays on
// one edge timed out there (bench/cmd/recovery, longrun). Now the state
// read is shared (latestRead) and, on a stream of one replica, the
// messages are read with batched direct gets, which the stream serves
// itself, outside the API queue.

// stream returns the stream with its state read after since, sharing the
// read with the replays that need one as recent (see latestRead).
func (h *History) stream(ctx context.Context, since time.Time) (jetstream.Stream, error) {
	return h.reads.get(ctx, since, func(ctx context.Context) (jetstream.Stream, error) {
		st, err := h.js.Stream(ctx, h.cfg.Stream)
		if err != nil {
			return nil, fmt.Errorf("stream info: %w", err)
		}
		return st, nil
	})
}

// directBatch is how many messages one direct get asks for.
const directBatch = 256

// replyAtOnce is how many answers a replay's direct gets may have pending:
// it sends one request at a time, of at most a batch and its end.
const replyAtOnce = max(directBatch, rangeBatch) + 1

// directGet is the request of a direct get (nats-server's
// JSApiMsgGetRequest).
type directGet struct {
	Seq     uint64 `json:"seq"`
	NextFor string `json:"next_by_subj"`
	Batch   int    `json:"batch,omitempty"`
}

// stored is a message read from the stream.
type stored struct {
	seq  uint64
	subj *subject
	data []byte
}

// readDirect replays, like read, the stored messages of subjects after seq
// up to last (the stream's last sequence when the replay started; later
// ones are live), with direct gets: one batch per subject, merged in
// sequence order. Only for a stream of one replica, whose one server holds
// every message it acknowledged; the replicas of a larger stream answer
// direct gets too, and one that lags would leave a gap.
func (h *History) readDirect(ctx context.Context, seq, last uint64, subjects []*subject, t Targets, res *Result) error {
	r, err := natsconn.SubscribeReplies(h.nc, replyAtOnce)
	if err != nil {
		return fmt.Errorf("direct get: %w", err)
	}
	defer r.Close()
	var msgs []stored
	if busy := h.busy.Load(); h.win.max > 0 && busy >= h.atOnce {
		// A storm: the window serves what it holds of the range; the rest,
		// older than it reaches, is read subject by subject.
		first, err := h.win.serve(ctx, h, r, res.Recovery.Epoch, seq+1, last, subjects, &msgs, busy)
		if err != nil {
			return err
		}
		last = first - 1
	}
	for _, s := range subjects {
		if seq >= last {
			break // the window served the whole range
		}
		if c := h.shared[s.name]; c != nil {
			err = c.read(ctx, h, r, s, res.Recovery.Epoch, seq+1, last, sharedKeep(h.cfg.MaxPerSubject), &msgs)
		} else {
			err = h.readSubject(ctx, r, s, seq+1, last, &msgs)
		}
		if err != nil {
			return err
		}
	}
	slices.SortFunc(msgs, func(a, b stored) int { return cmp.Compare(a.seq, b.seq) })
	for _, m := range msgs {
		h.add(res, m.subj, m.seq, m.data, t)
	}
	return nil
}

// readSubject appends the messages of s with from <= seq <= last to msgs.
// A reconnect misses few messages of most of its subjects: it asks for
// them one at a time first (a lookup under the stream's read lock), and
// in batches only past directSingles (a batch first counts what is
// pending, under the stream's write lock, which stalls its writes).
func (h *History) readSubject(ctx context.Context, r *natsconn.Replies, s *subject, from, last uint64, msgs *[]stored) error {
	for range directSingles {
		if from > last {
			return nil
		}
		seq, data, err := h.directNext(ctx, r, s.name, from)
		if err != nil || seq == 0 || seq > last {
			return err
		}
		*msgs = append(*msgs, stored{seq: seq, subj: s, data: data})
		from = seq + 1
	}
	for from <= last {
		more, next, err := h.directBatch(ctx, r, s, from, last, msgs)
		if err != nil || !more {
			return err
		}
		from = next
	}
	return nil
}

// directSingles is how many messages of a subject a replay asks for one by
// one before it asks for batches.
const directSingles = 3

// directNext is the first message of subject from seq from on (seq 0:
// none).
func (h *History) directNext(ctx context.Context, r *natsconn.Replies, subject string, from uint64) (uint64, []byte, error) {
	req, _ := json.Marshal(directGet{Seq: from, NextFor: subject})
	if err := h.nc.PublishRequest(h.directSubject(), r.Inbox, req); err != nil {
		return 0, nil, fmt.Errorf("direct get %s: %w", subject, err)
	}
	m, err := r.Next(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("direct get %s: %w", subject, err)
	}
	return directReply(subject, m)
}

// directReply decodes the answer to a single direct get.
func directReply(subject string, m *nats.Msg) (uint64, []byte, error) {
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return 0, nil, nil
	default:
		return 0, nil, fmt.Errorf("direct get %s: status %s %s", subject, status, m.Header.Get("Description"))
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("direct get %s: sequence %q: %w", subject, m.Header.Get(jetstream.SequenceHeader), err)
	}
	return seq, m.Data, nil
}

// directBatch asks for up to directBatch messages of s from seq from and
// appends those up to last to msgs. more says that the stream holds more
// of s after next, the sequence after the last message that came (a batch
// also ends early at the server's byte limit).
func (h *History) directBatch(ctx context.Context, r *natsconn.Replies, s *subject, from, last uint64, msgs *[]stored) (more bool, next uint64, err error) {
	req, _ := json.Marshal(directGet{Seq: from, NextFor: s.name, Batch: directBatch})
	if err := h.nc.PublishRequest(h.directSubject(), r.Inbox, req); err != nil {
		return false, 0, fmt.Errorf("direct get %s: %w", s.name, err)
	}
	next = from
	for {
		m, err := r.Next(ctx)
		if err != nil {
			return false, 0, fmt.Errorf("direct get %s: %w", s.name, err)
		}
		if m.Header.Get("Status") == "204" { // end of the batch, with how many of s remain after it
			pending, err := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
			if err != nil {
				return false, 0, fmt.Errorf("direct get %s: pending %q: %w", s.name, m.Header.Get(numPendingHeader), err)
			}
			return pending > 0 && next <= last, next, nil
		}
		seq, data, err := directReply(s.name, m)
		if err != nil || seq == 0 { // 0: nothing (more) stored for s from there
			return false, next, err
		}
		next = seq + 1
		if seq <= last {
			*msgs = append(*msgs, stored{seq: seq, subj: s, data: data})
		}
	}
}

// numPendingHeader is the header of a batch's end that says how many
// messages of its subject the stream holds after it.
const numPendingHeader = "Nats-Num-Pending"

// firstDirect is the sequence of the oldest message stored for subject
// (0: none), read with a direct get.
func (h *History) firstDirect(ctx context.Context, subject string) (uint64, error) {
	req, _ := json.Marshal(directGet{Seq: 1, NextFor: subject})
	m, err := h.nc.RequestWithContext(ctx, h.directSubject(), req)
	if err != nil {
		return 0, fmt.Errorf("first message of %s: %w", subject, err)
	}
	seq, _, err := directReply(subject, m)
	return seq, err
}

// countDirect is how many messages the stream holds of subject, read with
// a direct get of a batch of one from the stream's start, whose end says
// how many follow.
func (h *History) countDirect(ctx context.Context, subject string) (uint64, error) {
	r, err := natsconn.SubscribeReplies(h.nc, 2) // the message, then the batch's end
	if err != nil {
		return 0, fmt.Errorf("messages of %s: %w", subject, err)
	}
	defer r.Close()
	req, _ := json.Marshal(directGet{Seq: 1, NextFor: subject, Batch: 1})
	if err := h.nc.PublishRequest(h.directSubject(), r.Inbox, req); err != nil {
		return 0, fmt.Errorf("messages of %s: %w", subject, err)
	}
	m, err := r.Next(ctx)
	if err != nil {
		return 0, fmt.Errorf("messages of %s: %w", subject, err)
	}
	if first, _, err := directReply(subject, m); err != nil || first == 0 {
		return 0, err
	}
	m, err = r.Next(ctx) // the batch's end, with how many remain
	if err != nil {
		return 0, fmt.Errorf("messages of %s: %w", subject, err)
	}
	pending, err := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
	if m.Header.Get("Status") != "204" || err != nil {
		return 0, fmt.Errorf("messages of %s: batch end %q, pending %q", subject, m.Header.Get("Status"), m.Header.Get(numPendingHeader))
	}
	return 1 + pending, nil
}

func (h *History) directSubject() string { return "$JS.API.DIRECT.GET." + h.cfg.Stream }
