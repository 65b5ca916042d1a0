package sendapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Paths of the API.
const (
	PathSend  = "/v1/send"
	PathClose = "/v1/close"
)

// DefaultMaxBody is the default of Config.MaxBody (DISPATCHER_API_MAX_BODY).
const DefaultMaxBody = 1 << 20

// Config is what an API needs.
type Config struct {
	// Keys are the accepted bearer keys; at least one.
	Keys []string
	// MaxBody is the largest request body, in bytes; larger gets 413.
	MaxBody int64
	// Sender publishes what the API accepts.
	Sender *dispatcher.Sender
	// Connected reports whether NATS is connected; while it is not, requests
	// get 503 rather than being buffered without a word.
	Connected func() bool
	// Logger gets refusals (debug) and failures; never a key. Nil discards.
	Logger *slog.Logger
	// Meter gets wsgate.dispatcher.api.requests, exposed as
	// wsgate_dispatcher_api_requests_total{path,code}; nil records nothing.
	Meter metric.Meter
}

// API serves the HTTP send API. Its handlers are safe for concurrent use.
type API struct {
	keys      [][sha256.Size]byte // SHA-256 of each key; static after construction
	maxBody   int64               // static after construction
	sender    *dispatcher.Sender  // static after construction
	connected func() bool         // static after construction
	log       *slog.Logger        // static after construction
	requests  metric.Int64Counter // path, code; static after construction
}

// New returns the API of cfg.
func New(cfg Config) (*API, error) {
	if len(cfg.Keys) == 0 {
		return nil, errors.New("sendapi: no keys")
	}
	if cfg.Sender == nil || cfg.Connected == nil {
		return nil, errors.New("sendapi: Sender and Connected are required")
	}
	a := &API{
		maxBody:   cfg.MaxBody,
		sender:    cfg.Sender,
		connected: cfg.Connected,
		log:       cfg.Logger,
	}
	if a.maxBody <= 0 {
		a.maxBody = DefaultMaxBody
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for _, k := range cfg.Keys {
		if k == "" {
			return nil, errors.New("sendapi: empty key")
		}
		a.keys = append(a.keys, sha256.Sum256([]byte(k)))
	}
	meter := cfg.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	a.requests = telemetry.Must(meter.Int64Counter("wsgate.dispatcher.api.requests",
		metric.WithDescription("Answers of the HTTP send API, by path and status code.")))
	return a, nil
}

// Register mounts POST /v1/send, /v1/close, /v1/join and /v1/leave on mux,
// behind the bearer keys.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle(PathSend, Only(http.MethodPost, a.Authorize(http.HandlerFunc(a.serveSend))))
	mux.Handle(PathClose, Only(http.MethodPost, a.Authorize(http.HandlerFunc(a.serveClose))))
	mux.Handle(PathJoin, Only(http.MethodPost, a.Authorize(http.HandlerFunc(a.serveJoin))))
	mux.Handle(PathLeave, Only(http.MethodPost, a.Authorize(http.HandlerFunc(a.serveLeave))))
}

