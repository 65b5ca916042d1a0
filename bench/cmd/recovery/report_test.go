package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteSection_KeepsOtherSectionsAndTheTextBetween: a run replaces its
// own section and the head, and keeps the other sections and what was
// written by hand after a section (the readings of its figures).
func TestWriteSection_KeepsOtherSectionsAndTheTextBetween(t *testing.T) {
	out := filepath.Join(t.TempDir(), "recovery.md")
	for _, s := range scenarios {
		if err := writeSection(out, s, "## "+s+"\n\nfirst run\n"); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	_, catchupEnd := sectionMarks("catchup")
	const notes = "\n**Reading the catch-up** by hand.\n"
	report := strings.Replace(strings.Replace(string(b), reportHead, "# an old head\n", 1), catchupEnd+"\n", catchupEnd+"\n"+notes, 1)
	if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(out, "catchup", "## catchup\n\nsecond run\n"); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{reportHead, "## longrun\n\nfirst run\n", "## catchup\n\nsecond run\n" + catchupEnd + "\n" + notes, "## storm\n\nfirst run\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "an old head") || strings.Contains(got, "## catchup\n\nfirst run") {
		t.Errorf("the head or the catch-up's first run was kept:\n%s", got)
	}
}
