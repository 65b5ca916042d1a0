package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/bench/internal/procstat"
	"github.com/wsgate/wsgate/bench/internal/proto"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

// The memory part of the history set: what the history stream costs NATS
// per stored subject and per stored message. natsd runs with JetStream and
// one edge with WS_HISTORY set creates the stream, so that it has the
// configuration of a real deployment (subjects, republication, per-subject
// limit). Then messages go to `users` distinct ws.send.user.<id> subjects,
// one each, then up to perSubject each, and natsd's resident memory is
// read before and after each round, beside the stream's own byte count.

// historyStream is the edges' default WS_HISTORY_STREAM.
const historyStream = "WS_HISTORY"

// pubBatch is how many publishes wait for their acknowledgements at once.
const pubBatch = 2048

// memConfig is the memory part's parameters.
type memConfig struct {
	users      int      // distinct ws.send.user.<id> subjects
	perSubject int      // messages per subject in the last round
	storages   []string // WS_HISTORY values to measure, each on a fresh natsd
	size       int      // payload bytes
}

// memEdgeEnv is what the edge is given besides WS_HISTORY: limits that the
// measurement must not reach (the defaults would drop messages after 2
// minutes, or beyond 256 MiB, before the memory is read).
var memEdgeEnv = []string{"WS_HISTORY_MAX_AGE=1h", "WS_HISTORY_MAX_BYTES=-1"}

// memPoint is one reading: the stream's state and natsd's memory.
type memPoint struct {
	PerSubject  int    `json:"per_subject"` // messages per subject published so far
	Msgs        uint64 `json:"msgs"`
	Subjects    uint64 `json:"subjects"`
	StreamBytes uint64 `json:"stream_bytes"`
	RSSKiB      int64  `json:"rss_kib"`
}

// memResult is the measurement of one storage.
type memResult struct {
	Storage string     `json:"storage"`
	Users   int        `json:"users"`
	Size    int        `json:"size_bytes"`
	Points  []memPoint `json:"points"` // empty stream, one per subject, perSubject each
	Seconds float64    `json:"seconds"`
}

// kibPerSubject is natsd's memory per subject holding one message: the
// growth from the empty stream to one message on every subject.
func (m memResult) kibPerSubject() float64 {
	if len(m.Points) < 2 || m.Users == 0 {
		return math.NaN()
	}
	return float64(m.Points[1].RSSKiB-m.Points[0].RSSKiB) / float64(m.Users)
}

// bytesPerMessage is natsd's memory per further message on a subject that
// already holds one.
func (m memResult) bytesPerMessage() float64 {
	if len(m.Points) < 3 {
		return math.NaN()
	}
	a, b := m.Points[1], m.Points[2]
	if b.Msgs <= a.Msgs {
		return math.NaN()
	}
	return float64(b.RSSKiB-a.RSSKiB) * 1024 / float64(b.Msgs-a.Msgs)
}

// streamBytesPerMessage is the stream's own count of bytes per message.
func (m memResult) streamBytesPerMessage() float64 {
	last := m.Points[len(m.Points)-1]
	if last.Msgs == 0 {
		return math.NaN()
	}
	return float64(last.StreamBytes) / float64(last.Msgs)
}

