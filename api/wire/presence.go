package wire

import (
	"encoding/json"
	"strings"
	"time"
)

// User-level lifecycle events (DESIGN.md §9), published on <prefix>.in.<action>
// with details {"user": "<u>"}.
const (
	ActionOnline  = "Client/online"
	ActionOffline = "Client/offline"
)

// PresenceUser is <prefix>.presence.user.<user>, answered by dispatchers.
func (s Subjects) PresenceUser(user string) string { return s.Prefix + ".presence.user." + user }

// PresenceGroup is <prefix>.presence.group.<group>, answered by dispatchers.
func (s Subjects) PresenceGroup(group string) string { return s.Prefix + ".presence.group." + group }

// Presence KV layout (bucket WS_PRESENCE_BUCKET). Every key is
// "<kind>.<id>[.<id>]" with ids escaped by PresenceKeyID, since NATS KV keys
// allow fewer characters than wsgate ids; the values hold the ids unescaped.
//
//	edge.<edge>          → PresenceLease, written with a per-message TTL of WS_PRESENCE_LEASE
//	conn.<edge>.<conn>   → PresenceConn, one per authenticated connection
//	user.<user>          → PresenceUserState, exists while the user is online (events fired)
const (
	PresenceKeyEdge = "edge."
	PresenceKeyConn = "conn."
	PresenceKeyUser = "user."
)

// PresenceLease is the value of edge.<edge>: the edge's current lease. A new
// epoch per edge process: connections recorded under another epoch than the
// live lease's belong to a dead process.
type PresenceLease struct {
	Epoch string    `json:"epoch"`
	Since time.Time `json:"since"` // when this epoch started
}

// PresenceConn is the value of conn.<edge>.<conn>.
type PresenceConn struct {
	User       string    `json:"user"`
	Session    string    `json:"session"`
	Groups     []string  `json:"groups"`
	Language   string    `json:"language"`
	Connection string    `json:"connection"` // "<edge>.<conn>"
	Edge       string    `json:"edge"`
	Epoch      string    `json:"epoch"` // the lease epoch of the edge that wrote it
	Since      time.Time `json:"since"`
}

// PresenceUserState is the value of user.<user>: the key exists from the
// user's Client/online to their Client/offline. The edge whose connection
// brings the user online creates it pending; the dispatcher whose
// compare-and-set update clears Pending fires Client/online, and the one
// whose compare-and-set delete removes it fires Client/offline, so each
// happens once, whichever edge dies.
type PresenceUserState struct {
	User       string    `json:"user"`
	Connection string    `json:"connection"` // the last connection that touched it
	Since      time.Time `json:"since"`
	// Pending: Client/online is not fired yet. A touch by another
	// connection keeps it as it was.
	Pending bool `json:"pending,omitempty"`
}

// PresenceKeyID escapes an id (DESIGN.md §3 characters) into a NATS KV key
// token: '=' '@' '+' '~' ':' become "=3D" "=40" "=2B" "=7E" "=3A". Other id
// characters are left as they are.
func PresenceKeyID(id string) string {
	if !strings.ContainsAny(id, "=@+~:") {
		return id
	}
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		switch c := id[i]; c {
		case '=', '@', '+', '~', ':':
			b.WriteByte('=')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// PresenceUserKey is user.<user>.
func PresenceUserKey(user string) string { return PresenceKeyUser + PresenceKeyID(user) }

// PresenceEdgeKey is edge.<edge>.
func PresenceEdgeKey(edge string) string { return PresenceKeyEdge + PresenceKeyID(edge) }

// PresenceConnKey is conn.<edge>.<conn> for connection "<edge>.<conn>".
func PresenceConnKey(edge, conn string) string {
	return PresenceKeyConn + PresenceKeyID(edge) + "." + PresenceKeyID(conn)
}

// PresenceUserAnswer answers <prefix>.presence.user.<user>.
type PresenceUserAnswer struct {
	User        string                     `json:"user"`
	Online      bool                       `json:"online"`
	Connections []PresenceConnectionAnswer `json:"connections"`
}

// PresenceConnectionAnswer is one connection of a PresenceUserAnswer.
type PresenceConnectionAnswer struct {
	Connection string    `json:"connection"`
	Session    string    `json:"session"`
	Since      time.Time `json:"since"`
}

// PresenceGroupRequest is the optional payload of <prefix>.presence.group.<group>.
type PresenceGroupRequest struct {
	// Limit bounds Members (nil: the default; 0: counts only).
	Limit *int `json:"limit"`
}

// PresenceGroupAnswer answers <prefix>.presence.group.<group>: Users and
// Connections count everything, Members lists at most the request's limit.
type PresenceGroupAnswer struct {
	Group       string   `json:"group"`
	Users       int      `json:"users"`
	Connections int      `json:"connections"`
	Members     []string `json:"members"`
}

// PresenceError is the answer to a presence request that cannot be served:
// {"error": {"code": 503, "message": "..."}}.
type PresenceError struct {
	Error PresenceErrorBody `json:"error"`
}

// PresenceErrorBody is the error of a PresenceError.
type PresenceErrorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// PresenceFailure encodes a PresenceError.
func PresenceFailure(code int, message string) []byte {
	data, _ := json.Marshal(PresenceError{Error: PresenceErrorBody{Code: code, Message: message}})
	return data
}
