// Package natsconn connects a wsgate service to NATS from the shared
// configuration (DESIGN.md §6): credentials, TLS, and reconnecting forever.
package natsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/internal/logging"
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
	// A server that vanishes without closing the connection (power loss, a
	// cut network) is noticed after maxPingsOut unanswered pings, one per
	// pingInterval, instead of nats.go's default of minutes.
	pingInterval = 5 * time.Second
	maxPingsOut  = 2
)

// Hooks are told about connection changes; nil hooks are skipped.
type Hooks struct {
	Disconnected func(err error)
	Reconnected  func()
}

// Connect returns a connection that reconnects forever. It does not fail when
// NATS is unreachable at start: it keeps trying in the background (use
// nc.IsConnected to report readiness). It fails on bad configuration, and
// when the server, reached at start, refuses the credentials or the TLS
// setup: retrying would not help, and failing names the problem at once.
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
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		// Reconnect forever also means past refused credentials: a rotated
		// creds file, or a server whose accounts are fixed, lets the
		// connection recover (each refusal is logged by the error handler).
		nats.IgnoreAuthErrorAbort(),
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
	auth, err := authOptions(cfg)
	if err != nil {
		return nil, err
	}
	opts = append(append(opts, auth...), extra...)

	// One attempt in the foreground tells a refusal from an absent server.
	nc, err := nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(false))...)
	switch {
	case err == nil:
		return nc, nil
	case refused(err):
		return nil, fmt.Errorf("NATS_URL %q: %w%s", logging.RedactURL(cfg.URL), err, using(cfg))
	}
	nc, retryErr := nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(true))...)
	if retryErr != nil {
		return nil, fmt.Errorf("NATS_URL %q: %w", logging.RedactURL(cfg.URL), retryErr)
	}
	log.Warn("nats not reachable yet; retrying in the background", "url", logging.RedactURL(cfg.URL), "err", err)
	return nc, nil
}

// authOptions are the credential and TLS options of cfg. Files are read
// here, so that a missing or unreadable one is named before connecting.
func authOptions(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case cfg.Creds != "":
		// nats.go reads the file at each connect, so a rotated file is
		// picked up on reconnect; reading it now only checks it is there.
		if _, err := os.ReadFile(cfg.Creds); err != nil {
			return nil, fmt.Errorf("NATS_CREDS: %w", err)
		}
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
		if _, err := os.ReadFile(cfg.TLSCA); err != nil {
			return nil, fmt.Errorf("NATS_TLS_CA: %w", err)
		}
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("NATS_TLS_CERT and NATS_TLS_KEY must be set together")
	}
	if cfg.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, fmt.Errorf("NATS_TLS_CERT, NATS_TLS_KEY: %w", err)
		}
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	return opts, nil
}

// refused reports whether err, from a connect attempt, means that the server
// was reached but refused the credentials or the TLS setup, or that a file
// of the configuration could not be read: nothing a retry can fix.
func refused(err error) bool {
	for _, target := range []error{
		nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired,
		nats.ErrSecureConnRequired, nats.ErrSecureConnWanted,
		// A failed handshake, or the server closing the connection right
		// after it: how a refused client certificate may show.
		nats.ErrTLS,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var (
		op        *net.OpError
		verify    *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		file      *fs.PathError
	)
	// crypto/tls reports the server's TLS alerts (e.g. "certificate
	// required") as a *net.OpError of Op "remote error".
	if errors.As(err, &op) && op.Op == "remote error" {
		return true
	}
	return errors.As(err, &verify) || errors.As(err, &unknownCA) ||
		errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &file)
}

// using names the credential and TLS variables in effect, for an error
// message: " (using NATS_USER, NATS_PASSWORD)". It never shows a value.
func using(cfg Config) string {
	var names []string
	for _, v := range []struct{ name, value string }{
		{"NATS_CREDS", cfg.Creds}, {"NATS_NKEY_FILE", cfg.NKeyFile},
		{"NATS_USER", cfg.User}, {"NATS_PASSWORD", cfg.Password}, {"NATS_TOKEN", cfg.Token},
		{"NATS_TLS_CA", cfg.TLSCA}, {"NATS_TLS_CERT", cfg.TLSCert}, {"NATS_TLS_KEY", cfg.TLSKey},
	} {
		if v.value != "" {
			names = append(names, v.name)
		}
	}
	if len(names) == 0 {
		return " (no credentials or TLS configured)"
	}
	return " (using " + strings.Join(names, ", ") + ")"
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
