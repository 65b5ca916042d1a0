// Package wire is the wire contract shared by the edge, the dispatcher and any
// Go service: client frames, server frames, the inbound envelope, outbound
// messages, auth-callout messages and the NATS subjects they travel on.
package wire

import (
	"errors"
	"fmt"
)

// Limits of the names that become NATS subject tokens.
const (
	MaxActionLen = 128
	MaxIDLen     = 128
	MaxRefLen    = 64
)

// Sentinel errors of validation; the returned errors wrap them with the reason.
var (
	ErrBadAction = errors.New("wire: invalid action")
	ErrBadID     = errors.New("wire: invalid id")
)

// Lookup tables: true for a byte allowed in an action or an id.
var (
	actionChars = charTable("_-/:")
	idChars     = charTable("_-@+=~:")
)

func charTable(extra string) *[256]bool {
	var t [256]bool
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for i := 0; i < len(extra); i++ {
		t[extra[i]] = true
	}
	return &t
}

// ValidateAction reports whether s is a valid action: 1–128 characters of
// A-Z a-z 0-9 _ - / : (so never a NATS subject separator or wildcard).
func ValidateAction(s string) error {
	return validate(s, MaxActionLen, actionChars, ErrBadAction, "A-Z a-z 0-9 _ - / :")
}

// ValidateID reports whether s is a valid user, session, group, edge or
// connection id: 1–128 characters of A-Z a-z 0-9 _ - @ + = ~ :.
func ValidateID(s string) error {
	return validate(s, MaxIDLen, idChars, ErrBadID, "A-Z a-z 0-9 _ - @ + = ~ :")
}

func validate(s string, max int, allowed *[256]bool, sentinel error, set string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", sentinel)
	case len(s) > max:
		return fmt.Errorf("%w: longer than %d characters", sentinel, max)
	}
	for i := 0; i < len(s); i++ {
		if !allowed[s[i]] {
			return fmt.Errorf("%w: character %q at position %d is not one of %s", sentinel, s[i], i, set)
		}
	}
	return nil
}

// validToken is validate for bytes, without the reason.
func validToken(s []byte, max int, allowed *[256]bool) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for _, c := range s {
		if !allowed[c] {
			return false
		}
	}
	return true
}
