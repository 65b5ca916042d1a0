package config_test

import (
	"strings"
	"testing"

	"github.com/wsgate/wsgate/services/edge/internal/config"
)

func TestBadPresenceValuesNameTheVariable(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"WS_PRESENCE":        {"WS_PRESENCE": "redis"},
		"WS_PRESENCE_BUCKET": {"WS_PRESENCE_BUCKET": "a.b"},
		"WS_PRESENCE_LEASE":  {"WS_PRESENCE": "memory", "WS_PRESENCE_LEASE": "500ms"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("EDGE_JWT_SECRET", "s")
			for k, v := range env {
				t.Setenv(k, v)
			}
			_, err := config.Load()
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("error %v, want one naming %s", err, name)
			}
		})
	}
	t.Setenv("EDGE_JWT_SECRET", "s")
	t.Setenv("WS_PRESENCE", "file")
	c, err := config.Load()
	if err != nil || c.Presence != "file" || c.PresenceBucket != "wsgate_presence" || c.PresenceLease.String() != "10s" {
		t.Fatalf("%+v %v", c, err)
	}
}
