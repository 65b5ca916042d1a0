package wire_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/wire"
)

// Micro-benchmarks of the wire format on the edge's hot paths: a client's
// frame in, its envelope out to NATS, an outbound message in from NATS and
// the frame built from it. `make microbench` runs them.

// detailsOf returns a JSON object of about n bytes, as applications send.
func detailsOf(n int) json.RawMessage {
	var b strings.Builder
	b.WriteString(`{"room":"lobby-42","text":"`)
	for i := 0; b.Len() < n-3; i++ {
		b.WriteByte("abcdefghij klmnopqrstuvwxyz"[i%27])
	}
	b.WriteString(`"}`)
	return json.RawMessage(b.String())
}

var sizes = []struct {
	name string
	n    int
}{{"details=64B", 64}, {"details=1KiB", 1024}}

func BenchmarkParseClientFrame(b *testing.B) {
	for _, s := range sizes {
		frame := fmt.Appendf(nil, `["chat/message",%s,"req-17"]`, detailsOf(s.n))
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, err := wire.ParseClientFrame(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// envelopeOf is an envelope as the edge's session.publish builds it.
func envelopeOf(n int) wire.Envelope {
	return wire.Envelope{
		Action: "chat/message", Details: detailsOf(n), Ref: json.RawMessage(`"req-17"`),
		User: "user-4242", Session: "sess-9f8e7d", Groups: []string{"staff", "room-lobby-42"}, Language: "en",
		Connection: "edge-7c9d.k3j2h1-1a2b", Edge: "edge-7c9d", IP: "203.0.113.7",
		UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
		TS:        time.Date(2026, 11, 25, 21, 53, 55, 123456789, time.UTC),
	}
}

// BenchmarkEnvelopeEncode encodes an envelope as the edge publishes it.
func BenchmarkEnvelopeEncode(b *testing.B) {
	for _, s := range sizes {
		env := envelopeOf(s.n)
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = wire.AppendEnvelope(make([]byte, 0, 384+len(env.Details)), &env)
			}
		})
	}
}

// BenchmarkDecodeEnvelope decodes an envelope as the dispatcher receives it.
func BenchmarkDecodeEnvelope(b *testing.B) {
	for _, s := range sizes {
		env := envelopeOf(s.n)
		data := wire.AppendEnvelope(nil, &env)
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := wire.DecodeEnvelope(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeOutbound(b *testing.B) {
	for _, s := range sizes {
		msg := fmt.Appendf(nil, `{"action":"chat/message","details":%s,"ref":"req-17"}`, detailsOf(s.n))
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := wire.DecodeOutbound(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendServerFrame builds the frame of an outbound message into a
// reused buffer (dst=reused) and into a new one (dst=nil), as the hub does.
func BenchmarkAppendServerFrame(b *testing.B) {
	details, ref := detailsOf(64), json.RawMessage(`"req-17"`)
	b.Run("dst=reused", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		for b.Loop() {
			buf = wire.AppendServerFrame(buf[:0], "chat/message", details, ref)
		}
	})
	b.Run("dst=nil", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = wire.AppendServerFrame(nil, "chat/message", details, ref)
		}
	})
}
