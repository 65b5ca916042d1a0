package wire

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
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

// AppendEnvelope appends the JSON encoding of e to dst: what json.Marshal
// gives, but without its reflection, and groups [] when nil as the schema
// wants. e.Details and e.Ref must be valid JSON (as ParseClientFrame
// returns them); empty details become null.
func AppendEnvelope(dst []byte, e *Envelope) []byte {
	dst = append(dst, `{"action":`...)
	dst = appendString(dst, e.Action)
	dst = append(dst, `,"details":`...)
	if len(e.Details) == 0 {
		dst = append(dst, null...)
	} else {
		dst = append(dst, e.Details...)
	}
	if len(e.Ref) > 0 {
		dst = append(dst, `,"ref":`...)
		dst = append(dst, e.Ref...)
	}
	dst = append(dst, `,"user":`...)
	dst = appendString(dst, e.User)
	dst = append(dst, `,"session":`...)
	dst = appendString(dst, e.Session)
	dst = append(dst, `,"groups":[`...)
	for i, g := range e.Groups {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, g)
	}
	dst = append(dst, `],"language":`...)
	dst = appendString(dst, e.Language)
	dst = append(dst, `,"connection":`...)
	dst = appendString(dst, e.Connection)
	dst = append(dst, `,"edge":`...)
	dst = appendString(dst, e.Edge)
	dst = append(dst, `,"ip":`...)
	dst = appendString(dst, e.IP)
	dst = append(dst, `,"user_agent":`...)
	dst = appendString(dst, e.UserAgent)
	dst = append(dst, `,"ts":"`...)
	dst = e.TS.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, `"}`...)
}

// DecodeEnvelope decodes an envelope as json.Unmarshal does. Details and
// Ref may share data's memory.
func DecodeEnvelope(data []byte) (Envelope, error) {
	if e, ok := decodeEnvelopeFast(data); ok {
		return e, nil
	}
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return Envelope{}, fmt.Errorf("not an envelope: %w", err)
	}
	return e, nil
}

// decodeEnvelopeFast is DecodeEnvelope for what the edge sends: plain keys
// and strings, valid UTF-8. It gives up (ok false) on anything else, valid
// or not, and encoding/json decides.
func decodeEnvelopeFast(data []byte) (e Envelope, ok bool) {
	if !utf8.Valid(data) { // encoding/json replaces invalid UTF-8 in strings
		return e, false
	}
	var seen fieldSet
	// str sets *dst from a string value; null leaves it, as encoding/json does.
	str := func(field int, dst *string, value []byte) bool {
		if !seen.first(field) {
			return false
		}
		if string(value) == "null" {
			return true
		}
		s, ok := plainString(value)
		*dst = s
		return ok
	}
	ok = eachMember(data, func(key, value []byte) bool {
		switch {
		case asciiFold(key, "action"):
			return str(0, &e.Action, value)
		case asciiFold(key, "details"):
			e.Details = value
			return seen.first(1)
		case asciiFold(key, "ref"):
			e.Ref = value
			return seen.first(2)
		case asciiFold(key, "user"):
			return str(3, &e.User, value)
		case asciiFold(key, "session"):
			return str(4, &e.Session, value)
		case asciiFold(key, "groups"):
			return seen.first(5) && decodeGroups(&e.Groups, value)
		case asciiFold(key, "language"):
			return str(6, &e.Language, value)
		case asciiFold(key, "connection"):
			return str(7, &e.Connection, value)
		case asciiFold(key, "edge"):
			return str(8, &e.Edge, value)
		case asciiFold(key, "ip"):
			return str(9, &e.IP, value)
		case asciiFold(key, "user_agent"):
			return str(10, &e.UserAgent, value)
		case asciiFold(key, "ts"):
			return seen.first(11) && e.TS.UnmarshalJSON(value) == nil
		}
		return true
	})
	return e, ok
}

// decodeGroups decodes a JSON array of plain strings, or null (nil).
func decodeGroups(dst *[]string, value []byte) bool {
	if string(value) == "null" {
		*dst = nil
		return true
	}
	if value[0] != '[' {
		return false
	}
	groups := []string{}
	// value is a valid array (eachMember scanned it).
	for i := skipSpace(value, 1); value[i] != ']'; {
		if value[i] != '"' {
			return false
		}
		end, _ := scanString(value, i)
		g, ok := plainString(value[i:end])
		if !ok {
			return false
		}
		groups = append(groups, g)
		if i = skipSpace(value, end); value[i] == ',' {
			i = skipSpace(value, i+1)
		}
	}
	*dst = groups
	return true
}
