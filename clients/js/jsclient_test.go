package jsclient

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const jsType = "application/javascript; charset=utf-8"

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandlerServesBothVariants(t *testing.T) {
	h := Handler("/ws")
	tests := []struct {
		name string
		path string
		want []byte
	}{
		{name: "classic", path: "/client.js", want: Classic()},
		{name: "module", path: "/client.mjs", want: Module()},
		{name: "shared worker", path: "/wsgate-worker.js", want: Worker()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, http.MethodGet, tc.path, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200", rec.Code)
			}
			hdr := rec.Header()
			if got := hdr.Get("Content-Type"); got != jsType {
				t.Errorf("Content-Type = %q, want %q", got, jsType)
			}
			if got := hdr.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			if got := hdr.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
			}
			etag := hdr.Get("ETag")
			if !regexp.MustCompile(`^"[0-9a-f]{32}"$`).MatchString(etag) {
				t.Errorf("ETag = %q, want a strong quoted hash", etag)
			}
			if !bytes.Equal(rec.Body.Bytes(), tc.want) {
				t.Errorf("body differs from the %s variant", tc.name)
			}

			rec = get(t, h, http.MethodGet, tc.path, map[string]string{"If-None-Match": etag})
			if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
				t.Errorf("If-None-Match: status = %d, body %d bytes; want 304 and none", rec.Code, rec.Body.Len())
			}
			rec = get(t, h, http.MethodGet, tc.path, map[string]string{"If-None-Match": `"other"`})
			if rec.Code != http.StatusOK {
				t.Errorf("If-None-Match with another tag: status = %d, want 200", rec.Code)
			}

			rec = get(t, h, http.MethodHead, tc.path, nil)
			if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
				t.Errorf("HEAD: status = %d, body %d bytes; want 200 and none", rec.Code, rec.Body.Len())
			}
			if rec.Header().Get("ETag") != etag || rec.Header().Get("Content-Type") != jsType {
				t.Errorf("HEAD headers = %v", rec.Header())
			}
		})
	}
}

func TestHandlerRejects(t *testing.T) {
	h := Handler("/ws")
	tests := []struct {
		name   string
		method string
		path   string
		want   int
	}{
		{name: "unknown path", method: http.MethodGet, path: "/client.css", want: http.StatusNotFound},
		{name: "root", method: http.MethodGet, path: "/", want: http.StatusNotFound},
		{name: "post", method: http.MethodPost, path: "/client.js", want: http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, tc.method, tc.path, nil)
			if rec.Code != tc.want {
				t.Errorf("status = %d, want %d", rec.Code, tc.want)
			}
		})
	}
}

func TestHandlerSubstitutesPath(t *testing.T) {
	tests := []struct {
		name   string
		wsPath string
		want   string
	}{
		{name: "default", wsPath: "/ws", want: `const DEFAULT_PATH = "/ws";`},
		{name: "empty means default", wsPath: "", want: `const DEFAULT_PATH = "/ws";`},
		{name: "custom", wsPath: "/realtime/socket", want: `const DEFAULT_PATH = "/realtime/socket";`},
		{name: "slash added", wsPath: "socket", want: `const DEFAULT_PATH = "/socket";`},
		{name: "quoted safely", wsPath: `/a"</script>`, want: `const DEFAULT_PATH = "/a\"\u003c/script\u003e";`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := Handler(tc.wsPath)
			for _, path := range []string{"/client.js", "/client.mjs"} {
				body := get(t, h, http.MethodGet, path, nil).Body.String()
				if n := strings.Count(body, "const DEFAULT_PATH = "); n != 1 {
					t.Fatalf("%s: %d DEFAULT_PATH lines, want 1", path, n)
				}
				if !strings.Contains(body, tc.want) {
					t.Errorf("%s: no line %s", path, tc.want)
				}
			}
		})
	}
	a := get(t, Handler("/ws"), http.MethodGet, "/client.js", nil).Header().Get("ETag")
	b := get(t, Handler("/other"), http.MethodGet, "/client.js", nil).Header().Get("ETag")
	if a == b {
		t.Errorf("ETag %s is the same for two different paths", a)
	}
}

func TestClassic(t *testing.T) {
	classic := Classic()
	if regexp.MustCompile(`(?m)^\s*export\b`).Match(classic) {
		t.Error("the classic variant still has an export statement")
	}
	for _, want := range []string{"(function () {\n\"use strict\";\n", "installGlobals(typeof window", "})();\n"} {
		if !bytes.Contains(classic, []byte(want)) {
			t.Errorf("the classic variant lacks %q", want)
		}
	}
	if !bytes.HasSuffix(bytes.TrimSpace(Module()), []byte("export { createClient, installGlobals, serveSharedWorker, WsgateError, DEFAULT_PATH, FINAL_CLOSE_CODES, PHASES };")) {
		t.Error("the module does not end with its export statement")
	}
	// Callers own what they get.
	Module()[0] = 'X'
	if Module()[0] == 'X' {
		t.Error("Module returns the embedded bytes themselves")
	}
}

func TestToClassicNeedsTheExport(t *testing.T) {
	if _, err := toClassic([]byte("const a = 1;\nexport { a };\nconsole.log(a);\n")); err == nil {
		t.Error("accepted a source whose export is not the last statement")
	}
	if _, err := toClassic([]byte("const a = 1;\n")); err == nil {
		t.Error("accepted a source without export")
	}
}

// node returns the path of node, or skips the test; in CI a missing node is
// a failure, not a skip.
func node(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node is required under CI=true: %v", err)
		}
		t.Skipf("node not found, JS checks not run: %v", err)
	}
	return path
}

func TestNodeParsesBothVariants(t *testing.T) {
	bin := node(t)
	dir := t.TempDir()
	for name, body := range map[string][]byte{"client.js": Classic(), "client.mjs": Module(), "wsgate-worker.js": Worker()} {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, body, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "--check", file).CombinedOutput(); err != nil {
			t.Errorf("node --check %s: %v\n%s", name, err, out)
		}
	}
}

// TestNodeUnitTests runs the JS unit tests, so that go test covers them; the
// classic tests get the classic build from here instead of building it.
func TestNodeUnitTests(t *testing.T) {
	bin := node(t)
	classic := filepath.Join(t.TempDir(), "client.js")
	if err := os.WriteFile(classic, Classic(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--test", "test/")
	cmd.Env = append(os.Environ(), "WSGATE_CLASSIC_JS="+classic)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test test/: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

func TestFinalCloseCodes(t *testing.T) {
	got, err := finalCloseCodes([]byte("const A = 1;\nconst FINAL_CLOSE_CODES = [4401, 4403];\n"))
	if err != nil || !slices.Equal(got, []int{4401, 4403}) {
		t.Errorf("finalCloseCodes = %v, %v; want [4401 4403]", got, err)
	}
	// DESIGN.md §2: authentication failed, origin or permission refused.
	if got := FinalCloseCodes(); !slices.Equal(got, []int{4401, 4403}) {
		t.Errorf("FinalCloseCodes of the embedded source = %v, want [4401 4403]", got)
	}
	for _, src := range []string{
		"const FINAL_CLOSE_CODES = [4401,\n 4403];\n",
		"const FINAL_CLOSE_CODES = [4401, x];\n",
		"const FINAL_CLOSE_CODES = [4401];\nconst FINAL_CLOSE_CODES = [4403];\n",
		"",
	} {
		if got, err := finalCloseCodes([]byte(src)); err == nil {
			t.Errorf("finalCloseCodes(%q) = %v, want an error", src, got)
		}
	}
}
