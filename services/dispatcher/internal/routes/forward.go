package routes

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/sendapi"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Headers of the requests to a backend.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256 of the body with
	// DISPATCHER_ROUTES_SECRET: the backend checks it to know the envelope
	// comes from the dispatcher (see Sign).
	HeaderSignature = "X-Wsgate-Signature"
	// HeaderTimestamp is when the request was sent, in Unix seconds. It is
	// not signed; the envelope's "ts", inside the signed body, is what a
	// backend should check against replays.
	HeaderTimestamp = "X-Wsgate-Timestamp"
	// HeaderMsgID is the edge's Nats-Msg-Id, unique per client frame and the
	// same on every retry: a backend can drop duplicates with it.
	HeaderMsgID = "X-Wsgate-Msg-Id"
)

// Limits of a backend's answer.
const (
	// MaxResponseBytes bounds a backend's response body.
	MaxResponseBytes = 1 << 20
	// MaxSends bounds the "sends" of one response.
	MaxSends = 100
	// maxErrorMessage bounds the message a 4xx backend gives the client.
	maxErrorMessage = 200
)

// Timing of the backend requests.
const (
	retryBase     = 100 * time.Millisecond // first backoff, doubled at each retry
	retryMax      = 2 * time.Second        // longest backoff
	dialTimeout   = 5 * time.Second
	idleConnTTL   = 90 * time.Second
	maxIdlePerURL = 64
)

// Messages of the error replies a failed exchange gives the client. The
// backend's own text never reaches it, but for the {"error": ...} of a 4xx.
const (
	msgBadGateway = "Bad Gateway"
	msgTimeout    = "Gateway Timeout"
	msgBackend    = "Backend Error"
)

// Sign returns the X-Wsgate-Signature of body: "sha256=" and the hex
// HMAC-SHA256 of body with secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Options configure a Forwarder.
type Options struct {
	// Secret signs every request (DISPATCHER_ROUTES_SECRET).
	Secret []byte
	// Logger gets the backends' failures; nil discards.
	Logger *slog.Logger
	// Meter gets wsgate.dispatcher.route.requests, exposed as
	// wsgate_dispatcher_route_requests_total{route,result}; nil records
	// nothing.
	Meter metric.Meter
}

// Forwarder runs a Table's routes as dispatcher handlers. It is safe for
// concurrent use.
type Forwarder struct {
	table     *Table              // static after construction
	secret    []byte              // static after construction
	client    *http.Client        // static after construction
	transport *http.Transport     // static after construction; Close closes its idle connections
	log       *slog.Logger        // static after construction
	requests  metric.Int64Counter // route, result; static after construction
}

// NewForwarder returns the Forwarder of t.
func NewForwarder(t *Table, opts Options) (*Forwarder, error) {
	if len(opts.Secret) == 0 {
		return nil, errors.New("routes: no secret to sign requests with")
	}
	f := &Forwarder{table: t, secret: opts.Secret, log: opts.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	// Backends are the application's own services: no proxy, and no
	// redirects, since a 301/302 turns the POST into a GET and any redirect
	// sends the envelope to a URL the routes file does not name.
	f.transport = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: dialTimeout}).DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        maxIdlePerURL * 4,
		MaxIdleConnsPerHost: maxIdlePerURL,
		IdleConnTimeout:     idleConnTTL,
		TLSHandshakeTimeout: dialTimeout,
	}
	f.client = &http.Client{
		Transport:     f.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	meter := opts.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	f.requests = telemetry.Must(meter.Int64Counter("wsgate.dispatcher.route.requests",
		metric.WithDescription("Requests to route backends, by route and result (2xx, 3xx, 4xx, 5xx, timeout, unreachable, invalid); retries included.")))
	return f, nil
}

// Register adds a handler for each route to d: Handle for an action route,
// HandlePrefix for a prefix route.
func (f *Forwarder) Register(d *dispatcher.Dispatcher) error {
	for i, r := range f.table.Routes() {
		var err error
		if r.Prefix != "" {
			err = d.HandlePrefix(r.Prefix, f.Handler(r))
		} else {
			err = d.Handle(r.Action, f.Handler(r))
		}
		if err != nil {
			return fmt.Errorf("routes[%d]: %w", i, err)
		}
	}
	return nil
}

// Close releases the idle connections to the backends; call it once the
// dispatcher has drained.
func (f *Forwarder) Close() { f.transport.CloseIdleConnections() }

