// Package config reads the edge's configuration from the environment
// (DESIGN.md §6). It is the only package of the edge that reads it.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/natsconn"
	"github.com/wsgate/wsgate/services/internal/presencekv"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Config is everything the edge can be told. Zero values of optional fields
// mean "off" as documented on each field.
type Config struct {
	natsconn.Config
	logging.Settings
	telemetry.OTLP
	Prefix string `envconfig:"WS_SUBJECT_PREFIX" default:"ws" desc:"prefix of every NATS subject wsgate uses"`

	Addr             string        `envconfig:"EDGE_ADDR" default:":8080" desc:"listen address of WebSocket, health and metrics HTTP"`
	Path             string        `envconfig:"EDGE_PATH" default:"/ws" desc:"HTTP path of the WebSocket endpoint"`
	ID               string        `envconfig:"EDGE_ID" desc:"this edge's id in subjects and connection ids (default: host name, made subject-safe)"`
	AllowedOrigins   []string      `envconfig:"EDGE_ALLOWED_ORIGINS" desc:"comma-separated Origin allowlist (https://app.example, https://*.example); * allows any; empty allows same-host and non-browser clients"`
	AllowAnonymous   bool          `envconfig:"EDGE_ALLOW_ANONYMOUS" default:"false" desc:"accept connections without a token (empty user)"`
	JWTSecret        string        `envconfig:"EDGE_JWT_SECRET" secret:"true" desc:"HMAC secret of HS256/384/512 tokens"`
	JWTPublicKeyFile string        `envconfig:"EDGE_JWT_PUBLIC_KEY_FILE" desc:"PEM public key (RSA, ECDSA or Ed25519) of RS*/PS*/ES*/EdDSA tokens"`
	JWTJWKSURL       string        `envconfig:"EDGE_JWT_JWKS_URL" desc:"URL of a JWKS (RS*, PS*, ES*, EdDSA keys chosen by the token's kid)"`
	JWKSRefresh      time.Duration `envconfig:"EDGE_JWT_JWKS_REFRESH" default:"10m" desc:"refetch the JWKS this often"`
	JWKSMinInterval  time.Duration `envconfig:"EDGE_JWT_JWKS_MIN_INTERVAL" default:"30s" desc:"a token with an unknown kid refetches the JWKS at most once per this interval"`
	JWTIssuer        string        `envconfig:"EDGE_JWT_ISSUER" desc:"required iss claim, when set"`
	JWTAudience      string        `envconfig:"EDGE_JWT_AUDIENCE" desc:"required aud claim, when set"`
	AuthCookie       string        `envconfig:"EDGE_AUTH_COOKIE" default:"wsgate_token" desc:"name of the cookie that may carry the token"`
	CalloutSubject   string        `envconfig:"EDGE_AUTH_CALLOUT_SUBJECT" desc:"NATS subject of the auth callout: the application identifies connections from their cookies, headers and token"`
	CalloutTimeout   time.Duration `envconfig:"EDGE_AUTH_CALLOUT_TIMEOUT" default:"2s" desc:"how long the callout may take; past it the connection is closed with 1013"`
	CalloutCacheSize int           `envconfig:"EDGE_AUTH_CALLOUT_CACHE_SIZE" default:"10000" desc:"callout replies cached per edge, by credential (0 = no cache)"`
	CalloutCacheTTL  time.Duration `envconfig:"EDGE_AUTH_CALLOUT_CACHE_TTL" default:"30s" desc:"how long a callout identity is cached (never past its expires; refusals 5s at most)"`
	AuthTimeout      time.Duration `envconfig:"EDGE_AUTH_TIMEOUT" default:"10s" desc:"close 4408 when a connection is not authenticated within this time"`
	MaxMessageBytes  int64         `envconfig:"EDGE_MAX_MESSAGE_BYTES" default:"65536" desc:"largest frame a client may send; larger closes with 1009"`
	SendQueue        int           `envconfig:"EDGE_SEND_QUEUE" default:"256" desc:"frames queued per connection; a full queue closes it with 4500 (slow consumer)"`
	PingInterval     time.Duration `envconfig:"EDGE_PING_INTERVAL" default:"20s" desc:"protocol ping period; a peer silent for 2 periods is dropped"`
	RateLimit        float64       `envconfig:"EDGE_RATE_LIMIT" default:"50" desc:"frames per second a connection may send (0 = unlimited)"`
	RateBurst        int           `envconfig:"EDGE_RATE_BURST" default:"100" desc:"burst of EDGE_RATE_LIMIT"`
	MaxConnections   int           `envconfig:"EDGE_MAX_CONNECTIONS" default:"0" desc:"connections this edge accepts (0 = unlimited); beyond, HTTP 503"`
	MaxPerUser       int           `envconfig:"EDGE_MAX_CONNECTIONS_PER_USER" default:"100" desc:"connections one user may hold on this edge (0 = unlimited); beyond, authentication fails with 429 and close 1013"`
	DrainTimeout     time.Duration `envconfig:"EDGE_DRAIN_TIMEOUT" default:"10s" desc:"on shutdown, clients are closed with 1012 spread over this time"`
	HandshakeTimeout time.Duration `envconfig:"EDGE_HANDSHAKE_TIMEOUT" default:"10s" desc:"time allowed to read the upgrade request and complete the handshake"`
	MaxHeaderBytes   int           `envconfig:"EDGE_MAX_HEADER_BYTES" default:"16384" desc:"largest upgrade request header accepted"`
	AuthConcurrency  int           `envconfig:"EDGE_AUTH_CONCURRENCY" default:"512" desc:"authentications (token check or callout, then subscription confirmation) in progress at once (0 = unlimited)"`
	AuthQueue        int           `envconfig:"EDGE_AUTH_QUEUE" default:"8192" desc:"authentications waiting for one of EDGE_AUTH_CONCURRENCY; beyond, the connection is answered 503 and closed 1013 (try later)"`
	Compression      string        `envconfig:"EDGE_COMPRESSION" default:"off" desc:"on or off: negotiate permessage-deflate (RFC 7692) with clients that offer it; off by default because a compressed message's length can reveal a secret it carries next to text an attacker chooses (BREACH), which only the application can rule out"`

	// Rooms and presence (DESIGN §9).
	Presence       string        `envconfig:"WS_PRESENCE" default:"off" desc:"off, memory or file: joined groups and presence in NATS KV with that JetStream storage; off: a join applies only to the connections open at that moment, presence requests are answered 503"`
	MembersBucket  string        `envconfig:"WS_MEMBERS_BUCKET" default:"wsgate_members" desc:"NATS KV bucket of the joined groups of users and sessions (WS_PRESENCE on)"`
	PresenceBucket string        `envconfig:"WS_PRESENCE_BUCKET" default:"wsgate_presence" desc:"NATS KV bucket of presence: edge leases, connections, online users"`
	PresenceLease  time.Duration `envconfig:"WS_PRESENCE_LEASE" default:"10s" desc:"TTL of an edge's presence lease, renewed every third of it; a dead edge's connections leave presence within it"`

	Inbound         string        `envconfig:"WS_INBOUND" default:"off" desc:"reliable inbound (DESIGN §8): off, or memory|file storage of the inbound work-queue stream the edges create or update at start"`
	InboundStream   string        `envconfig:"WS_INBOUND_STREAM" default:"WS_INBOUND" desc:"name of the inbound JetStream stream (subjects <prefix>.inq.>)"`
	InboundDedupe   time.Duration `envconfig:"WS_INBOUND_DEDUPE" default:"2m" desc:"how long the stream remembers a message id: a resend within it is acked duplicate and not handled again"`
	InboundReplicas int           `envconfig:"WS_INBOUND_REPLICAS" default:"1" desc:"replicas of the inbound stream in a NATS cluster (1, 3 or 5)"`
	InboundMaxAge   time.Duration `envconfig:"WS_INBOUND_MAX_AGE" default:"24h" desc:"an action no dispatcher consumed within this time is dropped from the stream (0 = kept until consumed), e.g. lifecycle events nobody handles"`

	History
}

