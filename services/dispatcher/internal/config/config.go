// Package config reads the dispatcher service's configuration from the
// environment (DESIGN.md §6). It is the only package of the dispatcher that
// reads the environment; everything else receives a Config.
package config

import (
	"errors"
	"fmt"
	"io"

	"github.com/kelseyhightower/envconfig"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/natsconn"
)

// Config is everything the dispatcher service can be told.
type Config struct {
	natsconn.Config
	logging.Settings

	Prefix      string `envconfig:"WS_SUBJECT_PREFIX" default:"ws" desc:"prefix of every NATS subject wsgate uses; the same on every edge and dispatcher"`
	Addr        string `envconfig:"DISPATCHER_ADDR" default:":8081" desc:"listen address of the dispatcher's HTTP server: /healthz, /readyz and /metrics"`
	Queue       string `envconfig:"DISPATCHER_QUEUE" default:"wsgate-dispatcher" desc:"NATS queue group of the dispatcher replicas; each inbound message goes to one of them"`
	Concurrency int    `envconfig:"DISPATCHER_CONCURRENCY" default:"64" desc:"handlers one replica runs at once; more messages wait in the NATS client's buffer"`
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
	// The SDK owns the rules of queue names and prefixes; ask it.
	if err := dispatcher.WithQueue(c.Queue)(&dispatcher.Options{}); err != nil {
		return fmt.Errorf("DISPATCHER_QUEUE: %w", err)
	}
	if err := dispatcher.WithPrefix(c.Prefix)(&dispatcher.Options{}); err != nil {
		return fmt.Errorf("WS_SUBJECT_PREFIX: %w", err)
	}
	return nil
}
