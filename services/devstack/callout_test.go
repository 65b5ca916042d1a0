package devstack_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// app is a web application with its own sessions, like the seed's CMS: it
// issues a session cookie at sign-in and knows which sessions are valid.
type app struct {
	mu       sync.Mutex
	sessions map[string]appSession
}

type appSession struct {
	user    string
	expires time.Time
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	ttl, _ := time.ParseDuration(r.URL.Query().Get("ttl"))
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	sid := hex.EncodeToString(b)
	a.mu.Lock()
	a.sessions[sid] = appSession{user: user, expires: time.Now().Add(ttl)}
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "app_session", Value: sid, Path: "/", HttpOnly: true})
}

// identify is the application's auth callout, answered with the SDK.
func (a *app) identify(_ context.Context, req *dispatcher.CalloutRequest) (dispatcher.Identity, error) {
	a.mu.Lock()
	s, ok := a.sessions[req.Cookies["app_session"]]
	a.mu.Unlock()
	switch {
	case !ok:
		return dispatcher.Identity{}, dispatcher.NewError(401, "unknown session")
	case time.Now().After(s.expires):
		return dispatcher.Identity{}, dispatcher.NewError(401, "session has expired")
	}
	return dispatcher.Identity{User: s.user, Session: req.Cookies["app_session"], Groups: []string{"members"}, Expires: s.expires}, nil
}

func TestAuthCallout_ApplicationSessionCookies(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	application := &app{sessions: map[string]appSession{}}
	site := httptest.NewServer(application)
	defer site.Close()
	responder, err := dispatcher.AuthCallout(nc, "app.auth", application.identify)
	if err != nil {
		t.Fatal(err)
	}
	defer responder.Drain()
	edgeURL := startEdge(t, ns.ClientURL(), "edge1", "EDGE_JWT_SECRET=", "EDGE_AUTH_CALLOUT_SUBJECT=app.auth")
	startDispatcher(t, ns.ClientURL())

	// Sign in to the application; the browser's cookie jar then carries the
	// session cookie to the edge, as it would for a page on the same site.
	signIn := func(user string, ttl time.Duration) http.Header {
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar}
		resp, err := client.Get(site.URL + "/?user=" + user + "&ttl=" + ttl.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		u, _ := url.Parse(site.URL)
		h := http.Header{}
		for _, c := range jar.Cookies(u) {
			h.Add("Cookie", c.String())
		}
		return h
	}

	alice := edgetest.Dial(t, edgeURL, signIn("alice", time.Hour))
	alice.Authenticate("") // the seed client's first frame; answered ok
	alice.ExpectOK()       // (the edge already said ok for the cookie)
	alice.Send("hello", "Hello, world!")
	if f := alice.Expect("hello"); f.String() != `["hello","Hello, world!"]` {
		t.Fatalf("got %s", f)
	}

	expired := edgetest.Dial(t, edgeURL, signIn("bob", -time.Minute))
	if code, msg := expired.Expect("Client/authentication:error").Error(); code != 401 || msg != "session has expired" {
		t.Fatalf("expired session answered [%d %q]", code, msg)
	}
	if code, _ := expired.WaitClose(); code != 4401 {
		t.Fatalf("close %d, want 4401", code)
	}
	unknown := edgetest.Dial(t, edgeURL, http.Header{"Cookie": {"app_session=forged"}})
	if code, msg := unknown.Expect("Client/authentication:error").Error(); code != 401 || msg != "unknown session" {
		t.Fatalf("unknown session answered [%d %q]", code, msg)
	}
	if code, _ := unknown.WaitClose(); code != 4401 {
		t.Fatalf("close %d, want 4401", code)
	}
}
