package wsconn

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// FuzzReaderOracle is the reader's independent oracle: gobwas/ws, a
// maintained WebSocket library that runs the Autobahn|Testsuite in its CI,
// parses the same bytes as a server would (ws.ReadHeader, ws.CheckHeader
// with the server side's state, ws.Cipher, wsutil.UTF8Reader for text, and
// ws.CheckCloseFrameData for close payloads), and Reader must agree on every
// message, on what ends the input, and on which close frames are well formed.
// The only policy added to gobwas's reading is wsgate's message limit.
func FuzzReaderOracle(f *testing.F) {
	for _, tc := range readerCases() {
		if len(tc.in) <= 1<<12 {
			f.Add(tc.in, uint16(1024))
		}
	}
	for _, p := range [][]byte{nil, {3}, closePayload(1000, "bye"), closePayload(1004, ""), closePayload(1005, ""),
		closePayload(2999, ""), closePayload(3000, "\xff"), closePayload(4999, "é")} {
		f.Add(clientFrame(true, OpClose, p), uint16(1024))
	}
	f.Add(cat(clientFrame(false, OpText, []byte("\xce\xba\xf4")), clientFrame(true, OpContinuation, []byte("\x90"))), uint16(64))
	f.Fuzz(func(t *testing.T, in []byte, limit16 uint16) {
		limit := int(limit16)
		server, client := socketPair(t)
		defer server.Close()
		defer client.Close()
		r, err := NewReader(server, limit)
		if err != nil {
			t.Fatal(err)
		}
		_ = server.SetReadDeadline(time.Now().Add(testTimeout))
		wrote := make(chan error, 1)
		go func() {
			_, err := client.Write(in)
			if cerr := client.CloseWrite(); err == nil {
				err = cerr
			}
			wrote <- err
		}()
		msgs, errs := readAll(t, r)
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		want, wantErr := gobwasParse(in, limit)
		if wantErr == io.EOF {
			wantErr = nil
		}
		checkRead(t, msgs, errs, want, wantErr)
		for _, m := range msgs {
			if m.Op != OpClose {
				continue
			}
			_, ok := ParseClose(m.Data)
			if want := gobwasCloseOK(m.Data); ok != want {
				t.Errorf("ParseClose(% x) well formed: %v, gobwas says %v", m.Data, ok, want)
			}
		}
	})
}

// gobwasParse reads in with gobwas/ws as a server reads a client. A header
// whose mask key has not arrived is read as if the key were there: Reader
// judges a header as soon as its length is known (failing early is what RFC
// 6455 §5.6 and §8.1 ask for), and gobwas reads the key before it judges.
func gobwasParse(in []byte, limit int) ([]Message, error) {
	var msgs []Message
	var frag []byte
	var fragOp ws.OpCode
	var text wsutil.UTF8Reader // carries its state across a message's fragments
	state := ws.StateServerSide
	for rest := in; ; {
		padded := false
		if len(rest) >= 2 && rest[1]&0x80 != 0 {
			hdr := map[byte]int{126: 4, 127: 10}[rest[1]&0x7F]
			if hdr == 0 {
				hdr = 2
			}
			if len(rest) >= hdr && len(rest) < hdr+4 {
				rest, padded = append(bytes.Clone(rest), make([]byte, hdr+4-len(rest))...), true
			}
		}
		src := bytes.NewReader(rest)
		h, err := ws.ReadHeader(src)
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return msgs, io.EOF
		case errors.Is(err, ws.ErrHeaderLengthMSB):
			return msgs, ErrProtocol
		case err != nil:
			return msgs, err
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return msgs, ErrProtocol
		}
		if h.OpCode.IsData() && int64(len(frag))+h.Length > int64(limit) {
			return msgs, ErrTooLarge
		}
		if padded {
			return msgs, io.EOF // the header is good; the input ends inside it
		}
		payload := make([]byte, min(h.Length, int64(src.Len())))
		_, _ = io.ReadFull(src, payload)
		rest = rest[len(rest)-src.Len():]
		ws.Cipher(payload, h.Mask, 0)
		isText := h.OpCode == ws.OpText || h.OpCode == ws.OpContinuation && fragOp == ws.OpText
		if isText {
			text.Source = bytes.NewReader(payload)
			if _, err := io.Copy(io.Discard, &text); err != nil {
				return msgs, ErrInvalidUTF8
			}
		}
		if int64(len(payload)) < h.Length {
			return msgs, io.EOF
		}
		switch {
		case h.OpCode.IsControl():
			msgs = append(msgs, Message{Op: byte(h.OpCode), Data: payload})
			continue
		case h.OpCode != ws.OpContinuation:
			fragOp, frag = h.OpCode, nil
		}
		frag = append(frag, payload...)
		if !h.Fin {
			state = state.Set(ws.StateFragmented)
			continue
		}
		if isText && !text.Valid() {
			return msgs, ErrInvalidUTF8
		}
		msgs = append(msgs, Message{Op: byte(fragOp), Data: frag})
		frag, text = nil, wsutil.UTF8Reader{}
		state = state.Clear(ws.StateFragmented)
	}
}

// gobwasCloseOK is gobwas's judgement of a close payload, with the two
// places where wsgate knows better: 1012–1014, registered with IANA after
// RFC 6455 (gobwas predates them; Autobahn accepts them), and codes of 5000
// and above, which RFC 6455 §7.4.2 leaves undefined and gobwas lets through.
func gobwasCloseOK(payload []byte) bool {
	if len(payload) == 0 {
		return true // no code: nothing to check (gobwas's doc says so too)
	}
	code, reason := ws.ParseCloseFrameData(payload)
	switch {
	case code >= 1012 && code <= 1014:
		code = ws.StatusNormalClosure // judged as a known code: the reason still counts
	case code >= 5000:
		return false
	}
	return ws.CheckCloseFrameData(code, reason) == nil
}
