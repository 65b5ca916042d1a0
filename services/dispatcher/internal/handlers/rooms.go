package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
)

// Actions of the demo's rooms and presence (README "Rooms", "Presence"), and
// the pushes they send.
const (
	ActionRoomJoin        = "room/join"
	ActionRoomLeave       = "room/leave"
	ActionRoomSend        = "room/send"
	ActionRoomMessage     = "room/message"     // sent to the room for each room/send
	ActionRoomJoined      = "room/joined"      // sent to the room when a user joins it
	ActionRoomLeft        = "room/left"        // sent to the room and to the user who left it
	ActionPresenceWho     = "presence/who"     // answered to the asking connection
	ActionPresenceWatch   = "presence/watch"   // puts the asking connection into WatchGroup
	ActionPresenceOnline  = "presence/online"  // sent to WatchGroup on Client/online
	ActionPresenceOffline = "presence/offline" // sent to WatchGroup on Client/offline
)

// DemoGroup is the group every token of the dev stack grants. The rooms and
// presence handlers serve its members only: a service that runs the
// built-in handlers with its own tokens does not let its clients join groups
// or learn who is online through them. The demo's online list is its members.
const DemoGroup = "demo"

// WatchGroup holds the connections that asked presence/watch: user events
// go to them only, so that a connection that did not ask (a test's, a
// websocat's) gets no frames it did not expect.
const WatchGroup = "demo-presence"

// RoomPrefix starts every room name. The handlers join users to these
// groups only, so that a client of a service running the built-in handlers
// cannot put itself into a group the application uses for anything else.
const RoomPrefix = "room-"

// MaxRoomName is the longest room name, prefix included.
const MaxRoomName = 64

// MaxWhoMembers bounds the members a presence/who answer lists.
const MaxWhoMembers = 100

// Client-facing reasons of the rooms' and presence's error replies.
const (
	msgRoomDetails  = `details must be {"room": "room-<name>"}`
	msgRoomSend     = `details must be {"room": "room-<name>", "text": "<message>"}`
	msgBadRoom      = `room must be "room-" and a name, at most 64 characters of A-Z a-z 0-9 _ - @ + = ~ :`
	msgAnonRoom     = "sign in to join or leave rooms"
	msgNotDemo      = "rooms and presence serve the demo's users only (group demo)"
	msgNotInRoom    = "join the room first"
	msgRoomsDown    = "rooms are unavailable, try again"
	msgWhoDetails   = `details must be null, {"group": "demo" or "room-<name>"} or {"user": "<user id>"}`
	msgPresenceDown = "presence is unavailable, try again"
)

// roomEvent is the details of room/join's answer, room/leave's answer,
// room/joined and room/left.
type roomEvent struct {
	Room string `json:"room"`
	User string `json:"user"`
}

// roomMessage is the details of room/message.
type roomMessage struct {
	Room string `json:"room"`
	From string `json:"from"`
	Text string `json:"text"`
	TS   string `json:"ts"` // RFC 3339, UTC
}

// RoomJoin puts the sender's user into {"room": "room-<name>"}: every tab,
// on every edge, and with WS_PRESENCE on also later connections, until
// room/leave. It answers room/join {"room", "user"} once the membership is
// in force, then tells the room (the user's tabs included) room/joined.
func RoomJoin(ctx context.Context, m *dispatcher.Message) error {
	room, err := membershipRoom(m)
	if err != nil {
		return err
	}
	if err := m.Sender().Join(ctx, dispatcher.UserTarget(m.User), room); err != nil {
		return membershipFailed(err)
	}
	ev := roomEvent{Room: room, User: m.User}
	if err := m.Reply(ActionRoomJoin, ev); err != nil {
		return err
	}
	return m.Sender().ToGroup(ctx, room, ActionRoomJoined, ev)
}

