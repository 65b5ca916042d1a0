package proto

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Kind is what a received message means to the load tool.
type Kind uint8

// Kinds of received messages.
const (
	KindOther  Kind = iota // anything the tool does not count
	KindAuthOK             // the handshake succeeded
	KindData               // a pushed message: broadcast, unicast or hello
	KindReply              // the answer to a request (roundtrip)
	KindError              // an error answer or a refusal
	KindPing               // an application ping, to be answered with Pong
	KindAck                // wsgate's Server/ack of a reliable request (DESIGN.md §8)
)

func (k Kind) String() string {
	return [...]string{"other", "auth-ok", "data", "reply", "error", "ping", "ack"}[k]
}

// Msg is one message of a received frame. Body is the part that holds the
// payload (it aliases the frame: valid only during the callback).
type Msg struct {
	Kind Kind
	Body []byte
}

// Framer is the client side of one gateway's protocol.
type Framer interface {
	// Name is the gateway's name: "wsgate" or "centrifugo".
	Name() string
	// Token returns a connection token for user, signed with secret (HS256).
	Token(secret, user string, exp time.Time) (string, error)
	// Dial returns the URL and upgrade headers of a connection with token.
	Dial(base, token string) (string, http.Header)
	// Hello is the first frame to send after the upgrade; nil for none.
	Hello(token string) []byte
	// AppendRequest appends a client request: method "echo" (answered to
	// this connection, matched by id) or "hello" (sent to every connection
	// of the user).
	AppendRequest(dst []byte, method string, id uint64, payload []byte) []byte
	// Decode calls fn for every message of a received frame.
	Decode(frame []byte, fn func(Msg))
	// Pong is the answer to a KindPing; nil when the gateway needs none.
	Pong() []byte
}

// ForGateway returns the framer of a gateway by name.
func ForGateway(name string) (Framer, error) {
	switch name {
	case "wsgate":
		return Wsgate{}, nil
	case "centrifugo":
		return Centrifugo{}, nil
	}
	return nil, fmt.Errorf("proto: unknown gateway %q (want wsgate or centrifugo)", name)
}

func sign(secret string, claims jwt.MapClaims) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// Wsgate speaks DESIGN.md §2: [action, details, ref] JSON arrays, the token
// in the upgrade's Authorization header (so "ok" comes without a request).
type Wsgate struct{}

var _ Framer = Wsgate{}

// WsgateAction is the action of the frames the tool publishes.
const WsgateAction = "bench"

// Name implements Framer.
func (Wsgate) Name() string { return "wsgate" }

// Token implements Framer.
func (Wsgate) Token(secret, user string, exp time.Time) (string, error) {
	return sign(secret, jwt.MapClaims{"sub": user, "exp": exp.Unix()})
}

// Dial implements Framer.
func (Wsgate) Dial(base, token string) (string, http.Header) {
	return base, http.Header{"Authorization": {"Bearer " + token}}
}

// Hello implements Framer: the upgrade carried the token.
func (Wsgate) Hello(string) []byte { return nil }

// AppendRequest implements Framer: [method, payload, id].
func (Wsgate) AppendRequest(dst []byte, method string, id uint64, payload []byte) []byte {
	dst = append(dst, `["`...)
	dst = append(dst, method...)
	dst = append(dst, `",`...)
	dst = append(dst, payload...)
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, ']')
}

var authOK = []byte(`"ok"`)

// Decode implements Framer. Actions never need escaping (DESIGN §2), so the
// action is the bytes between the first two quotes.
func (Wsgate) Decode(frame []byte, fn func(Msg)) {
	if !bytes.HasPrefix(frame, []byte(`["`)) {
		fn(Msg{Kind: KindOther, Body: frame})
		return
	}
	end := bytes.IndexByte(frame[2:], '"')
	if end < 0 {
		fn(Msg{Kind: KindOther, Body: frame})
		return
	}
	action := frame[2 : 2+end]
	body := frame[min(2+end+2, len(frame)):]
	kind := KindOther
	switch {
	case string(action) == "Client/authentication":
		if bytes.HasPrefix(body, authOK) {
			kind = KindAuthOK
		}
	case bytes.HasSuffix(action, []byte(":error")), string(action) == "Client/error", string(action) == "Server/close":
		kind = KindError
	case string(action) == "echo":
		kind = KindReply
	case string(action) == "Server/ack":
		kind = KindAck
	case string(action) == WsgateAction, string(action) == "hello":
		kind = KindData
	}
	fn(Msg{Kind: kind, Body: body})
}

