package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// Tally is what the handler's file says about the run's actions.
type Tally struct {
	Deliveries   uint64 `json:"deliveries"`   // lines: every delivery the handler got
	Redeliveries uint64 `json:"redeliveries"` // deliveries with attempt > 1
	// Skipped counts deliveries whose effect had already happened: the
	// handler's idempotency check (Example_idempotent) kept them from
	// happening twice.
	Skipped      uint64 `json:"skipped"`
	Handled      int    `json:"handled"`       // actions whose effect happened (at least once)
	Lost         int    `json:"lost"`          // actions whose effect never happened
	HandledTwice int    `json:"handled_twice"` // actions whose effect happened more than once
	// StoredTwice counts actions delivered twice as a first attempt: the
	// stream stored them twice, so its dedupe failed (a resend after the
	// edge acknowledged must be a duplicate).
	StoredTwice int      `json:"stored_twice"`
	Unknown     int      `json:"unknown"` // lines that are no action of the run
	Examples    []string `json:"examples,omitempty"`
}

// OK reports whether every action was handled exactly once.
func (t Tally) OK() bool {
	return t.Lost == 0 && t.HandledTwice == 0 && t.StoredTwice == 0 && t.Unknown == 0
}

// maxExamples bounds the numbers listed for each kind of fault.
const maxExamples = 10

// tally reads the handler's lines, "<user>.<id> <attempt> <new|seen>", for
// actions numbered 0 … actions-1 (id = the number, user = "u<n mod clients>").
func tally(r io.Reader, actions, clients int) (Tally, error) {
	var t Tally
	effects := make([]uint8, actions)
	firsts := make([]uint8, actions)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		t.Deliveries++
		f := bytes.Fields(line)
		n, ok := actionOf(f, clients)
		if !ok || n >= actions {
			t.Unknown++
			t.example(fmt.Sprintf("unknown line %q", line))
			continue
		}
		attempt, err := strconv.Atoi(string(f[1]))
		if err != nil || attempt < 1 {
			t.Unknown++
			t.example(fmt.Sprintf("unknown line %q", line))
			continue
		}
		if attempt > 1 {
			t.Redeliveries++
		} else if firsts[n]++; firsts[n] == 2 {
			t.StoredTwice++
			t.example(fmt.Sprintf("action %d stored twice", n))
		}
		if string(f[2]) == "seen" {
			t.Skipped++
		}
		if string(f[2]) == "new" {
			if effects[n]++; effects[n] == 2 {
				t.HandledTwice++
				t.example(fmt.Sprintf("action %d handled twice", n))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return t, err
	}
	for n, e := range effects {
		if e == 0 {
			t.Lost++
			t.example(fmt.Sprintf("action %d lost", n))
		} else {
			t.Handled++
		}
	}
	return t, nil
}

func (t *Tally) example(s string) {
	if len(t.Examples) < maxExamples {
		t.Examples = append(t.Examples, s)
	}
}

// actionOf returns the number of the action of a line's fields, checking
// that its user is the one that sends that number.
func actionOf(f [][]byte, clients int) (int, bool) {
	if len(f) != 3 {
		return 0, false
	}
	user, id, ok := bytes.Cut(f[0], []byte("."))
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(string(id))
	if err != nil || n < 0 {
		return 0, false
	}
	if string(user) != userOf(n, clients) {
		return 0, false
	}
	return n, true
}

// userOf is the user that sends action n.
func userOf(n, clients int) string { return "u" + strconv.Itoa(n%clients) }
