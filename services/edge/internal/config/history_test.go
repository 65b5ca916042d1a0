package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/edge/internal/config"
)

func TestHistoryDefaultsAndBadValues(t *testing.T) {
	t.Setenv("EDGE_JWT_SECRET", "s")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := config.History{Storage: "off", Stream: "WS_HISTORY", MaxAge: 2 * time.Minute, MaxPerSubject: 100,
		MaxBytes: 256 << 20, Replicas: 1, Replays: 32, ReplayWait: 30 * time.Second, ReplayTimeout: 10 * time.Second, Window: 64 << 20}
	if c.History != want || c.History.On() {
		t.Fatalf("defaults %+v, want %+v (off)", c.History, want)
	}
	for name, value := range map[string]string{
		"WS_HISTORY":                  "disk",
		"WS_HISTORY_STREAM":           "a.b",
		"WS_HISTORY_MAX_AGE":          "0s",
		"WS_HISTORY_MAX_PER_SUBJECT":  "0",
		"WS_HISTORY_MAX_BYTES":        "0",
		"WS_HISTORY_REPLICAS":         "4x",
		"EDGE_HISTORY_REPLAYS":        "0",
		"EDGE_HISTORY_REPLAY_WAIT":    "0s",
		"EDGE_HISTORY_REPLAY_TIMEOUT": "-1s",
		"EDGE_HISTORY_WINDOW":         "-1",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, value)
			if _, err := config.Load(); err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("error %v, want one naming %s", err, name)
			}
		})
	}
	t.Setenv("WS_HISTORY", "file")
	if c, err := config.Load(); err != nil || !c.History.On() {
		t.Fatalf("file: %+v %v", c.History, err)
	}
}
