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

	"golang.org/x/sync/singleflight"
)

// maxJWKSBytes bounds a JWKS document.
const maxJWKSBytes = 1 << 20

// Ours, not keyfunc/v3 v3.9.2 (jwkset v0.11.4): there concurrent misses do not share a fetch (10 unknown kids at once made 10 fetches; TestJWKS_FetchIsSharedAndHoldsNoLock wants 1) and the document is read unbounded.

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
	flight      singleflight.Group

	mu        sync.Mutex
	keys      map[string]jwk // by kid; owned by mu
	fetched   time.Time      // last successful fetch; owned by mu
	attempted time.Time      // last fetch attempt; owned by mu
	fetching  bool           // a fetch is in flight; owned by mu
}

// jwksFetchTimeout bounds one fetch of the key set, whoever waits for it.
const jwksFetchTimeout = 5 * time.Second

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
		url: url, client: &http.Client{Timeout: jwksFetchTimeout},
		refresh: refresh, minInterval: minInterval, log: log, keys: map[string]jwk{},
	}
}

// Key returns the key with kid (any key when kid is empty and the set has
// exactly one) and the algorithm it is pinned to. When the set must be
// fetched, concurrent callers share one fetch, made outside the lock (so
// that tokens whose keys are known do not wait for it) and bounded by
// jwksFetchTimeout; each caller waits for it at most until ctx is done.
func (s *JWKS) Key(ctx context.Context, kid string) (crypto.PublicKey, string, error) {
	s.mu.Lock()
	now := time.Now()
	k, ok := s.lookup(kid)
	stale := now.Sub(s.fetched) > s.refresh
	var fetched <-chan singleflight.Result
	if (!ok || stale) && (s.fetching || now.Sub(s.attempted) >= s.minInterval) {
		if !s.fetching {
			s.attempted, s.fetching = now, true
		}
		// Joined under the lock: the flight clears fetching under it
		// before it ends, so a caller that saw it set joins that flight.
		fetched = s.flight.DoChan("", s.refetch)
	}
	s.mu.Unlock()
	if fetched != nil {
		select {
		case <-fetched:
		case <-ctx.Done():
		}
		s.mu.Lock()
		k, ok = s.lookup(kid)
		s.mu.Unlock()
	}
	if !ok {
		return nil, "", fail(KindUnknownKey, "token key id is not known")
	}
	return k.key, k.alg, nil
}

// refetch is the one fetch in flight.
func (s *JWKS) refetch() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	keys, err := s.fetch(ctx)
	if err != nil {
		s.log.Warn("jwks fetch failed", "url", s.url, "err", err)
	}
	s.mu.Lock()
	if err == nil {
		s.keys, s.fetched = keys, time.Now()
	}
	s.fetching = false
	s.mu.Unlock()
	return nil, err
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

// fetch gets and parses the key set; it takes no lock.
func (s *JWKS) fetch(ctx context.Context) (map[string]jwk, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
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
		return nil, errors.New("no usable key")
	}
	return keys, nil
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
		// The coordinates as numbers, as before (leading zeros may be omitted), then the
		// uncompressed point 0x04‖X‖Y, which ParseUncompressedPublicKey checks is on the curve.
		size := (c.c.Params().BitSize + 7) / 8
		x, y := new(big.Int).SetBytes(b(j.X)), new(big.Int).SetBytes(b(j.Y))
		if x.BitLen() > 8*size || y.BitLen() > 8*size {
			return j.Kid, jwk{}, errors.New("EC point is not on the curve")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		x.FillBytes(point[1 : 1+size])
		y.FillBytes(point[1+size:])
		k, err := ecdsa.ParseUncompressedPublicKey(c.c, point)
		if err != nil {
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
