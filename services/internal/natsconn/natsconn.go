// Package natsconn connects a wsgate service to NATS from the shared
// configuration (DESIGN.md §6): credentials, TLS, and reconnecting forever.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Config is the NATS part of every service's configuration.
type Config struct {
	URL      string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222" desc:"NATS server URL(s), comma separated"`
	Creds    string `envconfig:"NATS_CREDS" desc:"path of a NATS credentials file (JWT + NKey seed)"`
	NKeyFile string `envconfig:"NATS_NKEY_FILE" desc:"path of a file holding an NKey seed"`
	User     string `envconfig:"NATS_USER" desc:"NATS user name (with NATS_PASSWORD)"`
	Password string `envconfig:"NATS_PASSWORD" secret:"true" desc:"NATS password"`
	Token    string `envconfig:"NATS_TOKEN" secret:"true" desc:"NATS authentication token"`
	TLSCA    string `envconfig:"NATS_TLS_CA" desc:"path of a PEM CA bundle that signs the NATS server certificate"`
	TLSCert  string `envconfig:"NATS_TLS_CERT" desc:"path of a PEM client certificate for mutual TLS (with NATS_TLS_KEY)"`
	TLSKey   string `envconfig:"NATS_TLS_KEY" desc:"path of the PEM key of NATS_TLS_CERT"`
}

// Timing of the connection: how long one connect attempt may take, and how
// long to wait between reconnect attempts (plus jitter).
const (
	connectTimeout  = 2 * time.Second
	reconnectWait   = 500 * time.Millisecond
	reconnectJitter = 500 * time.Millisecond
	// reconnectBuf is how much the client buffers while disconnected.
	reconnectBuf = 8 << 20
)

// Hooks are told about connection changes; nil hooks are skipped.
type Hooks struct {
	Disconnected func(err error)
	Reconnected  func()
}

// Connect returns a connection that reconnects forever. It does not fail when
// NATS is unreachable at start: it keeps trying in the background (use
// nc.IsConnected to report readiness). It fails only on bad configuration.
func Connect(cfg Config, name string, log *slog.Logger, hooks Hooks, extra ...nats.Option) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.ReconnectBufSize(reconnectBuf),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
			if hooks.Disconnected != nil {
				hooks.Disconnected(err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			if hooks.Reconnected != nil {
				hooks.Reconnected()
			}
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	switch {
	case cfg.Creds != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_FILE: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("NATS_TLS_CERT and NATS_TLS_KEY must be set together")
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(cfg.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("NATS_URL %q: %w", cfg.URL, err)
	}
	return nc, nil
}

// Drain drains nc and waits until it is closed or ctx is done; it closes nc
// in the end in any case.
func Drain(ctx context.Context, nc *nats.Conn) error {
	defer nc.Close()
	if nc.IsClosed() {
		return nil
	}
	if !nc.IsConnected() {
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		return fmt.Errorf("nats drain: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nats drain: %w", ctx.Err())
	}
}
