package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
)

// Identity is who a connection belongs to, as an auth callout answers it
// (DESIGN.md §3). User is required; Expires zero means no expiry.
type Identity struct {
	User     string
	Session  string
	Groups   []string
	Language string
	Expires  time.Time
	Props    map[string]string
}

// CalloutRequest is what an edge asks: the upgrade's cookies, selected
// headers, remote address and token.
type CalloutRequest = wire.CalloutRequest

// CalloutFunc identifies a connection. Returning a *Error refuses it with
// that code (401: bad credentials, closes 4401; 403: closes 4403); any other
// error is logged and answered 503, which the edge turns into close 1013
// ("try later").
type CalloutFunc func(ctx context.Context, req *CalloutRequest) (Identity, error)

// CalloutResponder answers auth callout requests until Drain.
type CalloutResponder struct {
	sub  *nats.Subscription
	sem  chan struct{}
	busy sync.WaitGroup
}

// AuthCallout answers the edges' auth callout requests on subject (the
// edges' EDGE_AUTH_CALLOUT_SUBJECT) with fn, in the queue group of opts, at
// most Concurrency at once. It is the reference responder: any NATS client
// answering the same JSON (api/schemas/callout-response.json) will do.
func AuthCallout(nc *nats.Conn, subject string, fn CalloutFunc, opts ...Option) (*CalloutResponder, error) {
	if nc == nil {
		return nil, ErrNilConn
	}
	if fn == nil {
		return nil, ErrNilHandler
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	r := &CalloutResponder{sem: make(chan struct{}, o.Concurrency)}
	sub, err := nc.QueueSubscribe(subject, o.Queue, func(msg *nats.Msg) {
		r.sem <- struct{}{}
		r.busy.Add(1)
		go func() {
			defer func() { <-r.sem; r.busy.Done() }()
			reply := answerCallout(fn, msg.Data, o)
			if err := msg.Respond(reply); err != nil {
				o.Logger.Warn("auth callout reply failed", "err", err)
			}
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("%w: subscribe %s: %w", ErrPublish, subject, err)
	}
	r.sub = sub
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("%w: subscribe %s: %w", ErrPublish, subject, err)
	}
	return r, nil
}

// Drain stops taking requests and waits for the ones being answered.
func (r *CalloutResponder) Drain() error {
	err := r.sub.Drain()
	for r.sub.IsValid() {
		time.Sleep(5 * time.Millisecond) // nats.go offers no drain-done signal per subscription
	}
	r.busy.Wait()
	return err
}

func answerCallout(fn CalloutFunc, data []byte, o Options) (reply []byte) {
	refuse := func(code int, msg string) []byte {
		b, _ := json.Marshal(wire.CalloutResponse{Error: &wire.CalloutError{Code: code, Message: msg}})
		return b
	}
	defer func() {
		if p := recover(); p != nil {
			o.Logger.Error("auth callout panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			reply = refuse(wire.CodeUnavailable, "identity service error")
		}
	}()
	var req CalloutRequest
	if err := json.Unmarshal(data, &req); err != nil {
		o.Logger.Warn("auth callout request is not JSON", "err", err)
		return refuse(wire.CodeBadRequest, "malformed callout request")
	}
	id, err := fn(context.Background(), &req)
	var we *Error
	switch {
	case errors.As(err, &we) && wire.ValidErrorCode(we.Code):
		return refuse(we.Code, we.Message)
	case err != nil:
		o.Logger.Error("auth callout failed", "err", err)
		return refuse(wire.CodeUnavailable, "identity service error")
	}
	resp := wire.CalloutResponse{User: id.User, Session: id.Session, Groups: id.Groups, Language: id.Language, Props: id.Props}
	if !id.Expires.IsZero() {
		resp.Expires = id.Expires.Unix()
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return refuse(wire.CodeUnavailable, "identity service error")
	}
	return b
}
