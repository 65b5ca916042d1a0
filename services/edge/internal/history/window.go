package history

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/internal/natsconn"
)

// A reconnect storm of 10,000 replays asked the server, for each one, for
// its user's and session's messages after since. On a stream where every
// user's messages interleave, the file store finds each of them by
// scanning the stream from since (a fifth of natsd's CPU in the storm
// benchmark went to msgBlock.firstMatching, about 37,000 messages scanned
// per replay): natsd sat at one core and 284 of the 10,000 replays waited
// past EDGE_HISTORY_REPLAY_WAIT. During a storm the edge now reads the
// stream's recent range once, every subject in sequence order (a wildcard
// read that the store serves without a scan), and serves the replays from
// memory.

// windowAtOnce is how many replays must be running or waiting on the edge
// for a replay to use the window: a lone replay asks for its subjects only,
// which costs less than reading every message of its range.
const windowAtOnce = 4

// windowPerReplay is how many sequences the window reads at most for each
// replay running or waiting on the edge.
const windowPerReplay = 256

// windowEntryBytes is what a held message costs besides its subject and
// data (its slots in the indexes and slice headers), and windowSpan's
// divisor: the window reads at most max/windowEntryBytes sequences.
const windowEntryBytes = 96

// windowIdle: a window no replay used for this long is let go.
const windowIdle = 30 * time.Second

// window holds every message the stream held with lo <= seq <= hi when it
// was read, by subject, bounded in bytes: a replay of a range within it
// reads nothing from the stream, and one that needs more extends it for
// itself and for every replay queued behind it.
type window struct {
	max int64 // static: bytes held at most (0: no window)

	mu     sync.Mutex // held while reading, so one replay reads for the others
	epoch  string     // the stream incarnation of what is held
	lo, hi uint64     // held: every message with lo <= seq <= hi (none when hi < lo)
	subj   map[string][]stored
	order  []heldMsg // every message held, oldest first: what is let go first
	bytes  int64
	used   time.Time // when a replay last used the window

	asked asked // the furthest end a replay needs
}

// heldMsg is one message of the window, in the order of the stream.
type heldMsg struct {
	seq  uint64
	subj string
	size int64
}

// span is how many sequences the window reads at most.
func (w *window) span() uint64 { return max(1, uint64(w.max/windowEntryBytes)) }

// serve appends to msgs the messages of subjects with from <= seq <= to,
// reading what the window lacks from the stream of epoch, and returns the
// first sequence it served: those before it (from up to it) the replay
// reads subject by subject. It returns to+1 when the range is older than
// the window may reach, or too long to read for as few replays as run or
// wait (busy).
func (w *window) serve(ctx context.Context, h *History, r *natsconn.Replies, epoch string, from, to uint64, subjects []*subject, msgs *[]stored, busy int64) (uint64, error) {
	upTo := w.asked.ask(epoch, to)
	span := w.span()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.used = time.Now()
	// Reading costs every message of the range, whoever it is for: it pays
	// when the replays that share it are many for its length. A catch-up
	// of a long range by a few replays at once asks for their subjects.
	budget := windowPerReplay * uint64(max(busy, 1))
	if w.subj == nil || w.epoch != epoch || w.hi < w.lo || to > w.hi+span {
		// Nothing held, or too far behind to catch up: start again.
		start := max(from, to-min(to, span-1))
		if to-start+1 > budget {
			return to + 1, nil
		}
		w.reset(epoch, start)
	}
	// Read for the replays queued behind this one too, when the budget
	// allows it; else for this one.
	end := upTo
	if end > w.hi+budget {
		end = to
	}
	if end > w.hi {
		if end-w.hi > budget {
			return to + 1, nil
		}
		budget -= end - w.hi
		got, err := h.readRange(ctx, r, w.hi+1, end)
		if err != nil {
			return 0, err
		}
		w.hold(got, false)
		w.hi = end
	}
	if down := max(from, w.hi-min(w.hi, span-1), w.lo-min(w.lo, budget)); down < w.lo {
		// Reconnects come back from different positions: extend down, as
		// far as the window may reach.
		got, err := h.readRange(ctx, r, down, w.lo-1)
		if err != nil {
			return 0, err
		}
		w.hold(got, true)
		w.lo = down
	}
	if to < w.lo {
		return to + 1, nil // older than the window may reach
	}
	first := max(from, w.lo)
	for _, s := range subjects {
		held := w.subj[s.name]
		i, _ := slices.BinarySearchFunc(held, first, func(m stored, seq uint64) int { return cmp.Compare(m.seq, seq) })
		for _, m := range held[i:] {
			if m.seq > to {
				break
			}
			m.subj = s
			*msgs = append(*msgs, m)
		}
	}
	w.trim()
	return first, nil
}