// Handler returns the dispatcher handler of r. It POSTs the envelope to
// r.URL and acts on the answer:
//
//   - 204, or 2xx with an empty body: nothing.
//   - 2xx with {"action": ..., "details": ...}: that reply to the
//     originating connection, with its ref; with "sends": [...], each send
//     (the /v1/send vocabulary) after it. Both may be present.
//   - 4xx or 5xx: <action>:error [status, message] to the originating
//     connection; the message is the 4xx body's {"error": "..."} (short,
//     printable) or else the status text.
//   - a timeout: [504, "Gateway Timeout"]; an unreachable backend, a
//     redirect or an invalid answer: [502, "Bad Gateway"].
//
// An idempotent route retries network errors, timeouts and 5xx answers up to
// r.Retries times with a growing, jittered backoff; others never retry, and
// for a reliable action their failure is final (dispatcher.Final): the
// inbound stream does not send it again either.
func (f *Forwarder) Handler(r Route) dispatcher.HandlerFunc {
	return func(ctx context.Context, m *dispatcher.Message) error {
		body, err := json.Marshal(m.Envelope)
		if err != nil {
			return fmt.Errorf("routes: encode envelope: %w", err)
		}
		res, err := f.exchange(ctx, r, m, body)
		if err == nil {
			err = f.apply(ctx, r, m, res)
		}
		if err != nil && m.ID != "" && !r.Idempotent && ctx.Err() == nil {
			// The inbound stream retries a reliable action's failure; a
			// route that is not idempotent is never sent twice, so its
			// failure is final: the error reply and the dead letter now.
			return dispatcher.Final(err)
		}
		return err
	}
}

// outcome kinds of one request.
const (
	kindOK          = "2xx"
	kindRedirect    = "3xx"
	kindRefused     = "4xx"
	kindFailed      = "5xx"
	kindTimeout     = "timeout"
	kindUnreachable = "unreachable"
	kindInvalid     = "invalid" // a 2xx answer too large to read
)

// result is the outcome of one request to a backend.
type result struct {
	kind   string
	status int    // 0 unless the backend answered
	body   []byte // the answer, at most MaxResponseBytes
	err    error  // why the request failed, for the log
}

// retryable reports whether an idempotent route may try again.
func (res result) retryable() bool {
	return res.kind == kindTimeout || res.kind == kindUnreachable || res.kind == kindFailed
}

// exchange sends body, retrying as r allows, and returns the final 2xx
// answer, or the error reply the client gets (a *dispatcher.Error), or ctx's
// error when the dispatcher gave up on its handlers.
func (f *Forwarder) exchange(ctx context.Context, r Route, m *dispatcher.Message, body []byte) (result, error) {
	signature := Sign(f.secret, body)
	tries := 1
	if r.Idempotent && m.ID == "" {
		// A reliable action is retried by the inbound stream, with its
		// backoff and dead letter; retrying here too would multiply them.
		tries += r.Retries
	}
	var (
		res result
		try int
	)
	for try = 1; ; try++ {
		res = f.attempt(ctx, r, m, body, signature)
		f.requests.Add(ctx, 1, metric.WithAttributes(
			attribute.String("route", r.Name()), attribute.String("result", res.kind)))
		if err := ctx.Err(); err != nil {
			return result{}, err
		}
		if !res.retryable() || try == tries {
			break
		}
		if !sleep(ctx, backoff(try)) {
			return result{}, ctx.Err()
		}
	}
	attrs := []any{"route", r.Name(), "action", m.Action, "connection", m.Connection,
		"result", res.kind, "status", res.status, "tries", try}
	switch res.kind {
	case kindOK:
		return res, nil
	case kindRefused:
		f.log.DebugContext(ctx, "route backend refused", attrs...)
		return result{}, dispatcher.NewError(res.status, refusal(res.status, res.body))
	case kindFailed:
		f.log.WarnContext(ctx, "route backend failed", attrs...)
		return result{}, dispatcher.NewError(res.status, statusText(res.status))
	case kindTimeout:
		f.log.WarnContext(ctx, "route backend timed out", append(attrs, "timeout", r.Timeout)...)
		return result{}, dispatcher.NewError(http.StatusGatewayTimeout, msgTimeout)
	}
	f.log.WarnContext(ctx, "route backend unusable", append(attrs, "err", res.err)...)
	return result{}, dispatcher.NewError(http.StatusBadGateway, msgBadGateway)
}

