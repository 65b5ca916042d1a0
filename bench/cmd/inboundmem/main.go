// Command inboundmem measures what NATS spends to remember message ids in
// the reliable-inbound stream's dedupe window (DESIGN.md §8): it starts
// natsd with JetStream and one edge with WS_INBOUND on (so the stream has
// the configuration the edges give it), publishes N actions with distinct
// Nats-Msg-Id headers to <prefix>.inq.bench, reads natsd's RSS and the
// stream's bytes, purges the stream (the ids stay in the window, as they
// do once dispatchers have consumed the actions: a resend of the first id
// must still be a duplicate) and reads RSS again. It does the same with N
// actions without ids in a fresh natsd. The difference of the two RSS
// growths, less the bytes the Nats-Msg-Id headers add to the stored
// messages, per action, is the cost of one id in the window.
//
//	inboundmem -n 1000000 -json out.json   (≈2 min)
//
// Memory figures are not spoiled by other load on the machine; the RSS of
// a Go process does include garbage not yet collected (GOGC=100), which a
// real server carries too.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/bench/internal/procstat"
	"github.com/wsgate/wsgate/bench/internal/proto"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "inboundmem:", err)
		os.Exit(1)
	}
}

// Timing of the readings.
const (
	settleEvery = 500 * time.Millisecond
	settleMax   = 30 * time.Second
	pubTimeout  = 5 * time.Minute
)

// Phase is one natsd's readings: with or without message ids.
type Phase struct {
	WithIDs      bool  `json:"with_ids"`
	Actions      int   `json:"actions"`
	RSSBeforeKiB int64 `json:"rss_before_kib"`
	RSSStoredKiB int64 `json:"rss_stored_kib"` // the actions stored, their ids in the window
	RSSPurgedKiB int64 `json:"rss_purged_kib"` // the stream purged, the ids still in the window
	// The same two readings after a forced collection (natsd's SIGUSR1):
	// the live heap, without the garbage a Go process carries between
	// collections.
	RSSBeforeGCKiB int64   `json:"rss_before_gc_kib"`
	RSSStoredGCKiB int64   `json:"rss_stored_gc_kib"`
	RSSPurgedGCKiB int64   `json:"rss_purged_gc_kib"`
	StreamBytes    uint64  `json:"stream_bytes"`     // the stream's bytes with the actions stored
	StreamMsgs     uint64  `json:"stream_msgs"`      // the stream's messages then
	Duplicates     int     `json:"duplicates"`       // publishes the stream called duplicate (must be 0)
	WindowHoldsIDs bool    `json:"window_holds_ids"` // after the purge, a resend of the first id was a duplicate
	PublishSeconds float64 `json:"publish_seconds"`
}