// reset empties the window, to hold from seq on for epoch.
func (w *window) reset(epoch string, seq uint64) {
	w.epoch, w.lo, w.hi = epoch, seq, seq-1
	w.subj, w.order, w.bytes = map[string][]stored{}, nil, 0
}

// hold adds got (in sequence order), all newer than what is held, or all
// older (below).
func (w *window) hold(got []windowMsg, below bool) {
	order := make([]heldMsg, 0, len(got))
	bySubj := map[string][]stored{}
	for _, m := range got {
		size := int64(len(m.subj)+len(m.data)) + windowEntryBytes
		order = append(order, heldMsg{seq: m.seq, subj: m.subj, size: size})
		bySubj[m.subj] = append(bySubj[m.subj], stored{seq: m.seq, data: m.data})
		w.bytes += size
	}
	if below {
		w.order = append(order, w.order...)
		for s, ms := range bySubj {
			w.subj[s] = append(ms, w.subj[s]...)
		}
		return
	}
	w.order = append(w.order, order...)
	for s, ms := range bySubj {
		w.subj[s] = append(w.subj[s], ms...)
	}
}

// trim lets the oldest messages go until the window is within its bytes.
func (w *window) trim() {
	n := 0
	for w.bytes > w.max && n < len(w.order) {
		m := w.order[n]
		n++
		w.bytes -= m.size
		w.lo = m.seq + 1
		if held := w.subj[m.subj][1:]; len(held) > 0 {
			w.subj[m.subj] = held
		} else {
			delete(w.subj, m.subj)
		}
	}
	w.order = w.order[n:]
}

// expire lets the window go when no replay used it since before.
func (w *window) expire(before time.Time) {
	if !w.mu.TryLock() {
		return // a replay is reading: in use
	}
	defer w.mu.Unlock()
	if w.used.Before(before) && w.subj != nil {
		w.epoch, w.lo, w.hi, w.subj, w.order, w.bytes = "", 1, 0, nil, nil, 0
	}
}

// windowMsg is a message read from the stream with its subject.
type windowMsg struct {
	seq  uint64
	subj string
	data []byte
}

// rangeBatch is how many messages one read of a range asks for, and
// rangeBytes how many bytes at most: the stream serves a direct get under
// a lock its writes wait for.
const (
	rangeBatch = 512
	rangeBytes = 1 << 20
)

// rangeGet is a direct get of a batch of every subject from seq on
// (nats-server's JSApiMsgGetRequest).
type rangeGet struct {
	Seq      uint64 `json:"seq"`
	Batch    int    `json:"batch"`
	MaxBytes int    `json:"max_bytes"`
}

// readRange reads every message the stream holds with from <= seq <= to,
// in sequence order, with direct gets of every subject (as readDirect,
// only for a stream of one replica).
func (h *History) readRange(ctx context.Context, r *natsconn.Replies, from, to uint64) ([]windowMsg, error) {
	var got []windowMsg
	for from <= to {
		req, _ := json.Marshal(rangeGet{Seq: from, Batch: int(min(to-from+1, rangeBatch)), MaxBytes: rangeBytes})
		if err := h.nc.PublishRequest(h.directSubject(), r.Inbox, req); err != nil {
			return nil, fmt.Errorf("read %d-%d: %w", from, to, err)
		}
		next := from
		for end := false; !end; {
			m, err := r.Next(ctx)
			if err != nil {
				return nil, fmt.Errorf("read %d-%d: %w", from, to, err)
			}
			switch status := m.Header.Get("Status"); status {
			case "":
			case "204": // the batch's end
				if m.Header.Get(numPendingHeader) == "0" {
					return got, nil // nothing held after it
				}
				end = true
				continue
			case "404":
				return got, nil // nothing held from there on
			default:
				return nil, fmt.Errorf("read %d-%d: status %s %s", from, to, status, m.Header.Get("Description"))
			}
			seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("read %d-%d: sequence %q: %w", from, to, m.Header.Get(jetstream.SequenceHeader), err)
			}
			next = seq + 1
			if seq <= to {
				got = append(got, windowMsg{seq: seq, subj: m.Header.Get(jetstream.SubjectHeader), data: m.Data})
			}
		}
		if next == from {
			return nil, fmt.Errorf("read %d-%d: a batch ended with nothing in it", from, to)
		}
		from = next
	}
	return got, nil
}
