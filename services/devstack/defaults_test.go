package devstack_test

import (
	"os"
	"testing"

	"github.com/wsgate/wsgate/services/devstack"
	"github.com/wsgate/wsgate/services/dispatcher/service"
	"github.com/wsgate/wsgate/services/edge"
)

// TestDefaults_ValidAndYieldToTheEnvironment checks the dev stack's settings:
// the services accept them, they turn on the HTTP send API and the dev
// route with secrets new at each start, and a variable already set wins.
func TestDefaults_ValidAndYieldToTheEnvironment(t *testing.T) {
	listen := devstack.Listen{Edge: "127.0.0.1:0", Dispatcher: "127.0.0.1:0"}
	first, second := map[string]string{}, map[string]string{}
	for _, s := range devstack.Defaults(listen) {
		if s.Why == "" {
			t.Errorf("%s: no reason given", s.Name)
		}
		first[s.Name] = s.Value
	}
	for _, s := range devstack.Defaults(listen) {
		second[s.Name] = s.Value
	}
	for _, name := range []string{"EDGE_JWT_SECRET", "DISPATCHER_API_KEYS", "DISPATCHER_ROUTES_SECRET"} {
		if first[name] == "" || first[name] == second[name] {
			t.Errorf("%s: %q then %q, want a new secret each start", name, first[name], second[name])
		}
	}

	// The environment's own value wins; the rest is set.
	for name := range first {
		if v, ok := os.LookupEnv(name); ok {
			t.Setenv(name, v) // restored after the test
		} else {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	t.Setenv("EDGE_ID", "mine")
	if err := devstack.Apply(devstack.Defaults(listen), os.LookupEnv, os.Setenv); err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv("EDGE_ID"); got != "mine" {
		t.Errorf("EDGE_ID=%q after Apply, want the environment's mine", got)
	}
	edgeCfg, err := edge.LoadConfig()
	if err != nil {
		t.Fatalf("the edge refuses the dev settings: %v", err)
	}
	dispCfg, err := service.LoadConfig()
	if err != nil {
		t.Fatalf("the dispatcher refuses the dev settings: %v", err)
	}
	if edgeCfg.JWTSecret == "" || len(dispCfg.APIKeyList()) != 1 || dispCfg.RoutesSecret == "" {
		t.Errorf("dev settings leave a feature off: JWT secret %t, API keys %d, routes secret %t",
			edgeCfg.JWTSecret != "", len(dispCfg.APIKeyList()), dispCfg.RoutesSecret != "")
	}
	if !edgeCfg.PresenceOn() || dispCfg.Presence != edgeCfg.Presence {
		t.Errorf("dev settings: WS_PRESENCE %q at the edge, %q at the dispatcher; want it on at both (the demo's online list)",
			edgeCfg.Presence, dispCfg.Presence)
	}
}
