package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
)

// TestRecorder_EffectOncePerKeyAcrossRestarts: a redelivery, in the same
// process or after a restart that reads the file back, is recorded as seen,
// never as a second effect.
func TestRecorder_EffectOncePerKeyAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handled.log")
	msg := func(id string, attempt int) *dispatcher.Message {
		return &dispatcher.Message{Envelope: wire.Envelope{User: "u1"}, ID: id, Attempt: attempt}
	}
	r, err := openRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*dispatcher.Message{msg("7", 1), msg("7", 2), msg("", 1)} {
		if err := r.handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	r.close()
	// A restarted handler knows what the file says is done.
	r, err = openRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.seenCount() != 1 {
		t.Fatalf("reopened recorder knows %d keys, want 1", r.seenCount())
	}
	for _, m := range []*dispatcher.Message{msg("7", 3), msg("8", 1)} {
		if err := r.handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	r.close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "u1.7 1 new\nu1.7 2 seen\nu1.7 3 seen\nu1.8 1 new\n"
	if string(data) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", data, want)
	}
}