// PresenceOn reports whether WS_PRESENCE stores memberships and presence.
func (c *Config) PresenceOn() bool { return c.Presence == "memory" || c.Presence == "file" }

// History is the configuration of history and recovery (DESIGN.md §8).
type History struct {
	Storage       string        `envconfig:"WS_HISTORY" default:"off" desc:"history and recovery: off, or the JetStream storage of the history stream (memory or file)"`
	Stream        string        `envconfig:"WS_HISTORY_STREAM" default:"WS_HISTORY" desc:"name of the history stream, created or updated by every edge at start"`
	MaxAge        time.Duration `envconfig:"WS_HISTORY_MAX_AGE" default:"2m" desc:"how long a message stays recoverable"`
	MaxPerSubject int64         `envconfig:"WS_HISTORY_MAX_PER_SUBJECT" default:"100" desc:"messages kept per target subject (user, group, session, all, users, filter)"`
	MaxBytes      int64         `envconfig:"WS_HISTORY_MAX_BYTES" default:"268435456" desc:"byte cap of the history stream (-1 = none); the oldest messages go first"`
	Replicas      int           `envconfig:"WS_HISTORY_REPLICAS" default:"1" desc:"replicas of the history stream (3 on a NATS cluster)"`
	Replays       int           `envconfig:"EDGE_HISTORY_REPLAYS" default:"32" desc:"recoveries one edge runs at once; the others wait for a slot"`
	ReplayWait    time.Duration `envconfig:"EDGE_HISTORY_REPLAY_WAIT" default:"30s" desc:"a recovery waits this long at most for one of EDGE_HISTORY_REPLAYS; past it, it answers recovered:false and goes live"`
	ReplayTimeout time.Duration `envconfig:"EDGE_HISTORY_REPLAY_TIMEOUT" default:"10s" desc:"a recovery that has read the stream this long (once it has a slot) answers recovered:false and goes live"`
	Window        int64         `envconfig:"EDGE_HISTORY_WINDOW" default:"67108864" desc:"bytes of the stream's recent messages an edge reads once and keeps while many recoveries run at once (a reconnect storm), so that they do not each ask NATS; 0 = off"`
}

