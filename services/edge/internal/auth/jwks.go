package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"time"
)

// maxJWKSBytes bounds a JWKS document.
const maxJWKSBytes = 1 << 20

// JWKS is a key set fetched from a URL and kept fresh: it is refetched every
// refresh interval, and on a token whose kid it does not know, but never
// more often than once per minInterval, so that tokens with made-up kids
// cannot make the edge hammer the identity provider.
type JWKS struct {
	url         string        // static
	client      *http.Client  // static
	refresh     time.Duration // static
	minInterval time.Duration // static
	log         *slog.Logger  // static

	mu        sync.Mutex
	keys      map[string]jwk // by kid; owned by mu
	fetched   time.Time      // last successful fetch; owned by mu
	attempted time.Time      // last fetch attempt; owned by mu
}

type jwk struct {
	key crypto.PublicKey
	alg string // the only algorithm this key verifies
}

// NewJWKS returns a key set for url; it fetches on first use.
func NewJWKS(url string, refresh, minInterval time.Duration, log *slog.Logger) *JWKS {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &JWKS{
		url: url, client: &http.Client{Timeout: 5 * time.Second},
		refresh: refresh, minInterval: minInterval, log: log, keys: map[string]jwk{},
	}
}

// Key returns the key with kid (any key when kid is empty and the set has
// exactly one) and the algorithm it is pinned to.
func (s *JWKS) Key(ctx context.Context, kid string) (crypto.PublicKey, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	k, ok := s.lookup(kid)
	stale := now.Sub(s.fetched) > s.refresh
	if (!ok || stale) && now.Sub(s.attempted) >= s.minInterval {
		// Fetching under the lock makes concurrent misses wait for one
		// fetch instead of each starting their own.
		s.attempted = now
		if err := s.fetch(ctx); err != nil {
			s.log.Warn("jwks fetch failed", "url", s.url, "err", err)
		} else {
			k, ok = s.lookup(kid)
		}
	}
	if !ok {
		return nil, "", fail(KindUnknownKey, "token key id is not known")
	}
	return k.key, k.alg, nil
}

func (s *JWKS) lookup(kid string) (jwk, bool) {
	if kid == "" && len(s.keys) == 1 {
		for _, k := range s.keys {
			return k, true
		}
	}
	k, ok := s.keys[kid]
	return k, ok
}

func (s *JWKS) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&doc); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	keys := make(map[string]jwk, len(doc.Keys))
	for _, raw := range doc.Keys {
		kid, k, err := parseJWK(raw)
		if err != nil {
			s.log.Warn("jwks key skipped", "kid", kid, "err", err)
			continue
		}
		keys[kid] = k
	}
	if len(keys) == 0 {
		return errors.New("no usable key")
	}
	s.keys, s.fetched = keys, time.Now()
	return nil
}

// parseJWK reads one signing key of RFC 7517/7518/8037.
func parseJWK(raw json.RawMessage) (string, jwk, error) {
	var j struct {
		Kty, Kid, Alg, Use, Crv string
		N, E, X, Y              string
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return "", jwk{}, err
	}
	if j.Use != "" && j.Use != "sig" {
		return j.Kid, jwk{}, fmt.Errorf("use %q is not sig", j.Use)
	}
	b := func(s string) []byte { d, _ := base64.RawURLEncoding.DecodeString(s); return d }
	switch j.Kty {
	case "RSA":
		n, e := new(big.Int).SetBytes(b(j.N)), new(big.Int).SetBytes(b(j.E))
		if n.BitLen() < 2048 || !e.IsInt64() || e.Int64() < 3 {
			return j.Kid, jwk{}, errors.New("RSA key too small or malformed")
		}
		alg := j.Alg
		if alg == "" {
			alg = "RS256"
		}
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		default:
			return j.Kid, jwk{}, fmt.Errorf("alg %q does not fit an RSA key", alg)
		}
		return j.Kid, jwk{key: &rsa.PublicKey{N: n, E: int(e.Int64())}, alg: alg}, nil
	case "EC":
		curves := map[string]struct {
			c   elliptic.Curve
			alg string
		}{"P-256": {elliptic.P256(), "ES256"}, "P-384": {elliptic.P384(), "ES384"}, "P-521": {elliptic.P521(), "ES512"}}
		c, ok := curves[j.Crv]
		if !ok || (j.Alg != "" && j.Alg != c.alg) {
			return j.Kid, jwk{}, fmt.Errorf("curve %q with alg %q is not supported", j.Crv, j.Alg)
		}
		k := &ecdsa.PublicKey{Curve: c.c, X: new(big.Int).SetBytes(b(j.X)), Y: new(big.Int).SetBytes(b(j.Y))}
		if !c.c.IsOnCurve(k.X, k.Y) {
			return j.Kid, jwk{}, errors.New("EC point is not on the curve")
		}
		return j.Kid, jwk{key: k, alg: c.alg}, nil
	case "OKP":
		x := b(j.X)
		if j.Crv != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return j.Kid, jwk{}, fmt.Errorf("OKP curve %q is not supported", j.Crv)
		}
		return j.Kid, jwk{key: ed25519.PublicKey(x), alg: "EdDSA"}, nil
	}
	return j.Kid, jwk{}, fmt.Errorf("kty %q is not supported", j.Kty)
}
