package presenceload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/bench/internal/procstat"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

// Presence bucket layout (api/wire/presence.go, DESIGN §9): the bench is a
// module of its own and writes it as any NATS client may.
const (
	presenceBucket = "wsgate_presence"
	benchEdge      = "benchfill"
	benchEpoch     = "fill"
)

// CountConfig is one group count figure: the presence bucket filled with
// Members connections (one user each) in one group, then Requests
// ws.presence.group requests, one after the other, answered by the
// dispatcher.
type CountConfig struct {
	Bin      Bin
	Members  int
	Requests int
	Progress io.Writer
}

// CountRow is the latency of one kind of group request.
type CountRow struct {
	Payload      string    `json:"payload"`
	Latency      Quantiles `json:"latency"`
	AchievedRate float64   `json:"achieved_rate_per_s"`
	Errors       int       `json:"errors"`
}

// CountResult is the outcome of a count figure.
type CountResult struct {
	Members  int        `json:"members"`
	Requests int        `json:"requests"`
	FillSecs float64    `json:"fill_seconds"`
	Rows     []CountRow `json:"rows"`
	// RSS of the NATS server and of the dispatcher before the fill and
	// once the dispatcher's index held every member.
	NATSRSSMiB       [2]float64 `json:"nats_rss_mib"`
	DispatcherRSSMiB [2]float64 `json:"dispatcher_rss_mib"`
	Samples          []string   `json:"samples,omitempty"`
}

// groupAnswer is what the figure reads of a ws.presence.group answer.
type groupAnswer struct {
	Users       int      `json:"users"`
	Connections int      `json:"connections"`
	Members     []string `json:"members"`
	Error       *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Count runs a group count figure.
func Count(ctx context.Context, cfg CountConfig) (*CountResult, error) {
	if cfg.Members < 1 || cfg.Requests < 1 {
		return nil, errors.New("presenceload: a count figure needs members and requests")
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	// The stack's one edge is idle; the dispatcher answers.
	st, err := stack.Start(ctx, cfg.Bin.config("count", 1, nil, nil))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := st.Stop(); err != nil {
			fmt.Fprintln(cfg.Progress, "presence count: stopping servers:", err)
		}
	}()
	rss := func() (natsMiB, dispMiB float64) {
		for i, name := range st.Names() {
			s, err := procstat.Read(st.Pids()[i])
			if err != nil {
				continue
			}
			switch name {
			case "natsd":
				natsMiB = float64(s.RSSKiB) / 1024
			case "dispatcher":
				dispMiB = float64(s.RSSKiB) / 1024
			}
		}
		return natsMiB, dispMiB
	}
	res := &CountResult{Members: cfg.Members, Requests: cfg.Requests}
	res.NATSRSSMiB[0], res.DispatcherRSSMiB[0] = rss()

	nc, err := nats.Connect(st.NATSURL, nats.Name("presence-count"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	fillStart := time.Now()
	if err := fill(ctx, nc, cfg.Members); err != nil {
		return nil, err
	}
	// The dispatcher's index holds them all when it counts them all.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err = waitFor(wctx, func() bool {
		a, err := askGroup(nc, []byte(`{"limit":0}`))
		return err == nil && a.Users == cfg.Members && a.Connections == cfg.Members
	})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("presence count: the dispatcher did not count %d members within 5 minutes", cfg.Members)
	}
	res.FillSecs = time.Since(fillStart).Seconds()
	res.NATSRSSMiB[1], res.DispatcherRSSMiB[1] = rss()
	fmt.Fprintf(cfg.Progress, "presence count: %d members stored and indexed in %.1f s\n", cfg.Members, res.FillSecs)

	for _, payload := range []string{`{"limit":0}`, ``} {
		row := CountRow{Payload: payload}
		var lat []time.Duration
		start := time.Now()
		for range cfg.Requests {
			if ctx.Err() != nil {
				return nil, errStopped
			}
			t0 := time.Now()
			a, err := askGroup(nc, []byte(payload))
			d := time.Since(t0)
			want := 0
			if payload == "" {
				want = min(cfg.Members, 1000) // the dispatcher's default limit
			}
			if err != nil || a.Users != cfg.Members || len(a.Members) != want {
				row.Errors++
				if len(res.Samples) < 5 {
					res.Samples = append(res.Samples, fmt.Sprintf("payload %q: err %v, users %d, members listed %d", payload, err, a.Users, len(a.Members)))
				}
				continue
			}
			lat = append(lat, d)
		}
		row.AchievedRate = float64(cfg.Requests) / time.Since(start).Seconds()
		row.Latency = quantiles(lat)
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// askGroup requests the presence of the figure's group.
func askGroup(nc *nats.Conn, payload []byte) (groupAnswer, error) {
	var a groupAnswer
	m, err := nc.Request("ws.presence.group.big", payload, 5*time.Second)
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return a, err
	}
	if a.Error != nil {
		return a, fmt.Errorf("presence answered %d %s", a.Error.Code, a.Error.Message)
	}
	return a, nil
}

// fill writes a live lease of a made-up edge and members connection
// records of it, each of its own user, all in group "big", as an edge
// would (api/wire/presence.go's layout).
func fill(ctx context.Context, nc *nats.Conn, members int) error {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, presenceBucket)
	if err != nil {
		return fmt.Errorf("presence count: bucket %s (the dispatcher creates it): %w", presenceBucket, err)
	}
	since := time.Now().UTC()
	lease, _ := json.Marshal(map[string]any{"epoch": benchEpoch, "since": since})
	if _, err := kv.Put(ctx, "edge."+benchEdge, lease); err != nil {
		return fmt.Errorf("presence count: lease: %w", err)
	}
	for i := range members {
		id := strconv.Itoa(i)
		rec, _ := json.Marshal(map[string]any{
			"user": "m" + id, "session": "", "groups": []string{"big"}, "language": "en",
			"connection": benchEdge + "." + id, "edge": benchEdge, "epoch": benchEpoch, "since": since,
		})
		if _, err := js.PublishAsync("$KV."+presenceBucket+".conn."+benchEdge+"."+id, rec); err != nil {
			return fmt.Errorf("presence count: record %d: %w", i, err)
		}
		// In batches, so that a busy server never stalls the publisher.
		if (i+1)%fillBatch == 0 || i == members-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return errStopped
			}
		}
	}
	return nil
}

// fillBatch is the records published before waiting for their acks.
const fillBatch = 1000
