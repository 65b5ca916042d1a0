package edge_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

type signingKey struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func (k signingKey) jwk() map[string]string {
	b := func(x []byte) string { return base64.RawURLEncoding.EncodeToString(x) }
	switch pub := k.key.Public().(type) {
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": k.kid, "alg": "RS256", "use": "sig", "n": b(pub.N.Bytes()), "e": b(big.NewInt(int64(pub.E)).Bytes())}
	case *ecdsa.PublicKey:
		point, err := pub.Bytes() // 0x04‖X‖Y, 32 bytes each on P-256
		if err != nil {
			panic(err)
		}
		return map[string]string{"kty": "EC", "kid": k.kid, "crv": "P-256", "x": b(point[1:33]), "y": b(point[33:])}
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "kid": k.kid, "crv": "Ed25519", "x": b(pub)}
	}
	panic("unknown key type")
}

func (k signingKey) token(t *testing.T, sub string) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwksServer serves the current key set and counts fetches.
type jwksServer struct {
	mu      sync.Mutex
	keys    []signingKey
	fetches atomic.Int64
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	var set []map[string]string
	for _, k := range s.keys {
		set = append(set, k.jwk())
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": set})
}

func (s *jwksServer) rotate(keys ...signingKey) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func TestJWKS_RotationWithoutRestartAndBoundedRefetch(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsa2, _ := rsa.GenerateKey(rand.Reader, 2048)
	r1 := signingKey{"r1", jwt.SigningMethodRS256, rsaKey}
	e1 := signingKey{"e1", jwt.SigningMethodES256, ecKey}
	d1 := signingKey{"d1", jwt.SigningMethodEdDSA, edKey}
	r2 := signingKey{"r2", jwt.SigningMethodRS256, rsa2}

	idp := &jwksServer{}
	idp.rotate(r1, e1, d1)
	srv := httptest.NewServer(idp)
	defer srv.Close()
	ns := edgetest.RunNATS(t)
	const interval = time.Second
	e := startEdge(t, ns, map[string]string{"EDGE_JWT_SECRET": "", "EDGE_JWT_JWKS_URL": srv.URL, "EDGE_JWT_JWKS_MIN_INTERVAL": interval.String()})

	accepted := func(tok string) bool {
		c := edgetest.Dial(t, e.URL, bearer(tok))
		f, _ := c.Take()
		_ = c.WS.Close()
		return string(f.Details) == `"ok"`
	}
	for _, k := range []signingKey{r1, e1, d1} {
		if !accepted(k.token(t, "alice")) {
			t.Fatalf("%s token refused", k.kid)
		}
	}
	// A token claiming an algorithm its key is not pinned to is refused.
	confused := jwt.NewWithClaims(jwt.SigningMethodRS384, jwt.MapClaims{"sub": "alice"})
	confused.Header["kid"] = "r1"
	cs, _ := confused.SignedString(rsaKey)
	if accepted(cs) {
		t.Fatal("RS384 token accepted with a key pinned to RS256")
	}
	rotated := time.Now()
	idp.rotate(r2)
	// Unknown kids within the interval do not refetch.
	for i := range 20 {
		k := signingKey{"made-up-" + string(rune('a'+i)), jwt.SigningMethodRS256, rsa2}
		if time.Since(rotated) < interval/2 && accepted(k.token(t, "mallory")) {
			t.Fatal("token with an unknown kid accepted")
		}
	}
	if got := idp.fetches.Load(); got != 1 {
		t.Fatalf("%d fetches before the interval passed, want 1", got)
	}
	// Once the interval passed, the new key is fetched and accepted.
	edgetest.Eventually(t, "rotated key accepted", func() bool { return accepted(r2.token(t, "alice")) })
	if accepted(r1.token(t, "alice")) {
		t.Fatal("token of a retired key accepted")
	}
	if got := idp.fetches.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2", got)
	}
}
