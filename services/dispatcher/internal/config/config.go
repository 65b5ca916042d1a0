// Package config reads the dispatcher service's configuration from the
// environment (DESIGN.md §6). It is the only package of the dispatcher that
// reads the environment; everything else receives a Config.
package config

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/kelseyhightower/envconfig"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/natsconn"
	"github.com/wsgate/wsgate/services/internal/presencekv"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Config is everything the dispatcher service can be told.
type Config struct {
	natsconn.Config
	logging.Settings
	telemetry.OTLP

	Prefix      string `envconfig:"WS_SUBJECT_PREFIX" default:"ws" desc:"prefix of every NATS subject wsgate uses; the same on every edge and dispatcher"`
	Addr        string `envconfig:"DISPATCHER_ADDR" default:":8081" desc:"listen address of the dispatcher's HTTP server: /healthz, /readyz, /metrics, GET /v1/routes and the HTTP send API"`
	Queue       string `envconfig:"DISPATCHER_QUEUE" default:"wsgate-dispatcher" desc:"NATS queue group of the dispatcher replicas; each inbound message goes to one of them"`
	Concurrency int    `envconfig:"DISPATCHER_CONCURRENCY" default:"64" desc:"handlers one replica runs at once; more messages wait in the NATS client's buffer"`

	// Kept as strings, not lists, so that Config stays comparable; see
	// APIKeyList.
	APIKeys      string `envconfig:"DISPATCHER_API_KEYS" secret:"true" desc:"comma-separated bearer keys of the HTTP send API (POST /v1/send, /v1/close), each at least 16 characters; empty: the API is not mounted (404)"`
	APIMaxBody   int64  `envconfig:"DISPATCHER_API_MAX_BODY" default:"1048576" desc:"largest request body of the HTTP send API, in bytes (0: 1 MiB); larger gets 413"`
	RoutesFile   string `envconfig:"DISPATCHER_ROUTES_FILE" desc:"YAML (.yaml, .yml) or JSON (.json) file of HTTP routes: actions or action prefixes POSTed to backend URLs"`
	RoutesSecret string `envconfig:"DISPATCHER_ROUTES_SECRET" secret:"true" desc:"shared secret of the X-Wsgate-Signature HMAC-SHA256 on requests to route backends, at least 16 characters; required with DISPATCHER_ROUTES_FILE"`

	Presence       string        `envconfig:"WS_PRESENCE" default:"off" desc:"presence and stored memberships in NATS KV: off, memory or file (JetStream storage); the same on every edge and dispatcher"`
	PresenceBucket string        `envconfig:"WS_PRESENCE_BUCKET" default:"wsgate_presence" desc:"NATS KV bucket of presence: edge leases, connections, online users"`
	PresenceGrace  time.Duration `envconfig:"WS_PRESENCE_GRACE" default:"5s" desc:"a user with no connection anywhere for this long gets Client/offline (a page reload within it emits neither offline nor online)"`
	Inbound        string        `envconfig:"WS_INBOUND" default:"off" desc:"reliable inbound (DESIGN §8): off, or memory|file (the edges' stream storage); when on, handlers also consume <prefix>.inq.<action> from the inbound stream"`
	InboundStream  string        `envconfig:"WS_INBOUND_STREAM" default:"WS_INBOUND" desc:"name of the inbound JetStream stream the edges create"`
	MaxDeliver     int           `envconfig:"DISPATCHER_MAX_DELIVER" default:"5" desc:"deliveries of a reliable action before it goes to <prefix>.dead.<action>"`
	RetryBackoff   string        `envconfig:"DISPATCHER_RETRY_BACKOFF" default:"1s,2s,5s,10s" desc:"pauses before the 2nd, 3rd, ... delivery of a failed reliable action (comma separated; the last repeats)"`
	AckWait        time.Duration `envconfig:"DISPATCHER_ACK_WAIT" default:"30s" desc:"how long a delivered reliable action may go unanswered (a killed dispatcher) before it is delivered again"`
	History        string        `envconfig:"WS_HISTORY" default:"off" desc:"off, memory or file: with history on (as on the edges), sends to stored targets go through JetStream and wait for the history stream's acknowledgement"`

	// PrefixConsumersMax bounds the durable consumers made for reliable
	// actions found under prefix routes (dispatcher.ReliableOptions.MaxPrefixConsumers).
	PrefixConsumersMax int `envconfig:"DISPATCHER_PREFIX_CONSUMERS_MAX" default:"1000" desc:"reliable actions under prefix routes that get a durable consumer of their own; beyond it further ones are not consumed from the stream (logged once, counted as limited)"`
}

// InboundOn reports whether reliable inbound is on (WS_INBOUND memory or file).
func (c Config) InboundOn() bool { return c.Inbound == "memory" || c.Inbound == "file" }

// Reliable returns the SDK options of reliable inbound; only valid after
// Validate.
func (c Config) Reliable() dispatcher.ReliableOptions {
	backoff, _ := c.backoffList()
	return dispatcher.ReliableOptions{Stream: c.InboundStream, MaxDeliver: c.MaxDeliver, Backoff: backoff, AckWait: c.AckWait,
		MaxPrefixConsumers: c.PrefixConsumersMax}
}

// backoffList parses DISPATCHER_RETRY_BACKOFF.
func (c Config) backoffList() ([]time.Duration, error) {
	var list []time.Duration
	for part := range strings.SplitSeq(c.RetryBackoff, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("DISPATCHER_RETRY_BACKOFF: %q is not a positive duration", strings.TrimSpace(part))
		}
		list = append(list, d)
	}
	return list, nil
}