// On reports whether history is on.
func (h History) On() bool { return h.Storage != HistoryOff }

// HistoryOff is WS_HISTORY's default.
const HistoryOff = "off"

// Load reads the configuration from the environment and checks it.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := c.Normalize(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Normalize fills derived defaults (EDGE_ID) and checks the values; each
// error names the variable at fault.
func (c *Config) Normalize() error {
	if c.Prefix == "" {
		c.Prefix = wire.DefaultPrefix
	}
	if err := wire.ValidateID(c.Prefix); err != nil {
		return fmt.Errorf("WS_SUBJECT_PREFIX: %w", err)
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = SubjectSafe(host)
	}
	if err := wire.ValidateID(c.ID); err != nil {
		return fmt.Errorf("EDGE_ID: %w", err)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("EDGE_PATH: %q must start with /", c.Path)
	}
	if c.JWTSecret == "" && c.JWTPublicKeyFile == "" && c.JWTJWKSURL == "" && c.CalloutSubject == "" && !c.AllowAnonymous {
		return errors.New("EDGE_JWT_SECRET, EDGE_JWT_PUBLIC_KEY_FILE, EDGE_JWT_JWKS_URL or EDGE_AUTH_CALLOUT_SUBJECT: one is required unless EDGE_ALLOW_ANONYMOUS=true")
	}
	if err := c.normalizeInbound(); err != nil {
		return err
	}
	if c.CalloutSubject != "" {
		if err := validSubject(c.CalloutSubject); err != nil {
			return fmt.Errorf("EDGE_AUTH_CALLOUT_SUBJECT: %w", err)
		}
	}
	switch c.Compression {
	case "", "off", "on":
	default:
		return fmt.Errorf("EDGE_COMPRESSION: %q is not on or off", c.Compression)
	}
	if c.Presence == "" {
		c.Presence = presencekv.Off
	}
	if c.PresenceBucket == "" {
		c.PresenceBucket = presencekv.DefaultBucket
	}
	if err := presencekv.ValidateBucket(c.PresenceBucket); err != nil {
		return fmt.Errorf("WS_PRESENCE_BUCKET: %w", err)
	}
	if err := presencekv.Validate(c.Presence); err != nil {
		return fmt.Errorf("WS_PRESENCE: %w", err)
	}
	if c.Presence != presencekv.Off && c.PresenceLease < time.Second {
		return errors.New("WS_PRESENCE_LEASE: at least 1s (the least TTL NATS keeps)")
	}
	if err := presencekv.ValidateBucket(c.MembersBucket); c.PresenceOn() && err != nil {
		return fmt.Errorf("WS_MEMBERS_BUCKET: %w", err)
	}
	if err := c.History.check(); err != nil {
		return err
	}
	positive := []struct {
		name string
		ok   bool
	}{
		{"EDGE_AUTH_TIMEOUT", c.AuthTimeout > 0},
		{"EDGE_AUTH_CALLOUT_TIMEOUT", c.CalloutTimeout > 0},
		{"EDGE_AUTH_CALLOUT_CACHE_SIZE", c.CalloutCacheSize >= 0},
		{"EDGE_JWT_JWKS_REFRESH", c.JWKSRefresh > 0},
		{"EDGE_JWT_JWKS_MIN_INTERVAL", c.JWKSMinInterval >= 0},
		{"EDGE_MAX_MESSAGE_BYTES", c.MaxMessageBytes >= 64},
		{"EDGE_SEND_QUEUE", c.SendQueue > 0},
		{"EDGE_PING_INTERVAL", c.PingInterval > 0},
		{"EDGE_RATE_LIMIT", c.RateLimit >= 0},
		{"EDGE_RATE_BURST", c.RateBurst > 0 || c.RateLimit == 0},
		{"EDGE_MAX_CONNECTIONS", c.MaxConnections >= 0},
		{"EDGE_MAX_CONNECTIONS_PER_USER", c.MaxPerUser >= 0},
		{"EDGE_DRAIN_TIMEOUT", c.DrainTimeout >= 0},
		{"EDGE_HANDSHAKE_TIMEOUT", c.HandshakeTimeout > 0},
		{"EDGE_MAX_HEADER_BYTES", c.MaxHeaderBytes >= 1024},
		{"EDGE_AUTH_CONCURRENCY", c.AuthConcurrency >= 0},
		{"EDGE_AUTH_QUEUE", c.AuthQueue >= 0},
	}
	for _, p := range positive {
		if !p.ok {
			return fmt.Errorf("%s: value out of range", p.name)
		}
	}
	return nil
}

