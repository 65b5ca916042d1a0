package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/services/edge/internal/config"
	"github.com/wsgate/wsgate/services/internal/logging"
)

func TestEveryVariableIsInEnvExample(t *testing.T) {
	data, err := os.ReadFile("../../../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range logging.Undocumented(data, config.Config{}) {
		t.Errorf(".env.example does not list %s", name)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"EDGE_PING_INTERVAL": "soon",
		"EDGE_SEND_QUEUE":    "0",
		"EDGE_ID":            "edge.1",
		"EDGE_PATH":          "ws",
		"WS_SUBJECT_PREFIX":  "a>b",
		"WS_PRESENCE":        "on",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			t.Setenv("EDGE_JWT_SECRET", "s")
			t.Setenv(name, value)
			_, err := config.Load()
			if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line naming %s", err, name)
			}
		})
	}
	t.Run("WS_MEMBERS_BUCKET", func(t *testing.T) {
		t.Setenv("EDGE_JWT_SECRET", "s")
		t.Setenv("WS_PRESENCE", "memory")
		t.Setenv("WS_MEMBERS_BUCKET", "a.b")
		if _, err := config.Load(); err == nil || !strings.Contains(err.Error(), "WS_MEMBERS_BUCKET") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("no key", func(t *testing.T) {
		t.Setenv("EDGE_JWT_SECRET", "")
		if _, err := config.Load(); err == nil || !strings.Contains(err.Error(), "EDGE_JWT_SECRET") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestSubjectSafe(t *testing.T) {
	if got := config.SubjectSafe("pod.web-1 x"); got != "pod-web-1-x" {
		t.Fatalf("got %q", got)
	}
}
