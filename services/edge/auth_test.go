package edge_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

func TestAuthentication_TokenSources(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, nil)
	tok := token(t, map[string]any{"sub": "alice"})
	cases := []struct {
		name   string
		url    string
		header http.Header
		frame  bool // token goes in the first Client/authentication frame
	}{
		{"authorization header", e.URL, bearer(tok), false},
		{"query parameter", e.URL + "?token=" + tok, nil, false},
		{"cookie", e.URL, http.Header{"Cookie": {"wsgate_token=" + tok}}, false},
		{"first frame", e.URL, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := edgetest.Dial(t, tc.url, tc.header)
			if tc.frame {
				c.Authenticate(tok)
			} else {
				c.ExpectOK()
				// The seed client still sends Client/authentication with
				// null details: it is answered ok again.
				c.Authenticate("")
			}
			c.Send("Client/ping", nil, 7)
			if f := c.Expect("Server/pong"); string(f.Ref) != "7" {
				t.Fatalf("pong ref %s", f.Ref)
			}
		})
	}
}

func TestAuthentication_RefusedTokensClose4401(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_JWT_ISSUER": "https://app.example", "EDGE_JWT_AUDIENCE": "wsgate"})
	good := jwt.MapClaims{"sub": "alice", "iss": "https://app.example", "aud": "wsgate"}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		if _, ok := claims["exp"]; !ok {
			claims["exp"] = time.Now().Add(time.Hour).Unix()
		}
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name, token, reason string
	}{
		{"missing", "", "token is missing"},
		{"expired", sign(jwt.SigningMethodHS256, []byte(secret), with("exp", time.Now().Add(-time.Minute).Unix())), "token has expired"},
		{"not yet valid", sign(jwt.SigningMethodHS256, []byte(secret), with("nbf", time.Now().Add(time.Hour).Unix())), "token is not valid yet"},
		{"wrong key", sign(jwt.SigningMethodHS256, []byte("another-secret"), with("x", 1)), "token signature is invalid"},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, with("x", 1)), "token algorithm is not accepted"},
		{"algorithm not configured", sign(jwt.SigningMethodES256, ecKey, with("x", 1)), "token algorithm is not accepted"},
		{"malformed", "not.a.jwt", "token is malformed"},
		{"oversize", strings.Repeat("a", 9000), "token is larger than 8192 bytes"},
		{"wrong issuer", sign(jwt.SigningMethodHS256, []byte(secret), with("iss", "https://evil.example")), "token issuer is not accepted"},
		{"wrong audience", sign(jwt.SigningMethodHS256, []byte(secret), with("aud", "other")), "token audience is not accepted"},
		{"no sub", sign(jwt.SigningMethodHS256, []byte(secret), with("sub", nil)), "sub claim is missing"},
		{"sub with wildcard", sign(jwt.SigningMethodHS256, []byte(secret), with("sub", "a.*")), "sub claim is not a valid user id"},
		{"group with space", sign(jwt.SigningMethodHS256, []byte(secret), with("groups", []string{"ok", "a b"})), "groups claim has an invalid group id"},
		{"session with >", sign(jwt.SigningMethodHS256, []byte(secret), with("sid", "s>")), "sid/jti claim is not a valid session id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := edgetest.Dial(t, e.URL, nil)
			var details any
			if tc.token != "" {
				details = map[string]string{"token": tc.token}
			}
			c.Send("Client/authentication", details)
			f := c.Expect("Client/authentication:error")
			code, msg := f.Error()
			if code != 401 || !strings.HasPrefix(msg, tc.reason) {
				t.Fatalf("got [%d, %q], want [401, %q...]", code, msg, tc.reason)
			}
			if code, _ := c.WaitClose(); code != 4401 {
				t.Fatalf("close code %d, want 4401", code)
			}
		})
	}
	if v := e.metricSum(t, "wsgate_edge_auth_failures_total"); v != 14 {
		t.Fatalf("auth failures metric %v, want 14", v)
	}
	if v := e.metric(t, `wsgate_edge_auth_failures_total{reason="expired"}`); v != "1" {
		t.Fatalf("expired tokens metric %q, want 1", v)
	}
}

