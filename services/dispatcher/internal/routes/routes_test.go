package routes_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/dispatcher/internal/routes"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writeFile writes content to name in a fresh directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadReadsYAMLAndJSONAlike(t *testing.T) {
	yamlFile := writeFile(t, "routes.yaml", `
routes:
  - action: hello
    url: http://app.internal/ws/hello
  - prefix: shop/
    url: https://shop.internal/ws
    timeout: 1500ms
    retries: 2
    idempotent: true
`)
	jsonFile := writeFile(t, "routes.json", `{"routes": [
  {"action": "hello", "url": "http://app.internal/ws/hello"},
  {"prefix": "shop/", "url": "https://shop.internal/ws", "timeout": "1500ms", "retries": 2, "idempotent": true}
]}`)
	want := []routes.Route{
		{Action: "hello", URL: "http://app.internal/ws/hello", Timeout: routes.DefaultTimeout},
		{Prefix: "shop/", URL: "https://shop.internal/ws", Timeout: 1500 * time.Millisecond, Retries: 2, Idempotent: true},
	}
	for _, path := range []string{yamlFile, jsonFile} {
		table, err := routes.Load(path)
		if err != nil {
			t.Fatalf("Load(%s): %v", path, err)
		}
		if got := table.Routes(); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: routes %+v, want %+v", path, got, want)
		}
		for action, covered := range map[string]bool{"hello": true, "shop/cart/add": true, "hello2": false, "shop": false} {
			if table.Covers(action) != covered {
				t.Errorf("%s: Covers(%q) = %v", path, action, !covered)
			}
		}
	}
}

func TestLoadRefusesBadFilesNamingTheRouteAndField(t *testing.T) {
	ok := `"url": "http://app/ws"`
	tests := []struct {
		name, file, content string
		want                string // after "<path>: "
	}{
		{"not YAML", "r.yaml", "routes: [\n  - action: a\n  url: x", "not valid YAML: "},
		{"not JSON", "r.json", `{"routes": [}`, "routes file is not valid JSON: "},
		{"other extension", "r.toml", `routes = []`, `want a .yaml, .yml or .json file, not ".toml"`},
		{"unknown top-level field", "r.json", `{"routes": [{"action": "a", ` + ok + `}], "secret": "x"}`, `routes file has an unknown field "secret"`},
		{"no routes", "r.yaml", `routes: []`, `no routes: want {"routes": [{"action": "...", "url": "..."}, ...]}`},
		{"unknown route field", "r.yaml", "routes:\n  - action: a\n    url: http://app/ws\n    retry: 2", `routes[0]: route has an unknown field "retry"`},
		{"retries not a number", "r.json", `{"routes": [{"action": "a", ` + ok + `, "retries": "2"}]}`, `routes[0]: "retries" must be an integer`},
		{"timeout a number", "r.yaml", "routes:\n  - action: a\n    url: http://app/ws\n    timeout: 5", `routes[0]: "timeout" must be a string`},
		{"neither action nor prefix", "r.json", `{"routes": [{` + ok + `}]}`, `routes[0].action: set "action" (one action) or "prefix" (every action under it)`},
		{"action and prefix", "r.json", `{"routes": [{"action": "a", "prefix": "b/", ` + ok + `}]}`, `routes[0].prefix: set "action" or "prefix", not both`},
		{"bad action", "r.json", `{"routes": [{"action": "a", ` + ok + `}, {"action": "a.b", ` + ok + `}]}`, `routes[1].action: invalid action: character '.' at position 1 is not one of A-Z a-z 0-9 _ - / :`},
		{"bad prefix", "r.json", `{"routes": [{"prefix": "shop/*", ` + ok + `}]}`, `routes[0].prefix: invalid action: character '*' at position 5 is not one of A-Z a-z 0-9 _ - / :`},
		{"duplicate action", "r.json", `{"routes": [{"action": "a", ` + ok + `}, {"prefix": "a", ` + ok + `}, {"action": "a", ` + ok + `}]}`, `routes[2].action: "a" is already routed by routes[0]`},
		{"duplicate prefix", "r.json", `{"routes": [{"prefix": "p/", ` + ok + `}, {"prefix": "p/", ` + ok + `}]}`, `routes[1].prefix: "p/" is already routed by routes[0]`},
		{"no url", "r.json", `{"routes": [{"action": "a"}]}`, `routes[0].url: required`},
		{"relative url", "r.json", `{"routes": [{"action": "a", "url": "/ws/a"}]}`, `routes[0].url: want an http:// or https:// URL, not scheme ""`},
		{"ftp url", "r.json", `{"routes": [{"action": "a", "url": "ftp://app/a"}]}`, `routes[0].url: want an http:// or https:// URL, not scheme "ftp"`},
		{"url without host", "r.json", `{"routes": [{"action": "a", "url": "http:///a"}]}`, `routes[0].url: has no host`},
		{"url with credentials", "r.json", `{"routes": [{"action": "a", "url": "http://u:p@app/a"}]}`, `routes[0].url: must not hold credentials`},
		{"bad timeout", "r.json", `{"routes": [{"action": "a", ` + ok + `, "timeout": "5 sec"}]}`, `routes[0].timeout: "5 sec" is not a duration such as "5s" or "500ms"`},
		{"negative timeout", "r.json", `{"routes": [{"action": "a", ` + ok + `, "timeout": "-1s"}]}`, `routes[0].timeout: must be positive, got -1s`},
		{"long timeout", "r.json", `{"routes": [{"action": "a", ` + ok + `, "timeout": "2m"}]}`, `routes[0].timeout: at most 1m0s, got 2m`},
		{"negative retries", "r.json", `{"routes": [{"action": "a", ` + ok + `, "retries": -1, "idempotent": true}]}`, `routes[0].retries: must be 0 or more, got -1`},
		{"too many retries", "r.json", `{"routes": [{"action": "a", ` + ok + `, "retries": 6, "idempotent": true}]}`, `routes[0].retries: at most 5, got 6`},
		{"retries without idempotent", "r.yaml", "routes:\n  - action: a\n    url: http://app/ws\n    retries: 1", `routes[0].retries: need "idempotent": true; a request that is not idempotent is never sent twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file, tt.content)
			_, err := routes.Load(path)
			if err == nil {
				t.Fatal("Load accepted the file")
			}
			if msg := err.Error(); !strings.HasPrefix(msg, path+": "+tt.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error\n  %s\nwant one line starting with\n  %s: %s", msg, path, tt.want)
			}
		})
	}
	if _, err := routes.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestFitsAckWait: a route may take up to its timeout; a reliable action's
// delivery must be answered before the ack wait, or it is delivered again.
func TestFitsAckWait(t *testing.T) {
	table, err := routes.Load(writeFile(t, "routes.yaml", `
routes:
  - action: hello
    url: http://app.internal/ws/hello
  - prefix: shop/
    url: https://shop.internal/ws
    timeout: 20s
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := table.FitsAckWait(20*time.Second + time.Millisecond); err != nil {
		t.Fatalf("a timeout under the ack wait: %v", err)
	}
	err = table.FitsAckWait(20 * time.Second)
	if err == nil || !strings.HasPrefix(err.Error(), "route shop/*: timeout 20s is not shorter than DISPATCHER_ACK_WAIT (20s)") {
		t.Fatalf("a timeout equal to the ack wait: %v", err)
	}
}
