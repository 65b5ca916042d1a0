package edge_test

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// The Autobahn|Testsuite's permessage-deflate sections, after their public
// case descriptions: section 12 (compressed echoes of messages of various
// sizes) under the offers of section 13 (context takeover or not, client
// window sizes, offers the server must decline), plus the failures RFC 7692
// asks a server to detect. The client compresses as a browser does: with
// its context taken over from message to message unless it offered
// client_no_context_takeover, within the window the server's response
// allows, so that the edge's inflater must use the context to read it.

// abDeflate is the raw client's side of a negotiated permessage-deflate.
type abDeflate struct {
	takeover bool
	window   int    // the client's LZ77 window, in bytes
	history  []byte // the client's messages so far (its context)
	inflated int    // compressed messages received; read after the reader ended
}

// parseDeflateResponse reads the server's Sec-WebSocket-Extensions answer
// (nil when it accepted nothing).
func parseDeflateResponse(resp string) *abDeflate {
	if resp == "" {
		return nil
	}
	z := &abDeflate{takeover: true, window: 1 << 15}
	for _, p := range strings.Split(resp, ";")[1:] {
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch name {
		case "client_no_context_takeover":
			z.takeover = false
		case "client_max_window_bits":
			bits, _ := strconv.Atoi(value)
			z.window = 1 << bits
		}
	}
	return z
}

var deflateEnd = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflate reads a compressed server message; the server never takes its
// context over, so each one stands alone.
func (z *abDeflate) inflate(p []byte) ([]byte, error) {
	if z == nil {
		return nil, errors.New("server frame with RSV1 without permessage-deflate")
	}
	z.inflated++
	return io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateEnd))))
}

// compress returns s as the client's next compressed message. With context
// takeover, the earlier messages are the dictionary, cut so that the
// dictionary and s together fit the window: no back-reference reaches past it.
func (z *abDeflate) compress(s string) string {
	var dict []byte
	if z.takeover {
		keep := max(0, z.window-len(s))
		dict = z.history[max(0, len(z.history)-keep):]
		z.history = append(z.history, s...)
	}
	var b bytes.Buffer
	w, err := flate.NewWriterDict(&b, flate.BestCompression, dict)
	if err != nil {
		panic(err)
	}
	_, _ = w.Write([]byte(s))
	_ = w.Flush()
	return string(bytes.TrimSuffix(b.Bytes(), deflateEnd[:4]))
}

// sendZ sends s compressed, in one frame.
func (c *abClient) sendZ(s string) { c.frame(true, 4, wsconn.OpText, c.z.compress(s), 0) }

// chatty is an echo frame of about n bytes of words and numbers, a
// stand-in for the JSON an application sends.
func chatty(n, seed int) string {
	words := []string{"room", "lobby", "user", "typing", "message", "hello", "there", "status", "online", "42"}
	var b strings.Builder
	for i := 0; b.Len() < n-11; i++ {
		b.WriteString(words[(i*7+seed)%len(words)])
		b.WriteString(strconv.Itoa(i % 13))
		b.WriteByte(' ')
	}
	return echoFrame(b.String()[:n-11])
}

type abOffer struct {
	id, offer, response string
	maxSize             int // largest message of the section-12 echoes
}

func deflateOffers() []abOffer {
	const base = "permessage-deflate; server_no_context_takeover"
	return []abOffer{
		{"13.1", "permessage-deflate", base, 16384},
		{"13.2", "permessage-deflate; client_no_context_takeover", base + "; client_no_context_takeover", 65536},
		{"13.3", "permessage-deflate; client_max_window_bits", base + "; client_max_window_bits=9", 256},
		{"13.4", "permessage-deflate; client_max_window_bits=9", base + "; client_max_window_bits=9", 256},
		{"13.5", "permessage-deflate; server_no_context_takeover; client_no_context_takeover", base + "; client_no_context_takeover", 65536},
		{"13.6", "permessage-deflate; server_max_window_bits=15; client_max_window_bits=15", base + "; client_max_window_bits=9", 256},
		// A window the compressor cannot keep to is declined; the next offer wins.
		{"13.7", "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_no_context_takeover", base + "; client_no_context_takeover", 4096},
	}
}

