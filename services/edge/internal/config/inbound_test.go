package config_test

import (
	"strings"
	"testing"

	"github.com/wsgate/wsgate/services/edge/internal/config"
)

func TestInboundValuesNameTheVariable(t *testing.T) {
	cases := []struct{ name, value string }{
		{"WS_INBOUND", "disk"},
		{"WS_INBOUND_STREAM", "a.b"},
		{"WS_INBOUND_DEDUPE", "0s"},
		{"WS_INBOUND_REPLICAS", "7"},
		{"WS_INBOUND_MAX_AGE", "-1s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("EDGE_JWT_SECRET", "s")
			t.Setenv("WS_INBOUND", "memory")
			t.Setenv(tc.name, tc.value)
			_, err := config.Load()
			if err == nil || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("error %v, want one naming %s", err, tc.name)
			}
		})
	}
	t.Run("off by default", func(t *testing.T) {
		t.Setenv("EDGE_JWT_SECRET", "s")
		c, err := config.Load()
		if err != nil || c.InboundOn() || c.InboundDedupe.String() != "2m0s" {
			t.Fatalf("defaults %q %v (%v)", c.Inbound, c.InboundDedupe, err)
		}
	})
}
