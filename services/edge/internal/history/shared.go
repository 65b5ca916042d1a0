package history

import (
	"context"
	"sync"

	"github.com/wsgate/wsgate/services/internal/natsconn"
)

// sharedSubject keeps what was read of a subject every connection replays
// (all, users, filter), so that a reconnect storm reads each message of
// those once per edge, not once per connection: the server serves the
// direct gets of one connection one at a time, and scans the stream from
// the requested sequence for each (measured: 5,000 replays at once on one
// edge timed out there, three quarters of their requests being for these
// subjects).
type sharedSubject struct {
	mu    sync.Mutex // held while reading, so one replay reads for the others
	epoch string     // the stream incarnation of msgs
	lo    uint64     // msgs is every message of the subject with lo <= seq <= hi
	hi    uint64     //   (none read yet when hi < lo)
	msgs  []stored   // in sequence order

	asked asked // the furthest end a replay of the subject needs

	first latestRead[uint64] // the sequence of its oldest message held, shared
}

// asked is the largest end of a range a replay of epoch asked for. Each
// end is a last sequence the stream reported before the replay asked, so a
// read sent later finds every message up to it stored: the replay that
// reads reads that far, and those that queued behind it find their range
// read.
type asked struct {
	mu    sync.Mutex
	epoch string
	to    uint64
}

// ask records that a replay of epoch needs up to to, and returns the
// furthest any replay of epoch needs.
func (a *asked) ask(epoch string, to uint64) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.epoch != epoch {
		a.epoch, a.to = epoch, 0
	}
	a.to = max(a.to, to)
	return a.to
}

// sharedKeep is how many messages a shared subject's cache keeps: the
// stream's per-subject limit, or 10,000 without one.
func sharedKeep(maxPerSubject int64) int64 {
	if maxPerSubject <= 0 {
		return 10_000
	}
	return maxPerSubject
}

// sharedSubjects are the edge's caches, by subject name.
type sharedSubjects map[string]*sharedSubject

func newSharedSubjects(names ...string) sharedSubjects {
	m := make(sharedSubjects, len(names))
	for _, n := range names {
		m[n] = &sharedSubject{}
	}
	return m
}

// read appends the messages of s with from <= seq <= to to msgs, reading
// from the stream only what the cache does not hold. keep bounds the cache
// to that many messages.
func (c *sharedSubject) read(ctx context.Context, h *History, r *natsconn.Replies, s *subject, epoch string, from, to uint64, keep int64, msgs *[]stored) error {
	c.asked.ask(epoch, to)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch || c.hi < c.lo || from > c.hi+1 {
		// Nothing usable: start again from this replay's range.
		c.epoch, c.lo, c.hi, c.msgs = epoch, from, from-1, nil
	}
	if from < c.lo {
		// Reconnects come back from different positions: extend down.
		var got []stored
		if err := h.readSubject(ctx, r, s, from, c.lo-1, &got); err != nil {
			return err
		}
		c.msgs = append(got, c.msgs...)
		c.lo = from
	}
	if to > c.hi {
		// Read for the replays waiting behind this one too: in a storm the
		// stream's last sequence moves between any two of them, and a read
		// for each one's end would make them read one after another.
		upTo := c.asked.ask(epoch, to)
		var got []stored
		if err := h.readSubject(ctx, r, s, c.hi+1, upTo, &got); err != nil {
			return err
		}
		c.msgs = append(c.msgs, got...)
		c.hi = upTo
	}
	// The stream holds at most keep messages of the subject: older ones
	// cached are gone there too (a replay that needs them finds so).
	if int64(len(c.msgs)) > keep {
		drop := len(c.msgs) - int(keep)
		c.lo = c.msgs[drop-1].seq + 1
		c.msgs = append(c.msgs[:0], c.msgs[drop:]...)
	}
	for _, m := range c.msgs {
		if m.seq >= from && m.seq <= to {
			m.subj = s
			*msgs = append(*msgs, m)
		}
	}
	return nil
}
