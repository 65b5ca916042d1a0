package presenceload

import (
	"testing"
	"time"
)

// TestAudit: the audit of the user events catches a duplicated transition,
// a missing one in the sequence and a last event that does not match the
// user's state, whatever order the events arrived in.
func TestAudit(t *testing.T) {
	on := func(rev uint64) event { return event{online: true, rev: rev, at: time.Now()} }
	off := func(rev uint64) event { return event{online: false, rev: rev, at: time.Now()} }
	cases := []struct {
		name       string
		evs        []event
		online     bool
		duplicated int
		missing    int
	}{
		{"online once", []event{on(1)}, true, 0, 0},
		{"out of order but alternating", []event{off(5), on(1), on(4), off(2)}, false, 0, 0},
		{"offline on the creation's revision", []event{off(3), on(3)}, false, 0, 0},
		{"offline twice", []event{on(1), off(2), off(2)}, false, 1, 0},
		{"offline missing between onlines", []event{on(1), on(5)}, true, 0, 1},
		{"online missing first", []event{off(2)}, false, 0, 1},
		{"connected without any event", nil, true, 0, 1},
		{"offline never came", []event{on(1)}, false, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &events{byUser: map[string][]event{}}
			if c.evs != nil {
				e.byUser["u"] = c.evs
			}
			a := e.audit(map[string]bool{"u": c.online})
			if a.Duplicated != c.duplicated || a.Missing != c.missing {
				t.Fatalf("duplicated %d missing %d, want %d and %d (%v)", a.Duplicated, a.Missing, c.duplicated, c.missing, a.Samples)
			}
			if a.OK() != (c.duplicated == 0 && c.missing == 0) {
				t.Fatalf("OK() = %v", a.OK())
			}
		})
	}
}
