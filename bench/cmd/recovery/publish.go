package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publishing.
const (
	ackTimeout   = 10 * time.Second       // an unacknowledged publish fails after it
	maxInFlight  = 4096                   // async publishes awaiting their ack
	retryPause   = 100 * time.Millisecond // between two tries of one message
	orderPoll    = time.Millisecond       // how often a send looks whether the user's previous number is stored
	paceInterval = 2 * time.Millisecond   // how long the pacer waits when ahead of its rate
)

// publisher sends numbered messages to ws.send.user.<user> through
// JetStream, so that "sent" means "stored". Each message carries a
// Nats-Msg-Id: a publish whose acknowledgement failed is sent again with the
// same id, and the stream's duplicate window keeps one copy whether the
// first try was stored or not. A user's next number is sent only once its
// previous one is stored, so that a retry cannot overtake it.
type publisher struct {
	nc      *nats.Conn          // static
	js      jetstream.JetStream // static
	prefix  string              // static
	run     string              // static: makes the message ids of this run unique
	pending chan pending        // send → settle, in publish order
	done    chan struct{}       // closed when settle returned

	stored  atomic.Int64 // messages the stream acknowledged
	retries atomic.Int64 // failed acknowledgements, sent again with the same id
	dupAcks atomic.Int64 // retries the stream answered "duplicate": the first try was stored
	lost    atomic.Int64 // messages given up when the run ended before their ack
}

type pending struct {
	u *user
	n int64
	f jetstream.PubAckFuture
}

func newPublisher(natsURL, prefix string) (*publisher, error) {
	nc, err := nats.Connect(natsURL, nats.Name("wsgate-recovery"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxInFlight), jetstream.WithPublishAsyncTimeout(ackTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("publisher: %w", err)
	}
	p := &publisher{nc: nc, js: js, prefix: prefix, run: strconv.FormatInt(time.Now().UnixNano(), 36),
		pending: make(chan pending, maxInFlight), done: make(chan struct{})}
	go p.settle()
	return p, nil
}

// send publishes u's next number, stamped with the time of sending. It
// waits while u's previous number is not stored yet.
func (p *publisher) send(ctx context.Context, u *user) error {
	n := u.published.Load() + 1
	for u.stored.Load() < n-1 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(orderPoll):
		}
	}
	msg := nats.NewMsg(p.prefix + ".send.user." + u.name)
	msg.Header.Set(jetstream.MsgIDHeader, p.run+"."+u.name+"."+strconv.FormatInt(n, 10))
	body := append([]byte(`{"action":"`+dataAction+`","details":[`), strconv.FormatInt(n, 10)...)
	body = append(body, ',')
	body = strconv.AppendInt(body, time.Now().UnixNano(), 10)
	msg.Data = append(body, "]}"...)
	f, err := p.js.PublishMsgAsync(msg)
	for err != nil {
		// Not sent (too many in flight): try again, still in order.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryPause):
		}
		f, err = p.js.PublishMsgAsync(msg)
	}
	u.published.Store(n)
	select {
	case p.pending <- pending{u: u, n: n, f: f}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle waits for the acknowledgements in publish order and marks each
// message stored; a failed one is sent again, with the same id, until the
// stream takes it or the connection closes.
func (p *publisher) settle() {
	defer close(p.done)
	for pd := range p.pending {
		var err error
		select {
		case <-pd.f.Ok():
		case err = <-pd.f.Err():
		}
		for err != nil {
			p.retries.Add(1)
			if p.nc.IsClosed() {
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			var ack *jetstream.PubAck
			ack, err = p.js.PublishMsg(ctx, pd.f.Msg())
			cancel()
			if err == nil && ack.Duplicate {
				p.dupAcks.Add(1)
			}
			if err != nil {
				time.Sleep(retryPause)
			}
		}
		if err != nil {
			p.lost.Add(1)
			continue
		}
		pd.u.stored.Store(pd.n)
		p.stored.Add(1)
	}
}

// close waits for the acknowledgements of what was sent, then disconnects.
func (p *publisher) close() {
	close(p.pending)
	<-p.done
	p.nc.Close()
}

// errPaced is returned by pace when its context ends first.
var errPaced = errors.New("recovery: publishing stopped")

// pace calls send for i = 0, 1, … count-1 (count < 0: until ctx ends) at
// rate calls per second (0: as fast as send returns), and returns how long
// it took.
func pace(ctx context.Context, rate float64, count int64, send func(i int64) error) (time.Duration, error) {
	start := time.Now()
	for i := int64(0); count < 0 || i < count; {
		if ctx.Err() != nil {
			return time.Since(start), errPaced
		}
		if rate > 0 && i >= int64(time.Since(start).Seconds()*rate)+1 {
			time.Sleep(paceInterval)
			continue
		}
		if err := send(i); err != nil {
			if ctx.Err() != nil {
				return time.Since(start), errPaced
			}
			return time.Since(start), err
		}
		i++
	}
	return time.Since(start), nil
}
