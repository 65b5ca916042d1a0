package config_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/wsgate/wsgate/services/dispatcher/internal/config"
	"github.com/wsgate/wsgate/services/internal/logging"
)

func TestEveryVariableIsInEnvExample(t *testing.T) {
	data, err := os.ReadFile("../../../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range logging.EnvNames(config.Config{}) {
		if !regexp.MustCompile(`(?m)^#? ?` + name + `=`).Match(data) {
			t.Errorf(".env.example does not list %s", name)
		}
	}
}
