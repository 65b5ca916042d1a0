package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
)

// The fuzz targets below run their seeds (f.Add and testdata/fuzz/<name>/) as
// plain tests; `make fuzz` / `make fuzz-short` explore further.

const (
	fuzzSecret  = "fuzz-secret-7f3a9c1e5b2d8046"
	wrongSecret = "wrong-secret-0000000000000000"
)

var b64 = base64.RawURLEncoding

// hashOf is the HMAC hash of a JWT alg, and whether alg is an HMAC alg.
func hashOf(alg string) (func() hash.Hash, bool) {
	switch alg {
	case "HS256":
		return sha256.New, true
	case "HS384":
		return sha512.New384, true
	case "HS512":
		return sha512.New, true
	}
	return sha256.New, false
}

// sign makes header.claims.signature, HMAC-signed with secret using the
// hash of the header's alg (SHA-256 when the header names no HMAC alg).
func sign(header, claims, secret string) string {
	var h struct{ Alg string }
	_ = json.Unmarshal([]byte(header), &h)
	newHash, _ := hashOf(h.Alg)
	signing := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(claims))
	mac := hmac.New(newHash, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + b64.EncodeToString(mac.Sum(nil))
}

// signedWith reports, independently of the JWT library, whether token is an
// HS256/384/512 JWT whose signature is the HMAC of its first two parts.
func signedWith(token, secret string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	hdr, err := b64.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h map[string]any
	if json.Unmarshal(hdr, &h) != nil {
		return false
	}
	alg, _ := h["alg"].(string)
	newHash, ok := hashOf(alg)
	if !ok {
		return false
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return false
	}
	mac := hmac.New(newHash, []byte(secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	return hmac.Equal(sig, mac.Sum(nil))
}

var kinds = []string{
	auth.KindMissing, auth.KindTooLarge, auth.KindMalformed, auth.KindAlgorithm, auth.KindSignature, auth.KindUnknownKey,
	auth.KindExpired, auth.KindNotYetValid, auth.KindIssuer, auth.KindAudience, auth.KindClaims, auth.KindIdentity, auth.KindOtherUser,
}

// checkVerify verifies token and checks the result: a refusal is an
// *auth.Error of a known kind whose reason holds neither the token nor the
// secret; an acceptance is a token signed with fuzzSecret, not expired, whose
// identity holds only subject-safe ids.
func checkVerify(t testing.TB, v *auth.Verifier, token string) (accepted bool) {
	t.Helper()
	id, err := v.Verify(token)
	if err != nil {
		var ae *auth.Error
		if !errors.As(err, &ae) || !slices.Contains(kinds, ae.Kind) || ae.Reason == "" {
			t.Fatalf("Verify(%q): error %#v is not an *auth.Error of a known kind", token, err)
		}
		if strings.Contains(ae.Reason, fuzzSecret) || len(token) >= 16 && strings.Contains(ae.Reason, token) {
			t.Fatalf("Verify(%q): reason %q leaks the token or the secret", token, ae.Reason)
		}
		return false
	}
	if !signedWith(token, fuzzSecret) {
		t.Fatalf("Verify accepted %q, which is not signed with the key", token)
	}
	if err := wire.ValidateID(id.User); err != nil {
		t.Fatalf("Verify(%q): user: %v", token, err)
	}
	if id.Session != "" {
		if err := wire.ValidateID(id.Session); err != nil {
			t.Fatalf("Verify(%q): session: %v", token, err)
		}
	}
	for _, g := range id.Groups {
		if err := wire.ValidateID(g); err != nil {
			t.Fatalf("Verify(%q): group: %v", token, err)
		}
	}
	if !id.Expires.IsZero() && !id.Expires.After(time.Now().Add(-time.Second)) {
		t.Fatalf("Verify(%q): accepted, but expired at %v", token, id.Expires)
	}
	return true
}

// FuzzVerify: the HS256/384/512 verifier never panics on any token string
// and never accepts one that is not signed with its secret; it also gets
// well-formed tokens built from fuzzed header and claims JSON, signed with
// the right or a wrong secret: wrong-secret tokens are always refused, and
// an accepted token's identity is subject-safe and not expired.
func FuzzVerify(f *testing.F) {
	const hs256 = `{"alg":"HS256","typ":"JWT"}`
	future := time.Now().Add(24 * time.Hour).Unix()
	good := `{"sub":"42","sid":"s-1","groups":["g1","g1","g2"],"lang":"de","exp":` + jsonInt(future) + `,"props":{"plan":"pro"}}`
	seeds := []struct {
		token, header, claims string
		right                 bool
	}{
		{sign(hs256, good, fuzzSecret), hs256, good, true},
		{sign(hs256, good, wrongSecret), hs256, good, false},
		{"", `{"alg":"HS384"}`, `{"sub":"a@b","jti":"j"}`, true},
		{"a.b.c", `{"alg":"HS512"}`, `{"sub":"x"}`, true},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiJ9.", `{"alg":"none"}`, `{"sub":"42"}`, true},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiJ9", `{"alg":"None"}`, `{"sub":"42"}`, true},
		{"....", `{"alg":"RS256"}`, `{"sub":"42"}`, true}, // key confusion: HMAC-signed RS256
		{strings.Repeat("a", auth.MaxTokenBytes+1), `{"alg":"ES256"}`, `{"sub":"42"}`, true},
		{"\xff\xfe.\x00.", `{"alg":"EdDSA"}`, `{"sub":"42"}`, true},
		{"Bearer x.y.z", `{"alg":"HS256","kid":"../../etc/passwd"}`, `{"sub":"42"}`, true},
		{"", hs256, `{"sub":"a.b"}`, true},
		{"", hs256, `{"sub":"*"}`, true},
		{"", hs256, `{"sub":">"}`, true},
		{"", hs256, `{"sub":"ü"}`, true},
		{"", hs256, `{"sub":""}`, true},
		{"", hs256, `{"sub":"42","groups":["ok","a b"]}`, true},
		{"", hs256, `{"sub":"42","sid":"s.1"}`, true},
		{"", hs256, `{"sub":"42","exp":1}`, true},
		{"", hs256, `{"sub":"42","exp":1e300}`, true},
		{"", hs256, `{"sub":"42","exp":-1e300}`, true},
		{"", hs256, `{"sub":"42","exp":"9999999999"}`, true},
		{"", hs256, `{"sub":"42","nbf":9999999999}`, true},
		{"", hs256, `{"sub":"42","aud":["a",{"b":1}]}`, true},
		{"", hs256, `{"sub":42}`, true},
		{"", hs256, `{"sub":"42","groups":"g"}`, true},
		{"", hs256, `{"sub":"42","props":{"a":{"b":[[[[]]]]}}}`, true},
		{"", hs256, `[]`, true},
		{"", hs256, `null`, true},
		{"", `{"alg":"HS256","crit":["exp"]}`, `{"sub":"42"}`, true},
		{"", `{"alg":"HS256","alg":"none"}`, `{"sub":"42"}`, true},
		{"", `{"alg":["HS256"]}`, `{"sub":"42"}`, true},
		{"", `null`, `{"sub":"42"}`, true},
	}
	for _, s := range seeds {
		f.Add(s.token, s.header, s.claims, s.right)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: fuzzSecret})
	if err != nil {
		f.Fatal(err)
	}
	if !checkVerify(f, v, seeds[0].token) {
		f.Fatal("a token made by sign is refused: the fuzz target would test nothing")
	}
	f.Fuzz(func(t *testing.T, token, header, claims string, right bool) {
		checkVerify(t, v, token)
		secret := fuzzSecret
		if !right {
			secret = wrongSecret
		}
		signed := sign(header, claims, secret)
		if checkVerify(t, v, signed) && !right {
			t.Fatalf("accepted %q, signed with a wrong secret", signed)
		}
	})
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// validCookieByte is what net/http lets through in a cookie value.
func validCookieByte(b byte) bool {
	return 0x20 <= b && b < 0x7f && b != '"' && b != ';' && b != '\\'
}

// FuzzTokenFromRequest: TokenFromRequest never panics on any Authorization
// header, query string or Cookie header; a non-empty Bearer token wins, then
// a non-empty ?token=, and the result always is one of the values the
// request carries (a cookie one only of the cookie named). FirstLanguage
// returns a trimmed tag of at most 35 bytes from its input, never "*" and
// never holding ',' or ';'.
func FuzzTokenFromRequest(f *testing.F) {
	for _, s := range [][5]string{
		{"Bearer a.b.c", "token=q", "wsgate_token=c", "wsgate_token", "de-CH,de;q=0.9"},
		{"bearer   a.b.c  ", "", "", "", "en"},
		{"BEARER\ta.b.c", "token=q&token=r", "", "", "*"},
		{"Bearer ", "token=q", "t=c", "t", ""},
		{"Basic dXNlcjpwYXNz", "token=%FF%00%0A", "t=c", "t", " , ;"},
		{"", "token=&token=second", "t=\"quoted\"; t=dup", "t", "zh-Hant-TW;q=1"},
		{"", "token=a%2Eb%2Ec;x=1", "t=a;b=c", "t", strings.Repeat("x", 36)},
		{"", "%zz&token=%", "t=bad\\value; t=ok", "t", "\xff\xfe"},
		{"", "", "t=\x00;  t = spaced", "t", "\u00a0de\u00a0,en"},
		{"", "", "t=ok", "", "de;q=0.9,en"},
		{"Bearer\u00a0x", "tok%65n=y", "=novalue; t", "", "\t\n"},
		{"Bearer " + strings.Repeat("A", 10000), "", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, authz, rawQuery, cookieHeader, cookieName, acceptLanguage string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/ws", RawQuery: rawQuery}, Header: http.Header{}}
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		if cookieHeader != "" {
			r.Header["Cookie"] = []string{cookieHeader}
		}
		got := auth.TokenFromRequest(r, cookieName)

		scheme, rest, ok := strings.Cut(authz, " ")
		isBearer := ok && strings.EqualFold(scheme, "Bearer")
		bearer := strings.TrimSpace(rest)
		query, _ := url.ParseQuery(rawQuery)
		var cookies []string
		if cookieName != "" {
			for _, c := range r.CookiesNamed(cookieName) {
				cookies = append(cookies, c.Value)
			}
		}
		switch {
		case isBearer && bearer != "":
			if got != bearer {
				t.Fatalf("Bearer %q present, got %q", bearer, got)
			}
		case !isBearer && query.Get("token") != "":
			if got != query.Get("token") {
				t.Fatalf("?token=%q present, got %q", query.Get("token"), got)
			}
		}
		fromCookie := got != "" && !(isBearer && got == bearer) && !slices.Contains(query["token"], got)
		if fromCookie {
			if !slices.Contains(cookies, got) {
				t.Fatalf("got %q, which the request does not carry", got)
			}
			for i := 0; i < len(got); i++ {
				if !validCookieByte(got[i]) {
					t.Fatalf("cookie token %q has byte %#x", got, got[i])
				}
			}
		}

		lang := auth.FirstLanguage(acceptLanguage)
		if len(lang) > 35 || lang == "*" || strings.ContainsAny(lang, ",;") ||
			lang != strings.TrimFunc(lang, unicode.IsSpace) || !strings.Contains(acceptLanguage, lang) {
			t.Fatalf("FirstLanguage(%q) = %q", acceptLanguage, lang)
		}
	})
}
