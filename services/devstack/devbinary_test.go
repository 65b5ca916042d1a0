package devstack_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// startWsgateDev runs bin/wsgate-dev as `make run` does, with env added to
// the test's environment, stops it with SIGTERM when the test ends, and
// returns the banner it printed.
func startWsgateDev(t *testing.T, env ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "wsgate-dev"), "-nats-port", "-1", "-edge", "127.0.0.1:0", "-dispatcher", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), append([]string{"LOG_LEVEL=warn", "EDGE_DRAIN_TIMEOUT=200ms"}, env...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "ws.in.>") { // the banner's last line
				banner <- b.String()
			}
		}
		_, _ = io.Copy(io.Discard, out)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("wsgate-dev exited with %v after SIGTERM", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("wsgate-dev did not stop on SIGTERM")
		}
	})
	select {
	case text := <-banner:
		return text
	case err := <-exited:
		exited <- err
		t.Fatalf("wsgate-dev exited: %v", err)
	case <-time.After(edgetest.Timeout):
		t.Fatal("wsgate-dev printed no banner")
	}
	return ""
}

// bannerField returns the first group of re in wsgate-dev's banner.
func bannerField(t *testing.T, banner, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner has no %s:\n%s", re, banner)
	}
	return m[1]
}

// TestWsgateDev_MakeRunStack runs bin/wsgate-dev as `make run` does and uses
// what its banner prints: the demo page, a token, the WebSocket and NATS URLs.
func TestWsgateDev_MakeRunStack(t *testing.T) {
	text := startWsgateDev(t)
	page := bannerField(t, text, `demo page\s+(\S+)`)
	wsURL := bannerField(t, text, `WebSocket\s+(\S+)`)
	natsURL := bannerField(t, text, `NATS\s+(nats://\S+)`)
	tok := bannerField(t, text, `token \(user 42, 24 h\):\n\s+(\S+)`)

	resp, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<html") {
		t.Fatalf("demo page: %d %.200s", resp.StatusCode, body)
	}

	// The printed token works, and a NATS publish reaches user 42.
	c := edgetest.Dial(t, wsURL, http.Header(bearer(tok)))
	c.ExpectOK()
	nc := edgetest.Connect(t, natsURL)
	if err := nc.Publish("ws.send.user.42", []byte(`{"action":"hello","details":"Hello from the CLI"}`)); err != nil {
		t.Fatal(err)
	}
	if f := c.Expect("hello"); string(f.Details) != `"Hello from the CLI"` {
		t.Fatalf("got %s", f)
	}

	// The demo's sign-in mints a token; the seed's hello goes round.
	resp, err = http.Post(strings.TrimSuffix(page, "/")+"/dev/token", "application/json", strings.NewReader(`{"user":"ann"}`))
	if err != nil {
		t.Fatal(err)
	}
	var minted struct {
		Token string `json:"token"`
		WSURL string `json:"ws_url"`
	}
	err = json.NewDecoder(resp.Body).Decode(&minted)
	resp.Body.Close()
	if err != nil || minted.WSURL != wsURL {
		t.Fatalf("token answer %+v %v", minted, err)
	}
	ann := edgetest.Dial(t, minted.WSURL, nil)
	ann.Authenticate(minted.Token)
	ann.Send("hello", "Hello, world!")
	if f := ann.Expect("hello"); string(f.Details) != `"Hello, world!"` {
		t.Fatalf("got %s", f)
	}
	resp, err = http.Post(strings.TrimSuffix(page, "/")+"/dev/token", "application/json", strings.NewReader(`{"user":"a.b"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad user name answered %d", resp.StatusCode)
	}
}

// TestWsgateDev_DevRouteRoundTrip sends the action `make run` routes over
// HTTP: the dispatcher POSTs the signed envelope to the dev stack's backend,
// which checks the signature, and its answer reaches the client as a reply.
func TestWsgateDev_DevRouteRoundTrip(t *testing.T) {
	text := startWsgateDev(t)
	if want := "HTTP route    dev/route -> "; !strings.Contains(text, want) {
		t.Errorf("banner lacks %q:\n%s", want, text)
	}
	c := edgetest.Dial(t, bannerField(t, text, `WebSocket\s+(\S+)`), http.Header(bearer(bannerField(t, text, `token \(user 42, 24 h\):\n\s+(\S+)`))))
	c.ExpectOK()
	c.Send("dev/route", "hi", 7)
	f := c.Expect("dev/route")
	var d struct {
		Backend, User string
		Received      string
	}
	if err := json.Unmarshal(f.Details, &d); err != nil || d.Received != "hi" || d.User != "42" || d.Backend == "" || string(f.Ref) != "7" {
		t.Fatalf("reply %s (%v), want the dev backend's answer to user 42's hi with ref 7", f, err)
	}
}
