package telemetry

import (
	"net/textproto"

	"github.com/nats-io/nats.go"
)

// NATSHeader carries W3C trace context in NATS headers under the exact,
// lower-case names of DESIGN.md §4 (traceparent, tracestate): NATS headers
// are case-sensitive, so http.Header's canonical "Traceparent" would not be
// what other NATS clients look for. Get also accepts the canonical form.
type NATSHeader nats.Header

// Get returns the first value of key.
func (h NATSHeader) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	if v := h[textproto.CanonicalMIMEHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set sets key to value.
func (h NATSHeader) Set(key, value string) { h[key] = []string{value} }

// Keys lists the keys present.
func (h NATSHeader) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
