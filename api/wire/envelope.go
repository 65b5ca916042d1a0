package wire

import (
	"encoding/json"
	"time"
)

// Envelope is what the edge publishes on <prefix>.in.<action>: the client's
// frame plus the connection's identity, which comes only from its token.
type Envelope struct {
	Action     string          `json:"action"`
	Details    json.RawMessage `json:"details"`
	Ref        json.RawMessage `json:"ref,omitempty"`
	User       string          `json:"user"`
	Session    string          `json:"session"`
	Groups     []string        `json:"groups"`
	Language   string          `json:"language"`
	Connection string          `json:"connection"` // "<edge>.<conn>"
	Edge       string          `json:"edge"`
	IP         string          `json:"ip"`
	UserAgent  string          `json:"user_agent"`
	TS         time.Time       `json:"ts"`
}

// NATS headers set on every inbound envelope.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)