// attempt makes one request, bounded by r.Timeout.
func (f *Forwarder) attempt(ctx context.Context, r Route, m *dispatcher.Message, body []byte, signature string) result {
	actx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return result{kind: kindUnreachable, err: err} // the URL was validated: not expected
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	h.Set("User-Agent", "wsgate-dispatcher")
	h.Set(HeaderSignature, signature)
	h.Set(HeaderTimestamp, strconv.FormatInt(time.Now().Unix(), 10))
	if nh := m.Header(); nh != nil {
		for from, to := range map[string]string{
			wire.HeaderTraceparent: "traceparent",
			wire.HeaderTracestate:  "tracestate",
			wire.HeaderMsgID:       HeaderMsgID,
		} {
			if v := nh.Get(from); v != "" {
				h.Set(to, v)
			}
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return failed(actx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return failed(actx, err)
	}
	res := result{status: resp.StatusCode, body: data}
	switch {
	case resp.StatusCode >= 500:
		res.kind = kindFailed
	case resp.StatusCode >= 400:
		res.kind = kindRefused
	case resp.StatusCode >= 300:
		res.kind, res.err = kindRedirect, fmt.Errorf("backend answered %d; redirects are not followed", resp.StatusCode)
	case len(data) > MaxResponseBytes:
		res.kind, res.err = kindInvalid, fmt.Errorf("response is larger than %d bytes", MaxResponseBytes)
	default:
		res.kind = kindOK
	}
	return res
}

// failed classifies a request that got no complete answer.
func failed(actx context.Context, err error) result {
	if errors.Is(actx.Err(), context.DeadlineExceeded) {
		return result{kind: kindTimeout, err: err}
	}
	return result{kind: kindUnreachable, err: err}
}

// response is a backend's 2xx answer.
type response struct {
	Action  string            `json:"action"`
	Details json.RawMessage   `json:"details"`
	Sends   []json.RawMessage `json:"sends"`
}

// apply acts on a 2xx answer; an invalid one answers the client 502 and
// sends nothing.
func (f *Forwarder) apply(ctx context.Context, r Route, m *dispatcher.Message, res result) error {
	if len(bytes.TrimSpace(res.body)) == 0 {
		return nil
	}
	resp, sends, err := parseResponse(res.body)
	if err != nil {
		f.log.WarnContext(ctx, "route backend answered an invalid response", "route", r.Name(), "action", m.Action,
			"status", res.status, "err", err)
		return dispatcher.NewError(http.StatusBadGateway, msgBadGateway)
	}
	if resp.Action != "" {
		var details any // nil: absent, read as null
		if len(resp.Details) > 0 {
			details = resp.Details
		}
		if err := m.Reply(resp.Action, details); err != nil {
			return err
		}
	}
	for i := range sends {
		if err := sends[i].Do(ctx, m.Sender()); err != nil {
			return fmt.Errorf("routes: sends[%d]: %w", i, err)
		}
	}
	return nil
}

// parseResponse decodes and validates a whole 2xx answer, so that an invalid
// one sends nothing at all.
func parseResponse(data []byte) (response, []sendapi.Send, error) {
	var resp response
	if err := sendapi.Decode(data, &resp, "response"); err != nil {
		return response{}, nil, err
	}
	switch {
	case resp.Action == "" && len(resp.Details) > 0:
		return response{}, nil, errors.New(`"details" without "action"`)
	case resp.Action != "":
		if err := wire.ValidateOutboundAction(resp.Action); err != nil {
			return response{}, nil, fmt.Errorf(`"action": %w`, err)
		}
		if err := wire.ValidateOutboundDetails(resp.Action, resp.Details); err != nil {
			return response{}, nil, fmt.Errorf(`"details": %w`, err)
		}
	}
	if len(resp.Sends) > MaxSends {
		return response{}, nil, fmt.Errorf(`"sends" has %d entries; at most %d`, len(resp.Sends), MaxSends)
	}
	sends := make([]sendapi.Send, len(resp.Sends))
	for i, raw := range resp.Sends {
		if err := sendapi.Decode(raw, &sends[i], "send"); err != nil {
			return response{}, nil, fmt.Errorf("sends[%d]: %w", i, err)
		}
		if err := sends[i].Validate(); err != nil {
			return response{}, nil, fmt.Errorf("sends[%d]: %w", i, err)
		}
	}
	return resp, sends, nil
}

// refusal is the message of a 4xx answer: the backend's {"error": "..."},
// made short and printable, or else the status text.
func refusal(status int, body []byte) string {
	var v struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil {
		return statusText(status)
	}
	msg := strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(v.Error))
	if msg == "" {
		return statusText(status)
	}
	if utf8.RuneCountInString(msg) > maxErrorMessage {
		msg = string([]rune(msg)[:maxErrorMessage-1]) + "…"
	}
	return msg
}

// statusText is the text of an HTTP status, also for codes net/http does not
// name.
func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return msgBackend
}

// backoff is the pause before retry number try (1, 2, ...): retryBase
// doubled each time up to retryMax, half of it random so that replicas
// retrying together spread out.
func backoff(try int) time.Duration {
	d := retryMax
	if try < 8 {
		d = min(retryBase<<(try-1), retryMax)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d, or returns false when ctx is done first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