// measureMemory measures one storage on a fresh natsd and edge.
func measureMemory(ctx context.Context, cfg memConfig, storage, natsd, binDir, dir string) (memResult, error) {
	start := time.Now()
	res := memResult{Storage: storage, Users: cfg.users, Size: cfg.size}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	st, err := stack.Start(ctx, stack.Config{
		Gateway: "wsgate", Edges: 1, BinDir: binDir, NATSD: natsd, Secret: hex.EncodeToString(secret), SendQueue: 64,
		JetStream: true, EdgeEnv: append([]string{"WS_HISTORY=" + storage}, memEdgeEnv...), Dir: dir,
	})
	if err != nil {
		return res, err
	}
	defer func() {
		_ = st.Stop()
		// The store (up to hundreds of MB with file storage) is not a
		// record of the run; the servers' logs stay.
		_ = os.RemoveAll(filepath.Join(dir, "jetstream-natsd"))
	}()
	pid := 0
	for i, name := range st.Names() {
		if name == "natsd" {
			pid = st.Pids()[i]
		}
	}
	if pid == 0 {
		return res, errors.New("history memory: no natsd in the stack")
	}
	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	var pubErrs atomic.Int64
	var firstErr atomic.Pointer[error]
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*pubBatch),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			pubErrs.Add(1)
			firstErr.CompareAndSwap(nil, &err)
		}))
	if err != nil {
		return res, err
	}
	stream, err := waitStream(ctx, js)
	if err != nil {
		return res, err
	}
	if limit := stream.CachedInfo().Config.MaxMsgsPerSubject; limit > 0 && int64(cfg.perSubject) > limit {
		return res, fmt.Errorf("history memory: %d messages per subject, but the stream keeps %d", cfg.perSubject, limit)
	}
	point := func(perSubject int, want uint64) error {
		info, err := waitMsgs(ctx, stream, want)
		if err != nil {
			return err
		}
		rss, err := settledRSS(ctx, pid)
		if err != nil {
			return err
		}
		res.Points = append(res.Points, memPoint{PerSubject: perSubject, Msgs: info.State.Msgs, Subjects: info.State.NumSubjects,
			StreamBytes: info.State.Bytes, RSSKiB: rss})
		return nil
	}
	if err := point(0, 0); err != nil {
		return res, err
	}
	var payload []byte
	var seq uint64
	for round := 1; round <= cfg.perSubject; round++ {
		for u := range cfg.users {
			payload = proto.AppendPayload(payload[:0], time.Now().UnixNano(), seq, cfg.size)
			seq++
			if _, err := js.PublishAsync("ws.send.user.u"+strconv.Itoa(u), payload); err != nil {
				return res, fmt.Errorf("history memory: publish: %w", err)
			}
			// Batches below the pending limit, so that a publish never
			// stalls on it.
			if (u+1)%pubBatch == 0 || u == cfg.users-1 {
				select {
				case <-js.PublishAsyncComplete():
				case <-ctx.Done():
					return res, ctx.Err()
				}
			}
		}
		if n := pubErrs.Load(); n > 0 {
			return res, fmt.Errorf("history memory: %d publishes not stored, the first: %v", n, *firstErr.Load())
		}
		if round == 1 || round == cfg.perSubject {
			if err := point(round, uint64(round)*uint64(cfg.users)); err != nil {
				return res, err
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// waitStream polls until the edge has created the history stream.
func waitStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		s, err := js.Stream(ctx, historyStream)
		if err == nil {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("history memory: the edge did not create stream %s: %w", historyStream, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitMsgs polls the stream's info until it holds want messages.
func waitMsgs(ctx context.Context, s jetstream.Stream, want uint64) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		info, err := s.Info(ctx)
		if err == nil && info.State.Msgs == want {
			return info, nil
		}
		select {
		case <-ctx.Done():
			got := "?"
			if info != nil {
				got = strconv.FormatUint(info.State.Msgs, 10)
			}
			return nil, fmt.Errorf("history memory: the stream holds %s messages, want %d (%v)", got, want, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settledRSS reads pid's resident memory once it has stopped moving: three
// readings 0.5 s apart within 1 % of each other (the last of them), or the
// last reading after 20 s.
func settledRSS(ctx context.Context, pid int) (int64, error) {
	deadline := time.Now().Add(20 * time.Second)
	var last []int64
	for {
		s, err := procstat.Read(pid)
		if err != nil {
			return 0, err
		}
		last = append(last, s.RSSKiB)
		if n := len(last); n >= 3 {
			w := last[n-3:]
			lo, hi := slices.Min(w), slices.Max(w)
			if float64(hi-lo) <= 0.01*float64(hi) || time.Now().After(deadline) {
				return s.RSSKiB, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// memDir is where a storage's servers keep their files during the run.
func memDir(results, storage string) string { return filepath.Join(results, "memory-"+storage) }