// Record is the JSON the command writes.
type Record struct {
	Command  string `json:"command"`
	Started  string `json:"started"`
	Storage  string `json:"storage"`
	Dedupe   string `json:"dedupe_window"`
	Stream   string `json:"stream"`
	KeyBytes int    `json:"key_bytes"` // length of each Nats-Msg-Id
	// Retention, Storage and Duplicates of the stream as the edge made it.
	StreamConfig string `json:"stream_config"`
	IDs          Phase  `json:"ids"`
	NoIDs        Phase  `json:"no_ids"`
	// BytesPerID is the figure: (RSS stored − before) with ids minus the
	// same without, less the stream bytes the id headers add, per action.
	BytesPerID float64 `json:"bytes_per_id"`
	// BytesPerIDLive is the same after forced collections: the live heap.
	BytesPerIDLive float64 `json:"bytes_per_id_live"`
	// BytesPerIDPurged is (RSS after purge − before), with ids minus
	// without, after forced collections: the ids alone once their actions
	// are gone.
	BytesPerIDPurged float64 `json:"bytes_per_id_purged"`
	// BytesPerActionWithID is the same without subtracting the headers:
	// what an id costs while its action is still stored.
	BytesPerActionWithID float64 `json:"bytes_per_action_with_id"`
	// PurgedRSSDropKiB is how much natsd's RSS fell with the purge, with
	// ids: the Go runtime keeps freed heap for a while, so RSS after a
	// purge is no measure of the window alone.
	PurgedRSSDropKiB int64 `json:"purged_rss_drop_kib"`
	// StreamBytesPerAction is the stream's bytes per stored action with ids.
	StreamBytesPerAction float64 `json:"stream_bytes_per_action"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	exeDir := filepath.Dir(exe)
	fs := flag.NewFlagSet("inboundmem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 1000000, "actions published with distinct ids (and as many without)")
	size := fs.Int("size", 128, "payload bytes of each action")
	storage := fs.String("inbound", "memory", "WS_INBOUND storage of the stream: memory or file")
	binDir := fs.String("bin", filepath.Join(exeDir, "..", "..", "bin"), "directory of the edge")
	natsd := fs.String("natsd", filepath.Join(exeDir, "natsd"), "the natsd program")
	workDir := fs.String("workdir", filepath.Join(os.TempDir(), "wsgate-inboundmem"), "servers' stores and logs")
	jsonOut := fs.String("json", "", "write the JSON record to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 {
		return errors.New("-n must be at least 1")
	}
	rec := &Record{Command: "bench/.bin/inboundmem -n " + strconv.Itoa(*n) + " -inbound " + *storage,
		Started: time.Now().UTC().Format(time.RFC3339), Storage: *storage, Dedupe: dedupe.String()}
	for _, withIDs := range []bool{true, false} {
		dir := filepath.Join(*workDir, fmt.Sprintf("%d-%v", os.Getpid(), withIDs))
		ph, err := measure(ctx, stack.Config{
			Gateway: "wsgate", Edges: 1, BinDir: *binDir, NATSD: *natsd, Secret: "inboundmem",
			SendQueue: 64, JetStream: true, Dir: dir,
			EdgeEnv: []string{"WS_INBOUND=" + *storage, "WS_INBOUND_DEDUPE=" + dedupe.String()},
		}, *n, *size, withIDs, rec, stderr)
		if err != nil {
			return err
		}
		_ = os.RemoveAll(dir)
		if withIDs {
			rec.IDs = ph
		} else {
			rec.NoIDs = ph
		}
	}
	per := func(a, b int64) float64 { return float64(a-b) * 1024 / float64(*n) }
	rec.BytesPerActionWithID = per(rec.IDs.RSSStoredKiB-rec.IDs.RSSBeforeKiB, rec.NoIDs.RSSStoredKiB-rec.NoIDs.RSSBeforeKiB)
	rec.BytesPerID = rec.BytesPerActionWithID - (float64(rec.IDs.StreamBytes)-float64(rec.NoIDs.StreamBytes))/float64(*n)
	rec.PurgedRSSDropKiB = rec.IDs.RSSStoredKiB - rec.IDs.RSSPurgedKiB
	rec.BytesPerIDLive = per(rec.IDs.RSSStoredGCKiB-rec.IDs.RSSBeforeGCKiB, rec.NoIDs.RSSStoredGCKiB-rec.NoIDs.RSSBeforeGCKiB) -
		(float64(rec.IDs.StreamBytes)-float64(rec.NoIDs.StreamBytes))/float64(*n)
	rec.BytesPerIDPurged = per(rec.IDs.RSSPurgedGCKiB-rec.IDs.RSSBeforeGCKiB, rec.NoIDs.RSSPurgedGCKiB-rec.NoIDs.RSSBeforeGCKiB)
	rec.StreamBytesPerAction = float64(rec.IDs.StreamBytes) / float64(*n)
	fmt.Fprintf(stdout, "inboundmem n=%d storage=%s window=%s key=%dB: natsd RSS per id in the dedupe window %.0f B (%.0f B with its stored header; live after GC %.0f B, after purge %.0f B); stream %.0f B per stored action; window holds ids after purge %v; duplicates %d\n",
		*n, *storage, rec.Dedupe, rec.KeyBytes, rec.BytesPerID, rec.BytesPerActionWithID, rec.BytesPerIDLive, rec.BytesPerIDPurged, rec.StreamBytesPerAction, rec.IDs.WindowHoldsIDs, rec.IDs.Duplicates+rec.NoIDs.Duplicates)
	if *jsonOut != "" {
		data, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	if !rec.IDs.WindowHoldsIDs || rec.IDs.Duplicates+rec.NoIDs.Duplicates != 0 {
		return errors.New("the dedupe window did not behave: see the record")
	}
	return nil
}

// dedupe is the window of the measurement: longer than the run, so every
// id is still in it when RSS is read.
const dedupe = time.Hour

// measure runs one phase on a fresh stack.
func measure(ctx context.Context, cfg stack.Config, n, size int, withIDs bool, rec *Record, log io.Writer) (Phase, error) {
	ph := Phase{WithIDs: withIDs, Actions: n}
	st, err := stack.Start(ctx, cfg)
	if err != nil {
		return ph, err
	}
	defer st.Stop()
	pid := st.Pids()[0] // natsd
	natsLog := filepath.Join(cfg.Dir, "natsd.log")
	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		return ph, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return ph, err
	}
	const stream = "WS_INBOUND"
	s, err := waitStream(ctx, js, stream)
	if err != nil {
		return ph, err
	}
	c := s.CachedInfo().Config
	rec.Stream = stream
	rec.StreamConfig = fmt.Sprintf("retention %s, storage %s, duplicates %s, subjects %v, replicas %d", c.Retention, c.Storage, c.Duplicates, c.Subjects, c.Replicas)
	if ph.RSSBeforeKiB, ph.RSSBeforeGCKiB, err = readings(ctx, pid, natsLog); err != nil {
		return ph, err
	}

	// Keys as the edge makes them, "<user>.<id>", with 32-hex ids as the JS
	// client's; 10,000 users.
	var first string
	key := func(k int) string {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return "u" + strconv.Itoa(k%10000) + "." + hex.EncodeToString(b)
	}
	payload := proto.AppendPayload(nil, time.Now().UnixNano(), 0, size)
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, 4096)
	collect := func() error {
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					ph.Duplicates++
				}
			case err := <-f.Err():
				return fmt.Errorf("publish: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	for k := range n {
		m := nats.NewMsg("ws.inq.bench")
		m.Data = payload
		if withIDs {
			id := key(k)
			if k == 0 {
				first = id
				rec.KeyBytes = len(id)
			}
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return ph, fmt.Errorf("publish: %w", err)
		}
		futures = append(futures, f)
		if len(futures) == cap(futures) {
			if err := collect(); err != nil {
				return ph, err
			}
		}
		if k%200000 == 0 && k > 0 {
			fmt.Fprintf(log, "inboundmem: ids=%v %d published\n", withIDs, k)
		}
	}
	if err := collect(); err != nil {
		return ph, err
	}
	ph.PublishSeconds = time.Since(start).Seconds()
	info, err := s.Info(ctx)
	if err != nil {
		return ph, err
	}
	ph.StreamBytes, ph.StreamMsgs = info.State.Bytes, info.State.Msgs
	if ph.RSSStoredKiB, ph.RSSStoredGCKiB, err = readings(ctx, pid, natsLog); err != nil {
		return ph, err
	}
	if err := s.Purge(ctx); err != nil {
		return ph, fmt.Errorf("purge: %w", err)
	}
	if ph.RSSPurgedKiB, ph.RSSPurgedGCKiB, err = readings(ctx, pid, natsLog); err != nil {
		return ph, err
	}
	if withIDs {
		m := nats.NewMsg("ws.inq.bench")
		m.Data = payload
		m.Header.Set(jetstream.MsgIDHeader, first)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			return ph, err
		}
		ph.WindowHoldsIDs = ack.Duplicate
	}
	return ph, nil
}

// readings are pid's settled RSS as it runs, then after a forced
// collection: natsd's SIGUSR1, done when natsd has printed one more
// "freed" line to its log (a collection of a large heap takes seconds,
// during which RSS does not move).
func readings(ctx context.Context, pid int, natsLog string) (running, live int64, err error) {
	if running, err = settled(ctx, pid); err != nil {
		return 0, 0, err
	}
	before, err := freedLines(natsLog)
	if err != nil {
		return 0, 0, err
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(settleMax)
	for {
		n, err := freedLines(natsLog)
		if err != nil {
			return 0, 0, err
		}
		if n > before {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("natsd did not collect within %s (see %s)", settleMax, natsLog)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	live, err = settled(ctx, pid)
	return running, live, err
}

// freedLines counts natsd's "freed" lines in its log.
func freedLines(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for line := range strings.Lines(string(data)) {
		if strings.TrimSpace(line) == "freed" {
			n++
		}
	}
	return n, nil
}

// settled reads pid's RSS until it stops moving (four readings within 0.5 %
// of each other), or settleMax has passed.
func settled(ctx context.Context, pid int) (int64, error) {
	deadline := time.Now().Add(settleMax)
	var last []int64
	for {
		s, err := procstat.Read(pid)
		if err != nil {
			return 0, err
		}
		last = append(last, s.RSSKiB)
		if len(last) > 4 {
			last = last[1:]
		}
		if len(last) == 4 || time.Now().After(deadline) {
			lo, hi := last[0], last[0]
			for _, v := range last {
				lo, hi = min(lo, v), max(hi, v)
			}
			if float64(hi-lo) <= 0.005*float64(hi) || time.Now().After(deadline) {
				return last[len(last)-1], nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(settleEvery):
		}
	}
}

// waitStream returns the inbound stream once the edge has created it (it
// may do so after it listens).
func waitStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	deadline := time.Now().Add(settleMax)
	for {
		s, err := js.Stream(ctx, name)
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the edge did not create the inbound stream: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
