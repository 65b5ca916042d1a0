package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"
)

// TestParseJWK_EC pins what an EC key of a key set must be: a point on its curve, with
// coordinates that may omit their leading zero bytes (as the big-number parse always allowed).
func TestParseJWK_EC(t *testing.T) {
	// A key whose X starts with a zero byte (one in 256), so that it can be sent short.
	var priv *ecdsa.PrivateKey
	var point []byte
	for point == nil || point[1] != 0 {
		var err error
		if priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
		if point, err = priv.PublicKey.Bytes(); err != nil {
			t.Fatal(err)
		}
	}
	x, y := point[1:33], point[33:]
	b := base64.RawURLEncoding.EncodeToString
	offCurve := append([]byte(nil), y...)
	offCurve[31] ^= 1
	tests := []struct {
		name string
		x, y string
		ok   bool
	}{
		{"on the curve", b(x), b(y), true},
		{"leading zero byte omitted", b(x[1:]), b(y), true},
		{"off the curve", b(x), b(offCurve), false},
		{"coordinate longer than the curve", b(append([]byte{1}, x...)), b(y), false},
		{"empty coordinates", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := json.Marshal(map[string]string{"kty": "EC", "kid": "k", "crv": "P-256", "x": tc.x, "y": tc.y})
			_, k, err := parseJWK(raw)
			if tc.ok != (err == nil) {
				t.Fatalf("parseJWK: err = %v, want ok = %v", err, tc.ok)
			}
			if tc.ok && !k.key.(*ecdsa.PublicKey).Equal(&priv.PublicKey) {
				t.Fatal("parsed key differs from the generated one")
			}
		})
	}
}
