// Package auth turns a token into a connection's identity (DESIGN.md §3): it
// verifies JWTs with a pinned set of algorithms and checks every identity
// field against the subject-token rules.
package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgate/wsgate/api/wire"
)

// MaxTokenBytes bounds the size of a token; larger ones are refused unread.
const MaxTokenBytes = 8 << 10

// Identity is who a connection belongs to. It is immutable once built: a
// renewal builds a new one.
type Identity struct {
	User     string // empty for anonymous connections
	Session  string
	Groups   []string
	Language string
	Expires  time.Time // zero: never
	Props    map[string]string
}

// Error is an authentication failure; Reason is safe to show to the client:
// it never contains the token or key material. Kind is one of the Kind
// constants, for metrics.
type Error struct {
	Kind   string
	Reason string
}

func (e *Error) Error() string { return "auth: " + e.Reason }

// Kinds of authentication failure.
const (
	KindMissing     = "missing"
	KindTooLarge    = "too_large"
	KindMalformed   = "malformed"
	KindAlgorithm   = "algorithm"
	KindSignature   = "signature"
	KindUnknownKey  = "unknown_key"
	KindExpired     = "expired"
	KindNotYetValid = "not_yet_valid"
	KindIssuer      = "issuer"
	KindAudience    = "audience"
	KindClaims      = "claims"
	KindIdentity    = "identity"
	KindOtherUser   = "other_user"
)

func fail(kind, format string, args ...any) error {
	return &Error{Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// Config says which keys and claims a Verifier accepts.
type Config struct {
	Secret        string // HMAC secret: HS256, HS384, HS512
	PublicKeyFile string // PEM: RSA (RS*, PS*), ECDSA (ES* of its curve) or Ed25519 (EdDSA)
	Issuer        string // required iss, when set
	Audience      string // required aud, when set

	JWKSURL         string        // key set URL: RS*, PS*, ES*, EdDSA keys by kid
	JWKSRefresh     time.Duration // refetch the key set this often
	JWKSMinInterval time.Duration // but never more often than this
	Logger          *slog.Logger
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	secret []byte
	public crypto.PublicKey
	jwks   *JWKS
	parser *jwt.Parser
}

// NewVerifier loads the configured keys and pins the algorithms to them.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{}
	var methods []string
	if cfg.Secret != "" {
		v.secret = []byte(cfg.Secret)
		methods = append(methods, "HS256", "HS384", "HS512")
	}
	if cfg.PublicKeyFile != "" {
		key, algs, err := loadPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("EDGE_JWT_PUBLIC_KEY_FILE: %w", err)
		}
		v.public = key
		methods = append(methods, algs...)
	}
	if cfg.JWKSURL != "" {
		v.jwks = NewJWKS(cfg.JWKSURL, cfg.JWKSRefresh, cfg.JWKSMinInterval, cfg.Logger)
		methods = append(methods, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(0)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Enabled reports whether any key is configured.
func (v *Verifier) Enabled() bool { return v.secret != nil || v.public != nil || v.jwks != nil }

func loadPublicKey(path string) (crypto.PublicKey, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("no PEM block found")
	}
	var key any
	switch block.Type {
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, err
		}
		key = cert.PublicKey
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	}
	if err != nil {
		return nil, nil, err
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, []string{"ES256"}, nil
		case elliptic.P384():
			return k, []string{"ES384"}, nil
		case elliptic.P521():
			return k, []string{"ES512"}, nil
		}
		return nil, nil, errors.New("unsupported ECDSA curve")
	case ed25519.PublicKey:
		return k, []string{"EdDSA"}, nil
	}
	return nil, nil, fmt.Errorf("unsupported key type %T", key)
}

type claims struct {
	jwt.RegisteredClaims
	SID    string            `json:"sid"`
	Groups []string          `json:"groups"`
	Lang   string            `json:"lang"`
	Props  map[string]string `json:"props"`
}

// Verify checks token and returns the identity it carries. Language is left
// empty when the token has no lang claim (the caller knows the fallbacks).
func (v *Verifier) Verify(token string) (*Identity, error) {
	switch {
	case token == "":
		return nil, fail(KindMissing, "token is missing")
	case len(token) > MaxTokenBytes:
		return nil, fail(KindTooLarge, "token is larger than %d bytes", MaxTokenBytes)
	case !v.Enabled():
		return nil, fail(KindAlgorithm, "tokens are not accepted by this edge")
	}
	var c claims
	_, err := v.parser.ParseWithClaims(token, &c, v.key)
	if err != nil {
		return nil, jwtError(err)
	}
	return identityOf(&c)
}