// TestAutobahnCompression runs the compression cases against an edge with
// EDGE_COMPRESSION=on, graded as TestAutobahnSections1to7 grades. Each echo
// case also requires that the replies at or above the threshold came
// compressed and the smaller ones plain.
func TestAutobahnCompression(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_MAX_MESSAGE_BYTES": "131072", "EDGE_RATE_LIMIT": "0", "EDGE_COMPRESSION": "on"})
	echo, err := nc.Subscribe("ws.in.echo", func(m *nats.Msg) {
		var env wire.Envelope
		if json.Unmarshal(m.Data, &env) != nil {
			return
		}
		_ = nc.Publish("ws.send.conn."+env.Connection, wire.AppendOutbound(nil, &wire.Outbound{Action: "echo", Details: env.Details}))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	tok := token(t, map[string]any{"sub": "autobahn"})
	const count = 5
	for _, o := range deflateOffers() {
		for _, size := range []int{16, 64, 128, 256, 1024, 4096, 16384, 65536} {
			if size > o.maxSize {
				continue
			}
			id := fmt.Sprintf("12.%s.%d", o.id, size)
			t.Run(id, func(t *testing.T) {
				c, resp := dialRawExt(t, e.URL, tok, o.offer)
				if resp != o.response {
					t.Fatalf("offer %q: response %q, want %q", o.offer, resp, o.response)
				}
				var want []abEvent
				for i := range count {
					want = append(want, msg(chatty(size, i)))
				}
				cs := abCase{id: id, run: func(c *abClient) {
					for i := range count {
						c.sendZ(chatty(size, i))
						c.waitEvents(i + 1) // Autobahn sends the next after the echo
					}
				}, ok: want, closedByMe: true, codes: []int{wire.CloseNormal}, requireClean: true}
				if behavior, closeBehavior, why := c.play(cs); behavior != abOK || closeBehavior != abOK {
					t.Errorf("case %s: %s / close %s: %s", id, behavior, closeBehavior, why)
				}
				wantZ := 0
				if size >= wsconn.DeflateThreshold {
					wantZ = count
				}
				if c.z.inflated != wantZ {
					t.Errorf("case %s: %d compressed replies, want %d", id, c.z.inflated, wantZ)
				}
			})
		}
	}
	for _, cs := range deflateFailures() {
		t.Run(cs.id, func(t *testing.T) {
			offer := "permessage-deflate"
			if strings.HasPrefix(cs.id, "z.none") {
				offer = ""
			}
			c, _ := dialRawExt(t, e.URL, tok, offer)
			if behavior, closeBehavior, why := c.play(cs); behavior != abOK || closeBehavior != abOK {
				t.Errorf("case %s: %s / close %s: %s", cs.id, behavior, closeBehavior, why)
			}
		})
	}
}

// deflateFailures are the cases RFC 7692 §6 and the limits decide; ids
// starting with z.none run without the extension negotiated.
func deflateFailures() []abCase {
	failed := func(id string, code int, run func(c *abClient)) abCase {
		return abCase{id: id, run: run, codes: []int{code}}
	}
	hello := echoFrame(strings.Repeat("Hello, world! ", 30))
	return []abCase{
		// A compressed message in three frames: RSV1 on the first only.
		{id: "z.fragmented", run: func(c *abClient) {
			z := c.z.compress(hello)
			a, b := len(z)/3, 2*len(z)/3
			c.frame(false, 4, wsconn.OpText, z[:a], 0)
			c.frame(false, 0, wsconn.OpContinuation, z[a:b], 0)
			c.frame(true, 0, wsconn.OpContinuation, z[b:], 0)
		}, ok: []abEvent{msg(hello)}, closedByMe: true, codes: []int{wire.CloseNormal}, requireClean: true},
		// Plain and compressed messages mix on one connection.
		{id: "z.mixed", run: func(c *abClient) {
			c.frame(true, 0, wsconn.OpText, hello, 0)
			c.waitEvents(1)
			c.sendZ(hello)
		}, ok: []abEvent{msg(hello), msg(hello)}, closedByMe: true, codes: []int{wire.CloseNormal}, requireClean: true},
		failed("z.rsv1-continuation", wire.CloseProtocolError, func(c *abClient) {
			z := c.z.compress(hello)
			c.frame(false, 4, wsconn.OpText, z[:10], 0)
			c.frame(true, 4, wsconn.OpContinuation, z[10:], 0)
		}),
		failed("z.rsv1-ping", wire.CloseProtocolError, func(c *abClient) {
			c.frame(true, 4, wsconn.OpPing, "\x00", 0)
		}),
		failed("z.rsv2", wire.CloseProtocolError, func(c *abClient) {
			c.frame(true, 6, wsconn.OpText, c.z.compress(hello), 0)
		}),
		// 1 MiB of spaces compresses to about 1 KiB: the limit applies to
		// the inflated message.
		failed("z.bomb", wire.CloseTooLarge, func(c *abClient) {
			c.sendZ(echoFrame(strings.Repeat(" ", 1<<20)))
		}),
		failed("z.invalid-utf8", wire.CloseInvalidUTF8, func(c *abClient) {
			c.sendZ(echoFrame("caf\xc3 \xff" + strings.Repeat("x", 300)))
		}),
		failed("z.corrupt", wire.CloseProtocolError, func(c *abClient) {
			c.frame(true, 4, wsconn.OpText, "\xff\xff\xff\xff\xff\xff", 0)
		}),
		// Without negotiation RSV1 is a reserved bit (Autobahn 3.4).
		failed("z.none.rsv1", wire.CloseProtocolError, func(c *abClient) {
			c.frame(true, 4, wsconn.OpText, hello, 0)
		}),
	}
}