// Authorize lets through the requests that carry one of the keys as
// "Authorization: Bearer <key>" and answers the others 401. Keys are
// compared in constant time, through their hashes, so neither a key nor its
// length leaks through timing.
func (a *API) Authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		challenge := `Bearer realm="wsgate"`
		reason := ""
		scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		key = strings.TrimSpace(key)
		switch {
		case scheme == "":
			reason = `missing "Authorization: Bearer <key>"`
		case !strings.EqualFold(scheme, "Bearer") || key == "":
			reason = `Authorization must be "Bearer <key>"`
			challenge += `, error="invalid_request"`
		case !a.known(key):
			reason = "unknown bearer key"
			challenge += `, error="invalid_token"`
		}
		if reason != "" {
			a.log.DebugContext(r.Context(), "api request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", reason)
			w.Header().Set("WWW-Authenticate", challenge)
			a.fail(w, r, http.StatusUnauthorized, reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// known reports whether key is one of the keys, looking at all of them.
func (a *API) known(key string) bool {
	sum := sha256.Sum256([]byte(key))
	match := 0
	for i := range a.keys {
		match |= subtle.ConstantTimeCompare(sum[:], a.keys[i][:])
	}
	return match == 1
}

func (a *API) serveSend(w http.ResponseWriter, r *http.Request) {
	var s Send
	if !a.decode(w, r, &s, s.Validate) {
		return
	}
	a.do(w, r, func(ctx context.Context) (uint64, error) { return s.Deliver(ctx, a.sender) },
		"target", s.Target, "action", s.Action)
}

func (a *API) serveClose(w http.ResponseWriter, r *http.Request) {
	var c Close
	if !a.decode(w, r, &c, c.Validate) {
		return
	}
	a.do(w, r, func(ctx context.Context) (uint64, error) { return 0, c.Do(ctx, a.sender) }, "target", c.Target)
}

// decode reads the body into v and validates it, answering 413 or 400 when
// that fails.
func (a *API) decode(w http.ResponseWriter, r *http.Request, v any, validate func() error) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		a.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", a.maxBody))
		return false
	case err != nil:
		a.fail(w, r, http.StatusBadRequest, "cannot read body: "+err.Error())
		return false
	}
	if err := Decode(data, v, "body"); err != nil {
		a.fail(w, r, http.StatusBadRequest, err.Error())
		return false
	}
	if err := validate(); err != nil {
		a.fail(w, r, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// do runs a validated request: 503 while NATS is not connected (core NATS
// would buffer the message and maybe drop it: the caller should know), else
// 202 once published, with the history sequence ("seq") when the history
// stream stored it, and 503 when history is on and it did not.
func (a *API) do(w http.ResponseWriter, r *http.Request, send func(context.Context) (uint64, error), attrs ...any) {
	if !a.connected() {
		a.fail(w, r, http.StatusServiceUnavailable, "NATS is not connected; nothing was sent")
		return
	}
	// Once accepted, a request with many ids is sent whole even if the
	// caller hangs up.
	seq, err := send(context.WithoutCancel(r.Context()))
	if err != nil {
		if errors.Is(err, dispatcher.ErrNotStored) {
			a.log.WarnContext(r.Context(), "api send not stored", append(attrs, "err", err)...)
			a.fail(w, r, http.StatusServiceUnavailable, "the history stream did not store the message; it may not be delivered"+sentBefore(err))
			return
		}
		if errors.Is(err, dispatcher.ErrPublish) {
			a.log.WarnContext(r.Context(), "api send failed", append(attrs, "err", err)...)
			a.fail(w, r, http.StatusServiceUnavailable, "NATS refused the message; it may be partly sent"+sentBefore(err))
			return
		}
		a.log.ErrorContext(r.Context(), "api send failed", append(attrs, "err", err)...)
		a.fail(w, r, http.StatusInternalServerError, "internal error")
		return
	}
	a.log.DebugContext(r.Context(), "api request accepted", append(attrs, "path", r.URL.Path)...)
	if seq > 0 {
		a.write(w, r, http.StatusAccepted, map[string]any{"status": "accepted", "seq": seq})
		return
	}
	a.write(w, r, http.StatusAccepted, map[string]string{"status": "accepted"})
}

// fail answers {"error": reason}.
func (a *API) fail(w http.ResponseWriter, r *http.Request, code int, reason string) {
	a.write(w, r, code, map[string]string{"error": reason})
}

// write answers v as JSON with code, and counts the answer.
func (a *API) write(w http.ResponseWriter, r *http.Request, code int, v any) {
	a.requests.Add(r.Context(), 1, metric.WithAttributes(
		attribute.String("path", r.URL.Path), attribute.String("code", strconv.Itoa(code))))
	WriteJSON(w, code, v)
}

// WriteJSON answers v as JSON with code, not to be cached or sniffed.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	// The client may be gone; there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// Only lets through requests of method and answers the others 405 with an
// Allow header and a JSON reason, like the rest of the API.
func Only(method string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{
				"error": fmt.Sprintf("method %s is not allowed: use %s", r.Method, method),
			})
			return
		}
		next.ServeHTTP(w, r)
	})
}
