package load

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// History modes of a wsgate run (-history): WS_HISTORY of every edge the
// tool starts. With history on, natsd runs with JetStream, the edges
// create the history stream, and the publisher's core NATS messages to
// ws.send.* are stored there and reach the clients through its
// republication as [action, details, ref, seq] frames, after a
// Server/recovery frame on every connection (DESIGN.md §8).
const (
	HistoryOff    = "off"
	HistoryMemory = "memory"
	HistoryFile   = "file"
)

// CheckHistory refuses a history mode that is not one of the above, or
// that is on for a gateway other than wsgate.
func CheckHistory(gateway, mode string) error {
	switch mode {
	case HistoryOff:
		return nil
	case HistoryMemory, HistoryFile:
		if gateway != "wsgate" {
			return fmt.Errorf("load: -history %s is wsgate's (WS_HISTORY), not %s's", mode, gateway)
		}
		return nil
	}
	return fmt.Errorf("load: -history %q is not off, memory or file", mode)
}

// historyStream is the edges' default WS_HISTORY_STREAM, which the runs
// of the tool do not change.
const historyStream = "WS_HISTORY"

// historyStored returns how many messages the history stream holds: with
// history on, the proof that the run's messages went through it.
func historyStored(ctx context.Context, natsURL string) (uint64, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, historyStream)
	if err != nil {
		return 0, fmt.Errorf("history stream %s: %w", historyStream, err)
	}
	return s.CachedInfo().State.Msgs, nil
}
