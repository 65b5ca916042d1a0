package config_test

import (
	"os"
	"testing"

	"github.com/wsgate/wsgate/services/dispatcher/internal/config"
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
