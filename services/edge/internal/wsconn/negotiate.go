package wsconn

import (
	"strconv"
	"strings"
)

// Deflate is the outcome of a permessage-deflate negotiation.
type Deflate struct {
	// Response is the Sec-WebSocket-Extensions value that accepts the offer.
	Response string
	// Takeover is whether the client keeps its compression context across
	// messages (it did not offer client_no_context_takeover).
	Takeover bool
	// WindowBits is the base-2 logarithm of the client's LZ77 window: what
	// the inflater keeps of its earlier messages when it takes context over.
	WindowBits int
}

// clientWindowBits is the client window the edge asks for when the client
// offers client_max_window_bits (browsers do): a 512-byte window keeps a
// context-taking client's inflater state (the window and a few dozen bytes
// of bookkeeping) under 1 KiB between messages, while client messages,
// mostly small commands, lose little compression by it.
const clientWindowBits = 9

// NegotiateDeflate picks the first permessage-deflate offer of the request's
// Sec-WebSocket-Extensions values (RFC 7692 §5, §7.1) that the edge can
// honour; ok is false when there is none.
//
// The server never keeps context (server_no_context_takeover is always in
// the response) and always uses deflate's full 32 KiB window, so an offer
// that limits the server's window below 15 bits is declined. The client's
// parameters are accepted: client_no_context_takeover is echoed; when the
// client offers client_max_window_bits, the response limits its window to
// clientWindowBits (or the offer's smaller value), so that keeping its
// context costs the edge less than 1 KiB per connection. A client that offers
// neither keeps a 32 KiB context. An offer with an unknown, repeated or
// malformed parameter is declined, as §7.1 asks.
func NegotiateDeflate(values []string) (d Deflate, ok bool) {
	for _, v := range values {
		for offer := range strings.SplitSeq(v, ",") {
			if d, ok := acceptOffer(offer); ok {
				return d, true
			}
		}
	}
	return Deflate{}, false
}

func acceptOffer(offer string) (Deflate, bool) {
	params := strings.Split(offer, ";")
	if !strings.EqualFold(strings.TrimSpace(params[0]), "permessage-deflate") {
		return Deflate{}, false
	}
	seen := map[string]bool{}
	d := Deflate{Takeover: true, WindowBits: 15}
	limitWindow := false
	for _, p := range params[1:] {
		name, value, hasValue := strings.Cut(p, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.Trim(strings.TrimSpace(value), `"`)
		if seen[name] {
			return Deflate{}, false
		}
		seen[name] = true
		switch name {
		case "server_no_context_takeover":
			if hasValue {
				return Deflate{}, false
			}
		case "client_no_context_takeover":
			if hasValue {
				return Deflate{}, false
			}
			d.Takeover = false
		case "server_max_window_bits":
			// Our compressor's window is always 15 bits.
			if bits, ok := windowBits(value); !ok || bits != 15 {
				return Deflate{}, false
			}
		case "client_max_window_bits":
			bits := clientWindowBits
			if hasValue {
				offered, ok := windowBits(value)
				if !ok {
					return Deflate{}, false
				}
				bits = min(bits, offered)
			}
			d.WindowBits, limitWindow = bits, true
		default:
			return Deflate{}, false
		}
	}
	d.Response = "permessage-deflate; server_no_context_takeover"
	if !d.Takeover {
		d.Response += "; client_no_context_takeover"
	}
	if limitWindow {
		d.Response += "; client_max_window_bits=" + strconv.Itoa(d.WindowBits)
	}
	return d, true
}

// windowBits parses a max_window_bits value: a decimal from 8 to 15 without
// a leading zero (RFC 7692 §7.1.2).
func windowBits(v string) (int, bool) {
	if v == "" || v[0] == '0' || len(v) > 2 {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 8 && n <= 15
}