// validateInbound checks the reliable inbound settings.
func (c Config) validateInbound() error {
	switch c.Inbound {
	case "", "off":
		return nil
	case "memory", "file":
	default:
		return fmt.Errorf("WS_INBOUND: want off, memory or file, got %q", c.Inbound)
	}
	if _, err := c.backoffList(); err != nil {
		return err
	}
	if c.MaxDeliver < 1 {
		return fmt.Errorf("DISPATCHER_MAX_DELIVER: must be at least 1, got %d", c.MaxDeliver)
	}
	if c.PrefixConsumersMax < 1 {
		return fmt.Errorf("DISPATCHER_PREFIX_CONSUMERS_MAX: must be at least 1, got %d", c.PrefixConsumersMax)
	}
	if err := dispatcher.WithReliable(c.Reliable())(&dispatcher.Options{}); err != nil {
		return fmt.Errorf("WS_INBOUND_STREAM or DISPATCHER_ACK_WAIT: %w", err)
	}
	return nil
}

// HistoryOn reports whether WS_HISTORY is on.
func (c Config) HistoryOn() bool { return c.History != "" && c.History != "off" }

// MinSecretLen is the shortest API key or routes secret accepted: shorter
// ones are guessable.
const MinSecretLen = 16

// APIKeyList returns the keys of DISPATCHER_API_KEYS, trimmed, without empty
// entries; none means the HTTP send API is off.
func (c Config) APIKeyList() []string {
	var keys []string
	for k := range strings.SplitSeq(c.APIKeys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// Load reads the configuration from the environment and checks it. Its error
// is one line that names the variable at fault.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return Config{}, fmt.Errorf("%s: %q is not a valid %s", pe.KeyName, pe.Value, pe.TypeName)
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks the values envconfig cannot, naming the variable at fault.
// Configurations built in code (e.g. by a dev binary) go through it too.
func (c Config) Validate() error {
	if _, err := logging.New(c.Settings, io.Discard); err != nil {
		return err // names LOG_LEVEL or LOG_FORMAT
	}
	if c.Addr == "" {
		return errors.New("DISPATCHER_ADDR: empty")
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("DISPATCHER_CONCURRENCY: must be at least 1, got %d", c.Concurrency)
	}
	if err := c.validatePresence(); err != nil {
		return err
	}
	if err := c.validateIntegration(); err != nil {
		return err
	}
	if err := c.validateInbound(); err != nil {
		return err
	}
	switch c.History {
	case "", "off", "memory", "file":
	default:
		return fmt.Errorf("WS_HISTORY: %q is not off, memory or file", c.History)
	}
	// The SDK owns the rules of queue names and prefixes; ask it.
	if err := dispatcher.WithQueue(c.Queue)(&dispatcher.Options{}); err != nil {
		return fmt.Errorf("DISPATCHER_QUEUE: %w", err)
	}
	if err := dispatcher.WithPrefix(c.Prefix)(&dispatcher.Options{}); err != nil {
		return fmt.Errorf("WS_SUBJECT_PREFIX: %w", err)
	}
	return nil
}

// validateIntegration checks the HTTP send API and routes settings. Its
// errors never quote a key or the secret.
func (c Config) validateIntegration() error {
	keys := c.APIKeyList()
	if strings.TrimSpace(c.APIKeys) != "" && len(keys) == 0 {
		return errors.New("DISPATCHER_API_KEYS: holds no key, only commas and spaces")
	}
	for i, k := range keys {
		switch {
		case len(k) < MinSecretLen:
			return fmt.Errorf("DISPATCHER_API_KEYS: key %d is shorter than %d characters", i+1, MinSecretLen)
		case strings.ContainsFunc(k, unicode.IsSpace):
			return fmt.Errorf("DISPATCHER_API_KEYS: key %d holds white space", i+1)
		}
	}
	if c.APIMaxBody < 0 {
		return fmt.Errorf("DISPATCHER_API_MAX_BODY: must be positive (0: the default, 1 MiB), got %d", c.APIMaxBody)
	}
	switch {
	case c.RoutesFile != "" && c.RoutesSecret == "":
		return errors.New("DISPATCHER_ROUTES_SECRET: required with DISPATCHER_ROUTES_FILE, to sign the requests to the backends")
	case c.RoutesFile != "" && len(c.RoutesSecret) < MinSecretLen:
		return fmt.Errorf("DISPATCHER_ROUTES_SECRET: shorter than %d characters", MinSecretLen)
	}
	return nil
}

// validatePresence checks WS_PRESENCE and its settings; empty values (a
// Config built in code) mean the defaults.
func (c Config) validatePresence() error {
	mode := c.Presence
	if mode == "" {
		mode = presencekv.Off
	}
	if err := presencekv.Validate(mode); err != nil {
		return fmt.Errorf("WS_PRESENCE: %w", err)
	}
	if c.PresenceBucket != "" {
		if err := presencekv.ValidateBucket(c.PresenceBucket); err != nil {
			return fmt.Errorf("WS_PRESENCE_BUCKET: %w", err)
		}
	}
	if c.PresenceGrace < 0 {
		return fmt.Errorf("WS_PRESENCE_GRACE: must not be negative, got %s", c.PresenceGrace)
	}
	return nil
}
