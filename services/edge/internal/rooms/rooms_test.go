package rooms

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestKey: KV keys keep plain ids readable and never collide, and every
// character an id may hold becomes a valid KV key character.
func TestKey(t *testing.T) {
	for id, want := range map[string]string{
		"42":      "user.42",
		"a@b.c":   "user.a=40b.c",
		"x+y~z:w": "user.x=2By=7Ez=3Aw",
		"a=40":    "user.a=3D40",
		"A_b-9":   "user.A_b-9",
	} {
		if got := Key("user", id); got != want {
			t.Errorf("Key(user, %q) = %q, want %q", id, got, want)
		}
	}
	if Key("user", "a@") == Key("user", "a=40") {
		t.Error("escaped ids collide")
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in, kind, key string
		ok            bool
	}{
		{"user.42", "user", "42", true},
		{"session.s@1", "session", "s@1", true},
		{"conn.e1.c1", "conn", "e1.c1", true},
		{"conn.e1", "", "", false},
		{"conn.e1.c1.x", "conn", "e1.c1.x", false},
		{"user.a.b", "user", "a.b", false},
		{"user.", "", "", false},
		{"group.g", "", "", false},
		{"user", "", "", false},
	} {
		kind, key, ok := parseTarget(tc.in)
		if ok != tc.ok || (ok && (kind != tc.kind || key != tc.key)) {
			t.Errorf("parseTarget(%q) = %q %q %v, want %q %q %v", tc.in, kind, key, ok, tc.kind, tc.key, tc.ok)
		}
	}
}
