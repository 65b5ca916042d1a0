// Package config reads the dispatcher service's configuration from the
// environment (DESIGN.md §6). It is the only package of the dispatcher that
// reads the environment; everything else receives a Config.
package config

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/kelseyhightower/envconfig"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/natsconn"
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

	History string `envconfig:"WS_HISTORY" default:"off" desc:"off, memory or file: with history on (as on the edges), sends to stored targets go through JetStream and wait for the history stream's acknowledgement"`
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
	if err := c.validateIntegration(); err != nil {
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
