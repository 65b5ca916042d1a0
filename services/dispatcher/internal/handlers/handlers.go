// Package handlers holds the handlers the dispatcher service ships: the
// seed's hello example, echo, a small demo chat (DESIGN.md §5), and the
// demo's rooms and presence (rooms.go).
package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
)

// Actions of the built-in handlers, and the ones they send.
const (
	ActionHello       = "hello"
	ActionEcho        = "echo"
	ActionChatSend    = "chat/send"
	ActionChatMessage = "chat/message" // sent to everyone for each chat/send
	ActionChatPrivate = "chat/private"
)

// MaxChatText is the longest chat text, in characters after trimming.
const MaxChatText = 2000

// Client-facing reasons of the error replies.
const (
	msgNoHello     = "No hello message:(" // the seed's exact text
	msgChatDetails = `details must be {"text": "<message>"}`
	msgPrivDetails = `details must be {"to": "<user id>", "text": "<message>"}`
	msgEmptyText   = "text is empty"
	msgLongText    = "text is longer than 2000 characters"
	msgBadTo       = "to must be a user id: 1–128 characters of A-Z a-z 0-9 _ - @ + = ~ :"
	msgAnonPrivate = "sign in to send private messages"
)

// Register adds every built-in handler to d.
func Register(d *dispatcher.Dispatcher) error {
	_, err := RegisterExcept(d, nil)
	return err
}

// RegisterExcept adds the built-in handlers to d but those whose action skip
// reports true for (nil skips none), and returns the skipped actions. The
// service skips the actions an HTTP route covers, so that the application's
// backend, not the demo, answers them.
func RegisterExcept(d *dispatcher.Dispatcher, skip func(action string) bool) (skipped []string, err error) {
	for _, b := range []struct {
		action string
		h      dispatcher.HandlerFunc
	}{
		{ActionHello, Hello},
		{ActionEcho, Echo},
		{ActionChatSend, ChatSend},
		{ActionChatPrivate, ChatPrivate},
		{ActionRoomJoin, RoomJoin},
		{ActionRoomLeave, RoomLeave},
		{ActionRoomSend, RoomSend},
		{ActionPresenceWho, PresenceWho},
		{ActionPresenceWatch, PresenceWatch},
		{wire.ActionOnline, UserOnline},
		{wire.ActionOffline, UserOffline},
	} {
		if skip != nil && skip(b.action) {
			skipped = append(skipped, b.action)
			continue
		}
		if err := d.Handle(b.action, b.h); err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

// Hello is the seed's example: non-empty details go back as "hello" to every
// connection of the user (every tab, every edge); empty details (PHP's
// empty(): null, "", "0", false, 0, [], {}) get hello:error [400, "No hello
// message:("] the same way. An anonymous connection has no user to address,
// so it gets the answer itself.
func Hello(ctx context.Context, m *dispatcher.Message) error {
	action, details := ActionHello, any(m.Details)
	if !Truthy(m.Details) {
		action = wire.ErrorAction(ActionHello)
		details = wire.Error{Code: wire.CodeBadRequest, Message: msgNoHello}
	}
	if m.User == "" {
		return m.Reply(action, details)
	}
	return m.Sender().ToUser(ctx, m.User, action, details)
}

// Echo sends the details back to the connection that sent them, with its ref.
func Echo(_ context.Context, m *dispatcher.Message) error {
	return m.Reply(ActionEcho, m.Details)
}

// chatMessage is the details of chat/message and chat/private.
type chatMessage struct {
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	Text string `json:"text"`
	TS   string `json:"ts"` // RFC 3339, UTC
}

// ChatSend broadcasts {"text": ...} to every connection as chat/message
// {"from", "text", "ts"}; anonymous senders are allowed, with an empty from.
func ChatSend(ctx context.Context, m *dispatcher.Message) error {
	var req struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Details, &req); err != nil {
		return dispatcher.NewError(wire.CodeBadRequest, msgChatDetails)
	}
	text, err := chatText(req.Text)
	if err != nil {
		return err
	}
	return m.Sender().ToAll(ctx, ActionChatMessage, chatMessage{From: m.User, Text: text, TS: now()})
}

// ChatPrivate sends {"to", "text"} as chat/private {"from", "to", "text",
// "ts"} to every connection of the recipient and of the sender, so the
// sender's other tabs show it too. Anonymous senders cannot: no one could
// answer them.
func ChatPrivate(ctx context.Context, m *dispatcher.Message) error {
	if m.User == "" {
		return dispatcher.NewError(wire.CodeUnauthorized, msgAnonPrivate)
	}
	var req struct {
		To   string `json:"to"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Details, &req); err != nil {
		return dispatcher.NewError(wire.CodeBadRequest, msgPrivDetails)
	}
	if wire.ValidateID(req.To) != nil {
		return dispatcher.NewError(wire.CodeBadRequest, msgBadTo)
	}
	text, err := chatText(req.Text)
	if err != nil {
		return err
	}
	to := []string{req.To}
	if req.To != m.User {
		to = append(to, m.User)
	}
	msg := chatMessage{From: m.User, To: req.To, Text: text, TS: now()}
	return m.Sender().ToUsers(ctx, to, ActionChatPrivate, msg)
}

// chatText trims s and checks its length; the error is a 400 reply.
func chatText(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch n := utf8.RuneCountInString(s); {
	case n == 0:
		return "", dispatcher.NewError(wire.CodeBadRequest, msgEmptyText)
	case n > MaxChatText:
		return "", dispatcher.NewError(wire.CodeBadRequest, msgLongText)
	}
	return s, nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

// Truthy reports whether details are non-empty as PHP's empty() sees the
// decoded value, which the seed's hello handler tested: null, false, 0, 0.0,
// "", "0", [] and {} are empty; anything else (invalid JSON included, which
// the edge never forwards) is not.
func Truthy(details json.RawMessage) bool {
	details = bytes.TrimSpace(details)
	if len(details) == 0 {
		return false
	}
	switch details[0] {
	case 'n', 'f':
		return false // null, false
	case 't':
		return true
	case '"':
		var s string
		if err := json.Unmarshal(details, &s); err != nil {
			return true
		}
		return s != "" && s != "0"
	case '[':
		var a []json.RawMessage
		if err := json.Unmarshal(details, &a); err != nil {
			return true
		}
		return len(a) > 0
	case '{':
		var o map[string]json.RawMessage
		if err := json.Unmarshal(details, &o); err != nil {
			return true
		}
		return len(o) > 0
	}
	f, err := strconv.ParseFloat(string(details), 64)
	return err != nil || f != 0
}
