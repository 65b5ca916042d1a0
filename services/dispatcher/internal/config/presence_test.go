package config_test

import (
	"strings"
	"testing"

	"github.com/wsgate/wsgate/services/dispatcher/internal/config"
)

func TestBadPresenceValuesNameTheVariable(t *testing.T) {
	for name, value := range map[string]string{
		"WS_PRESENCE":        "redis",
		"WS_PRESENCE_BUCKET": "a.b",
		"WS_PRESENCE_GRACE":  "-1s",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, value)
			_, err := config.Load()
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("error %v, want one naming %s", err, name)
			}
		})
	}
}