// SubjectSafe maps s to a valid id: every disallowed byte becomes '-', and it
// is cut to wire.MaxIDLen; an empty s becomes "edge".
func SubjectSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if wire.ValidateID(string(c)) != nil {
			b[i] = '-'
		}
	}
	if len(b) > wire.MaxIDLen {
		b = b[:wire.MaxIDLen]
	}
	if len(b) == 0 {
		return "edge"
	}
	return string(b)
}

// validSubject accepts a literal NATS subject: dot-separated tokens without
// wildcards or white space.
func validSubject(s string) error {
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("%q is not a literal NATS subject", s)
		}
	}
	return nil
}

// normalizeInbound checks the WS_INBOUND_* values.
func (c *Config) normalizeInbound() error {
	if c.Inbound == "" {
		c.Inbound = "off"
	}
	switch c.Inbound {
	case "off":
		return nil
	case "memory", "file":
	default:
		return fmt.Errorf("WS_INBOUND: want off, memory or file, got %q", c.Inbound)
	}
	if c.InboundStream == "" || strings.ContainsAny(c.InboundStream, ".*> \t\r\n/\\") {
		return fmt.Errorf("WS_INBOUND_STREAM: %q is not a stream name (no . * > / \\ or white space)", c.InboundStream)
	}
	if c.InboundDedupe <= 0 {
		return errors.New("WS_INBOUND_DEDUPE: must be positive")
	}
	if c.InboundMaxAge < 0 {
		return errors.New("WS_INBOUND_MAX_AGE: must be 0 or more")
	}
	if c.InboundReplicas < 1 || c.InboundReplicas > 5 {
		return fmt.Errorf("WS_INBOUND_REPLICAS: want 1 to 5, got %d", c.InboundReplicas)
	}
	return nil
}

// InboundOn reports whether reliable inbound is on (WS_INBOUND memory or file).
func (c *Config) InboundOn() bool { return c.Inbound == "memory" || c.Inbound == "file" }
func (h History) check() error {
	switch h.Storage {
	case HistoryOff, "memory", "file":
	default:
		return fmt.Errorf("WS_HISTORY: %q is not off, memory or file", h.Storage)
	}
	if h.Stream == "" || strings.ContainsAny(h.Stream, ".*> \t\r\n/\\") {
		return fmt.Errorf("WS_HISTORY_STREAM: %q is not a valid stream name", h.Stream)
	}
	for _, p := range []struct {
		name string
		ok   bool
	}{
		{"WS_HISTORY_MAX_AGE", h.MaxAge > 0},
		{"WS_HISTORY_MAX_PER_SUBJECT", h.MaxPerSubject > 0},
		{"WS_HISTORY_MAX_BYTES", h.MaxBytes > 0 || h.MaxBytes == -1},
		{"WS_HISTORY_REPLICAS", h.Replicas >= 1 && h.Replicas <= 5},
		{"EDGE_HISTORY_REPLAYS", h.Replays > 0},
		{"EDGE_HISTORY_REPLAY_WAIT", h.ReplayWait > 0},
		{"EDGE_HISTORY_REPLAY_TIMEOUT", h.ReplayTimeout > 0},
		{"EDGE_HISTORY_WINDOW", h.Window >= 0},
	} {
		if !p.ok {
			return fmt.Errorf("%s: value out of range", p.name)
		}
	}
	return nil
}