// key picks the key of the token's algorithm family; the parser has already
// refused algorithms outside the pinned set, so HS tokens never meet a public
// key and asymmetric tokens never meet the secret.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.secret != nil {
			return v.secret, nil
		}
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS, *jwt.SigningMethodECDSA, *jwt.SigningMethodEd25519:
		if kid, _ := t.Header["kid"].(string); v.jwks != nil && (kid != "" || v.public == nil) {
			key, alg, err := v.jwks.Key(context.Background(), kid)
			if err != nil {
				return nil, err
			}
			if alg != t.Method.Alg() {
				return nil, fail(KindAlgorithm, "token algorithm %s does not match its key", t.Method.Alg())
			}
			return key, nil
		}
		if v.public != nil {
			return v.public, nil
		}
	}
	return nil, fail(KindAlgorithm, "algorithm %s is not accepted", t.Method.Alg())
}

func jwtError(err error) error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fail(KindMalformed, "token is malformed")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if strings.Contains(err.Error(), "signing method") {
			return fail(KindAlgorithm, "token algorithm is not accepted")
		}
		return fail(KindSignature, "token signature is invalid")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return fail(KindAlgorithm, "token algorithm is not accepted")
	case errors.Is(err, jwt.ErrTokenExpired):
		return fail(KindExpired, "token has expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return fail(KindNotYetValid, "token is not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fail(KindIssuer, "token issuer is not accepted")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fail(KindAudience, "token audience is not accepted")
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return fail(KindClaims, "token claims are invalid")
	}
	return fail(KindMalformed, "token is invalid")
}

func identityOf(c *claims) (*Identity, error) {
	session := c.SID
	if session == "" {
		session = c.ID
	}
	var expires time.Time
	if c.ExpiresAt != nil {
		expires = c.ExpiresAt.Time
	}
	return NewIdentity(c.Subject, session, c.Groups, c.Lang, expires, c.Props, "sub", "sid/jti", "groups")
}

// NewIdentity checks every id of an identity against the subject-token
// rules; the field names (claims, or callout fields) go into the reasons.
func NewIdentity(user, session string, groups []string, lang string, expires time.Time, props map[string]string, userField, sessionField, groupsField string) (*Identity, error) {
	if user == "" {
		return nil, fail(KindIdentity, "%s claim is missing", userField)
	}
	if err := wire.ValidateID(user); err != nil {
		return nil, fail(KindIdentity, "%s claim is not a valid user id: %s", userField, reason(err))
	}
	if session != "" {
		if err := wire.ValidateID(session); err != nil {
			return nil, fail(KindIdentity, "%s claim is not a valid session id: %s", sessionField, reason(err))
		}
	}
	for _, g := range groups {
		if err := wire.ValidateID(g); err != nil {
			return nil, fail(KindIdentity, "%s claim has an invalid group id: %s", groupsField, reason(err))
		}
	}
	return &Identity{User: user, Session: session, Groups: dedupe(groups), Language: lang, Expires: expires, Props: props}, nil
}

func dedupe(s []string) []string {
	out := make([]string, 0, len(s))
	seen := make(map[string]bool, len(s))
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// reason strips the package prefix of a wire validation error.
func reason(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// TokenFromRequest returns the token an upgrade request carries, first found
// wins: Authorization: Bearer, then ?token=, then the cookie named cookie.
func TokenFromRequest(r *http.Request, cookie string) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if cookie != "" {
		if c, err := r.Cookie(cookie); err == nil {
			return c.Value
		}
	}
	return ""
}

// FirstLanguage returns the first language tag of an Accept-Language header
// ("de-CH,de;q=0.9" → "de-CH"), or "".
func FirstLanguage(acceptLanguage string) string {
	tag, _, _ := strings.Cut(acceptLanguage, ",")
	tag, _, _ = strings.Cut(tag, ";")
	tag = strings.TrimSpace(tag)
	if tag == "*" || len(tag) > 35 {
		return ""
	}
	return tag
}