// RoomLeave takes the sender's user out of {"room": "room-<name>"}, answers
// room/leave {"room", "user"}, and sends room/left to the room and to the
// user's tabs, which are no longer in it.
func RoomLeave(ctx context.Context, m *dispatcher.Message) error {
	room, err := membershipRoom(m)
	if err != nil {
		return err
	}
	if err := m.Sender().Leave(ctx, dispatcher.UserTarget(m.User), room); err != nil {
		return membershipFailed(err)
	}
	ev := roomEvent{Room: room, User: m.User}
	if err := m.Reply(ActionRoomLeave, ev); err != nil {
		return err
	}
	if err := m.Sender().ToGroup(ctx, room, ActionRoomLeft, ev); err != nil {
		return err
	}
	return m.Sender().ToUser(ctx, m.User, ActionRoomLeft, ev)
}

// RoomSend sends {"room", "text"} as room/message {"room", "from", "text",
// "ts"} to the room's connections. The sender must be in the room (its
// envelope's groups say so).
func RoomSend(ctx context.Context, m *dispatcher.Message) error {
	if err := demoMember(m); err != nil {
		return err
	}
	var req struct {
		Room string `json:"room"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Details, &req); err != nil {
		return dispatcher.NewError(wire.CodeBadRequest, msgRoomSend)
	}
	if !validRoom(req.Room) {
		return dispatcher.NewError(wire.CodeBadRequest, msgBadRoom)
	}
	if !slices.Contains(m.Groups, req.Room) {
		return dispatcher.NewError(wire.CodeForbidden, msgNotInRoom)
	}
	text, err := chatText(req.Text)
	if err != nil {
		return err
	}
	return m.Sender().ToGroup(ctx, req.Room, ActionRoomMessage, roomMessage{Room: req.Room, From: m.User, Text: text, TS: now()})
}

// whoGroup answers presence/who for a group. Rooms lists the rooms the
// asking connection is in, so a new tab shows its user's rooms.
type whoGroup struct {
	Group       string   `json:"group"`
	Users       int      `json:"users"`
	Connections int      `json:"connections"`
	Members     []string `json:"members"`
	Rooms       []string `json:"rooms"`
}

// whoUser answers presence/who for a user: whether they are online and on
// how many connections (not which: connection ids stay server-side).
type whoUser struct {
	User        string   `json:"user"`
	Online      bool     `json:"online"`
	Connections int      `json:"connections"`
	Rooms       []string `json:"rooms"`
}

// PresenceWho answers who is online: details null or {"group": g} (g is
// DemoGroup or a room; null means DemoGroup) get {"group", "users",
// "connections", "members" (at most MaxWhoMembers, sorted), "rooms"};
// {"user": u} gets {"user", "online", "connections", "rooms"}. It asks the
// dispatchers' presence service over NATS (WS_PRESENCE on), whose refusal
// (503 when presence is off) is the error reply.
func PresenceWho(ctx context.Context, m *dispatcher.Message) error {
	if err := demoMember(m); err != nil {
		return err
	}
	var req struct {
		Group string `json:"group"`
		User  string `json:"user"`
	}
	if !bytesNull(m.Details) {
		if err := json.Unmarshal(m.Details, &req); err != nil || (req.Group != "" && req.User != "") {
			return dispatcher.NewError(wire.CodeBadRequest, msgWhoDetails)
		}
	}
	rooms := roomsOf(m.Groups)
	if req.User != "" {
		if wire.ValidateID(req.User) != nil {
			return dispatcher.NewError(wire.CodeBadRequest, msgWhoDetails)
		}
		a, err := m.Sender().UserPresence(ctx, req.User)
		if err != nil {
			return presenceFailed(err)
		}
		return m.Reply(ActionPresenceWho, whoUser{User: a.User, Online: a.Online, Connections: len(a.Connections), Rooms: rooms})
	}
	if req.Group == "" {
		req.Group = DemoGroup
	}
	if req.Group != DemoGroup && !validRoom(req.Group) {
		return dispatcher.NewError(wire.CodeBadRequest, msgWhoDetails)
	}
	a, err := m.Sender().GroupPresence(ctx, req.Group, MaxWhoMembers)
	if err != nil {
		return presenceFailed(err)
	}
	members := a.Members
	if members == nil {
		members = []string{}
	}
	return m.Reply(ActionPresenceWho, whoGroup{Group: a.Group, Users: a.Users, Connections: a.Connections, Members: members, Rooms: rooms})
}

// PresenceWatch puts the asking connection (only it, until it closes) into
// WatchGroup, where presence/online and presence/offline go, and answers
// presence/watch {"group"} once that is in force: a presence/who asked
// after the answer misses no event.
func PresenceWatch(ctx context.Context, m *dispatcher.Message) error {
	if err := demoMember(m); err != nil {
		return err
	}
	if err := m.Sender().Join(ctx, dispatcher.ConnectionTarget(m.Connection), WatchGroup); err != nil {
		return membershipFailed(err)
	}
	return m.Reply(ActionPresenceWatch, map[string]string{"group": WatchGroup})
}

// UserOnline pushes Client/online {"user"} to WatchGroup as presence/online
// {"user"}, so the demo page's list grows without asking.
func UserOnline(ctx context.Context, m *dispatcher.Message) error {
	return pushUserEvent(ctx, m, ActionPresenceOnline)
}

// UserOffline pushes Client/offline {"user"} to WatchGroup as
// presence/offline {"user"}.
func UserOffline(ctx context.Context, m *dispatcher.Message) error {
	return pushUserEvent(ctx, m, ActionPresenceOffline)
}

func pushUserEvent(ctx context.Context, m *dispatcher.Message, action string) error {
	var ev struct {
		User string `json:"user"`
	}
	if err := m.Decode(&ev); err != nil {
		return err
	}
	if err := wire.ValidateID(ev.User); err != nil {
		return fmt.Errorf("%s: user: %w", m.Action, err)
	}
	return m.Sender().ToGroup(ctx, WatchGroup, action, map[string]string{"user": ev.User})
}

// membershipRoom is the room of a room/join or room/leave, whose sender
// must have a user: the membership is the user's.
func membershipRoom(m *dispatcher.Message) (string, error) {
	if m.User == "" {
		return "", dispatcher.NewError(wire.CodeUnauthorized, msgAnonRoom)
	}
	if err := demoMember(m); err != nil {
		return "", err
	}
	var req struct {
		Room string `json:"room"`
	}
	if err := json.Unmarshal(m.Details, &req); err != nil {
		return "", dispatcher.NewError(wire.CodeBadRequest, msgRoomDetails)
	}
	if !validRoom(req.Room) {
		return "", dispatcher.NewError(wire.CodeBadRequest, msgBadRoom)
	}
	return req.Room, nil
}

// demoMember refuses a connection outside DemoGroup with 403.
func demoMember(m *dispatcher.Message) error {
	if !slices.Contains(m.Groups, DemoGroup) {
		return dispatcher.NewError(wire.CodeForbidden, msgNotDemo)
	}
	return nil
}

// validRoom reports whether room is RoomPrefix and a name, a valid group id
// of at most MaxRoomName characters.
func validRoom(room string) bool {
	return len(room) > len(RoomPrefix) && len(room) <= MaxRoomName &&
		strings.HasPrefix(room, RoomPrefix) && wire.ValidateID(room) == nil
}

// roomsOf returns the rooms among groups, never nil.
func roomsOf(groups []string) []string {
	rooms := []string{}
	for _, g := range groups {
		if validRoom(g) {
			rooms = append(rooms, g)
		}
	}
	return rooms
}

// membershipFailed turns a Join or Leave error into the reply's: an edge's
// refusal keeps its code and reason; anything else (no edge answered) is a
// 503, its cause logged by the dispatcher.
func membershipFailed(err error) error {
	var me *dispatcher.MembershipError
	if errors.As(err, &me) && me.Code >= 400 && me.Code <= 599 {
		return dispatcher.NewError(me.Code, me.Message)
	}
	return fmt.Errorf("%w: %w", dispatcher.NewError(wire.CodeUnavailable, msgRoomsDown), err)
}

// presenceFailed is membershipFailed for presence requests.
func presenceFailed(err error) error {
	var pe *dispatcher.PresenceError
	if errors.As(err, &pe) && pe.Code >= 400 && pe.Code <= 599 {
		return dispatcher.NewError(pe.Code, pe.Message)
	}
	return fmt.Errorf("%w: %w", dispatcher.NewError(wire.CodeUnavailable, msgPresenceDown), err)
}

// bytesNull reports whether details are JSON null (absent details are).
func bytesNull(details json.RawMessage) bool {
	return strings.TrimSpace(string(details)) == "null"
}
