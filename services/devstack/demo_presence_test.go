package devstack_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestBrowser_DemoPresenceAndRooms signs in to wsgate-dev's demo page (make
// run's settings: WS_PRESENCE=memory) as alice and bob in two browser
// contexts: each sees the other online; alice joins room-5 and gets the
// room's messages while bob, not in it, does not; after alice leaves, neither
// does; when bob signs out, alice sees him go offline after the grace.
//
// Absence is proven by order: the test publishes the room message and then a
// chat/message to everyone from one NATS connection, and NATS keeps one
// publisher's order, so a page that shows the second message would already
// show the first if it were to get it.
func TestBrowser_DemoPresenceAndRooms(t *testing.T) {
	banner := startWsgateDev(t)
	demo := bannerField(t, banner, `demo page\s+(\S+)`)
	nc := edgetest.Connect(t, bannerField(t, banner, `NATS\s+(nats://\S+)`))
	b := newBrowser(t)
	signIn := func(user string) *tab {
		tb := b.tab(user, chromedp.WithNewBrowserContext())
		tb.navigate(demo)
		tb.do(
			chromedp.WaitVisible(chromedp.ID("login-user")),
			chromedp.SendKeys(chromedp.ID("login-user"), user),
			chromedp.Click(chromedp.ID("login-btn")),
		)
		tb.waitFor(user+" signed in", `document.body.dataset.state === "authenticated"`)
		return tb
	}
	isOnline := func(user string) string {
		return fmt.Sprintf(`document.querySelector('#online-list [data-user=%q]') !== null`, user)
	}
	has := func(id, text string) string {
		js, _ := json.Marshal(text)
		return fmt.Sprintf(`document.getElementById(%q).textContent.includes(%s)`, id, js)
	}
	publish := func(subject, action string, details any) {
		t.Helper()
		data, _ := json.Marshal(map[string]any{"action": action, "details": details})
		if err := nc.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
	}
	// roomThenMarker publishes text to room-5, then marker to everyone.
	roomThenMarker := func(text, marker string) {
		t.Helper()
		publish("ws.send.group.room-5", "room/message", map[string]string{"room": "room-5", "from": "ops", "text": text})
		publish("ws.send.all", "chat/message", map[string]string{"from": "ops", "text": marker})
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	alice, bob := signIn("alice"), signIn("bob")
	alice.waitFor("bob online on alice's page", isOnline("bob"))
	bob.waitFor("alice online on bob's page", isOnline("alice"))
	bob.waitFor("bob online on his own page", isOnline("bob"))

	// alice joins room-5 (the input's default) and talks in it.
	alice.do(chromedp.Click(chromedp.ID("room-join")))
	alice.waitFor("room-5 in alice's rooms", `document.getElementById("room-list").textContent === "room-5"`)
	alice.do(
		chromedp.SendKeys(chromedp.ID("room-input"), "Anyone in room 5?"),
		chromedp.Click(chromedp.ID("room-send")),
	)
	alice.waitFor("alice's own room message", has("room-log", "Anyone in room 5?"))

	roomThenMarker("Room-only news", "marker 1")
	alice.waitFor("the room's message on alice's page", has("room-log", "Room-only news"))
	bob.waitFor("marker 1 on bob's page", has("chat-log", "marker 1"))
	if got := evalJS[string](bob, `document.getElementById("room-log").textContent`); got != "" {
		t.Errorf("bob, not in room-5, shows room traffic: %q", got)
	}

	alice.do(chromedp.Click(chromedp.ID("room-leave")))
	alice.waitFor("alice's rooms empty", `document.getElementById("room-list").textContent === "none"`)
	roomThenMarker("After everyone left", "marker 2")
	alice.waitFor("marker 2 on alice's page", has("chat-log", "marker 2"))
	bob.waitFor("marker 2 on bob's page", has("chat-log", "marker 2"))
	for _, tb := range []*tab{alice, bob} {
		if evalJS[bool](tb, has("room-log", "After everyone left")) {
			t.Errorf("%s got room-5's message after alice left", tb.name)
		}
	}

	// bob signs out: alice's list drops him once the grace (5 s) is over.
	bob.do(chromedp.Click(chromedp.ID("logout-btn")))
	alice.waitFor("bob offline on alice's page", `!(`+isOnline("bob")+`)`)
	if !evalJS[bool](alice, isOnline("alice")) {
		t.Error("alice's page dropped alice herself")
	}
}