func TestAuthentication_PublicKeyTokens(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_JWT_SECRET": "", "EDGE_JWT_PUBLIC_KEY_FILE": path})
	es, _ := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(key)
	edgetest.Dial(t, e.URL, bearer(es)).ExpectOK()

	// HS/ES key confusion: an HS256 token "signed" with the public key bytes.
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob"}).SignedString(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	c := edgetest.Dial(t, e.URL, bearer(hs))
	if _, msg := c.Expect("Client/authentication:error").Error(); msg != "token algorithm is not accepted" {
		t.Fatalf("key confusion answered %q", msg)
	}
}

func TestAuthentication_TimeoutCloses4408(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_AUTH_TIMEOUT": "200ms"})
	c := edgetest.Dial(t, e.URL, nil)
	c.Send("chat", "before auth")
	if code, msg := c.Expect("Client/error").Error(); code != 401 {
		t.Fatalf("frame before authentication answered [%d %q]", code, msg)
	}
	if code, _ := c.WaitClose(); code != 4408 {
		t.Fatalf("close code %d, want 4408", code)
	}
}

func TestAuthentication_ExpiryCloses4001(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, nil)
	c := e.dial(t, map[string]any{"sub": "alice", "exp": time.Now().Add(1500 * time.Millisecond).Unix()})
	if code, _ := c.WaitClose(); code != 4001 {
		t.Fatalf("close code %d, want 4001", code)
	}
}

func TestAuthentication_RenewalKeepsConnection(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	oldExp := time.Now().Add(2 * time.Second)
	c := e.dial(t, map[string]any{"sub": "alice", "groups": []string{"red"}, "exp": oldExp.Unix()})

	// Renew before expiry with a token that moves alice from red to blue.
	c.Authenticate(token(t, map[string]any{"sub": "alice", "groups": []string{"blue"}, "exp": time.Now().Add(time.Hour).Unix()}))
	waitSubs(t, ns, "ws.send.group.red", 0)
	if err := nc.Publish("ws.send.group.red", []byte(`{"action":"red"}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ws.send.group.blue", []byte(`{"action":"blue"}`)); err != nil {
		t.Fatal(err)
	}
	c.Expect("blue")
	// The old expiry no longer applies: the connection outlives it.
	edgetest.Eventually(t, "old expiry passed", func() bool { return time.Now().After(oldExp.Add(1200 * time.Millisecond)) })
	c.Send("Client/ping", nil)
	c.Expect("Server/pong")

	// A token for another user is refused and closes the connection.
	c.Send("Client/authentication", map[string]string{"token": token(t, map[string]any{"sub": "mallory"})})
	if _, msg := c.Expect("Client/authentication:error").Error(); msg != "token is for another user" {
		t.Fatalf("answer %q", msg)
	}
	if code, _ := c.WaitClose(); code != 4401 {
		t.Fatalf("close code %d, want 4401", code)
	}
}

func TestAuthentication_AnonymousOnlyWhenAllowed(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_ALLOW_ANONYMOUS": "true"})
	anon := edgetest.Dial(t, e.URL, nil)
	anon.Authenticate("")
	user := e.dial(t, map[string]any{"sub": "alice"})

	for _, subj := range []string{"ws.send.users", "ws.send.all"} {
		if err := nc.Publish(subj, []byte(`{"action":"`+strings.TrimPrefix(subj, "ws.send.")+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	user.Expect("users")
	user.Expect("all")
	anon.Expect("all") // and not "users": all is its first frame

	sub := subscribe(t, nc, "ws.in.chat")
	anon.Send("chat", "hi")
	msg, err := sub.NextMsg(edgetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg.Data), `"user":""`) {
		t.Fatalf("anonymous envelope %s", msg.Data)
	}
}

// TestAuthentication_EmptyObjectIsNull: DESIGN §2 takes details null or an
// object whose token and since are both optional, so {} authenticates as
// null does; an object that names neither (a misspelt field) is a 400, and
// the connection stays to try again.
func TestAuthentication_EmptyObjectIsNull(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_ALLOW_ANONYMOUS": "true"})
	c := edgetest.Dial(t, e.URL, nil)
	c.Send("Client/authentication", map[string]string{"tokn": "x"})
	if code, msg := c.Expect("Client/authentication:error").Error(); code != 400 || !strings.Contains(msg, "both optional") {
		t.Fatalf("got [%d, %q], want 400 naming the shape", code, msg)
	}
	c.Send("Client/authentication", map[string]string{})
	if f := c.Expect("Client/authentication"); string(f.Details) != `"ok"` {
		t.Fatalf("{} answered %s, want ok", f)
	}
}
