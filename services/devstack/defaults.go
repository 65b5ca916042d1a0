package devstack

import (
	"crypto/rand"
	"encoding/hex"
)

// Setting is one environment variable the dev stack sets unless the
// environment already does.
type Setting struct {
	Name  string // the variable, as .env.example names it
	Value string
	Why   string // the feature it turns on, for `wsgate-dev -h` and readers
}

// Listen holds the listen addresses wsgate-dev's flags choose.
type Listen struct {
	Edge, Dispatcher string
}

// Defaults is the one place where the dev stack's configuration differs
// from the services' own defaults: `make run` turns on every feature the
// README shows on one machine. A feature joins `make run` with one line here
// (and the banner line that shows how to try it, in cmd/wsgate-dev).
//
// Secrets are random per start rather than fixed: the stack may listen on
// more than loopback (-edge 0.0.0.0:8080), and a documented fixed key would
// let anyone who can reach it push to every user. The banner prints them,
// with commands ready to paste.
func Defaults(l Listen) []Setting {
	return []Setting{
		{"EDGE_ADDR", l.Edge, "the edge: demo page, /ws, /client.js"},
		{"DISPATCHER_ADDR", l.Dispatcher, "the dispatcher: probes, metrics, the HTTP send API"},
		{"EDGE_ID", "dev", "a short edge id in connection ids and subjects"},
		{"LOG_FORMAT", "text", "logs for a terminal"},
		{"EDGE_JWT_SECRET", randomHex(24), "tokens: the banner's and the demo's sign-in (POST /dev/token)"},
		{"DISPATCHER_API_KEYS", "dev-" + randomHex(16), "the HTTP send API (POST /v1/send, /v1/close), README \"HTTP send API\""},
		{"DISPATCHER_ROUTES_SECRET", randomHex(16), "HTTP routes: dev/route is POSTed, signed with it, to a backend in the dev stack (README \"HTTP routes\")"},
		{"WS_HISTORY", "memory", "history and recovery: a reconnecting client gets what it missed (README \"History and recovery\")"},
		{"WS_INBOUND", "memory", "reliable inbound: frames with a message id are stored, acknowledged and handled once (README \"Reliable inbound\")"},
		{"WS_PRESENCE", "memory", "rooms and presence: joined groups, who is online, the demo's online list and rooms (README \"Presence\")"},
	}
}

// Apply sets every setting whose variable lookup does not find, with
// setenv: a variable already set wins.
func Apply(settings []Setting, lookup func(string) (string, bool), setenv func(string, string) error) error {
	for _, s := range settings {
		if _, set := lookup(s.Name); set {
			continue
		}
		if err := setenv(s.Name, s.Value); err != nil {
			return err
		}
	}
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