// Pong implements Framer: the edge pings at the protocol level, answered by
// the WebSocket library.
func (Wsgate) Pong() []byte { return nil }

// Centrifugo speaks Centrifugo's JSON protocol (v2): {"id":n,"connect":…}
// and {"id":n,"rpc":…} commands, replies with the same id, pushes of
// publications, newline-separated messages in one frame, and empty-object
// pings that the client answers with an empty object.
type Centrifugo struct{}

var _ Framer = Centrifugo{}

// Channels every Centrifugo connection of the tool is subscribed to (from
// its token's channels claim): the one of "all", and its user's own.
const (
	CentrifugoAllChannel  = "bench:all"
	CentrifugoUserChannel = "user:" // + user id
)

// Name implements Framer.
func (Centrifugo) Name() string { return "centrifugo" }

// Token implements Framer: server-side subscriptions to the "all" channel
// and the user's channel, the equivalent of wsgate's implicit targets.
func (Centrifugo) Token(secret, user string, exp time.Time) (string, error) {
	return sign(secret, jwt.MapClaims{
		"sub": user, "exp": exp.Unix(),
		"channels": []string{CentrifugoAllChannel, CentrifugoUserChannel + user},
	})
}

// Dial implements Framer.
func (Centrifugo) Dial(base, _ string) (string, http.Header) { return base, nil }

// connectID is the id of the connect command; requests use 2 and above.
const connectID = 1

// Hello implements Framer: the connect command with the token.
func (Centrifugo) Hello(token string) []byte {
	return []byte(`{"id":1,"connect":{"token":"` + token + `","name":"loadgen"}}`)
}

// AppendRequest implements Framer: an RPC, answered by the RPC proxy.
// Command ids are uint32 and 1 is the connect's, so id is folded into
// [2, 2^32).
func (Centrifugo) AppendRequest(dst []byte, method string, id uint64, payload []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, RequestID(id), 10)
	dst = append(dst, `,"rpc":{"method":"`...)
	dst = append(dst, method...)
	dst = append(dst, `","data":`...)
	dst = append(dst, payload...)
	return append(dst, `}}`...)
}

// RequestID is the Centrifugo command id of request number id.
func RequestID(id uint64) uint64 { return id%(1<<32-connectID-1) + connectID + 1 }

// Decode implements Framer.
func (Centrifugo) Decode(frame []byte, fn func(Msg)) {
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		fn(Msg{Kind: centrifugoKind(line), Body: line})
	}
}

func centrifugoKind(m []byte) Kind {
	switch {
	case bytes.Equal(m, []byte(`{}`)):
		return KindPing
	case bytes.HasPrefix(m, []byte(`{"push":`)):
		rest := m[len(`{"push":`):]
		if bytes.Contains(rest, []byte(`"pub":`)) {
			return KindData
		}
		if bytes.Contains(rest, []byte(`"disconnect":`)) {
			return KindError
		}
		return KindOther
	case bytes.HasPrefix(m, []byte(`{"id":`)):
		_, n := digits(m[len(`{"id":`):])
		rest := m[len(`{"id":`)+n:]
		switch {
		case bytes.HasPrefix(rest, []byte(`,"error":`)):
			return KindError
		case bytes.HasPrefix(rest, []byte(`,"connect":`)):
			return KindAuthOK
		case bytes.HasPrefix(rest, []byte(`,"rpc":`)):
			return KindReply
		}
	case bytes.HasPrefix(m, []byte(`{"error":`)):
		return KindError
	}
	return KindOther
}

var emptyObject = []byte(`{}`)

// Pong implements Framer.
func (Centrifugo) Pong() []byte { return emptyObject }
