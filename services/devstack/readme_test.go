package devstack_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// abnormalClosure is the close code edgetest reports for a connection that
// ended without a close frame (RFC 6455 1006).
const abnormalClosure = 1006

// readme is the README whose examples the tests run.
const readme = "../../README.md"

// shellCommands returns the commands of README's ```sh blocks that start
// with prefix, continuation lines joined, trailing comments kept.
func shellCommands(t *testing.T, prefix string) []string {
	t.Helper()
	f, err := os.Open(readme)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	inSh, cont := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```"):
			inSh = line == "```sh"
			cont = false
		case !inSh:
		case cont:
			cmds[len(cmds)-1] += " " + strings.TrimSpace(strings.TrimSuffix(line, `\`))
			cont = strings.HasSuffix(line, `\`)
		case strings.HasPrefix(line, prefix):
			cmds = append(cmds, strings.TrimSuffix(line, `\`))
			cont = strings.HasSuffix(line, `\`)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// shell runs script with bash, curl wrapped to print the HTTP status last
// ("status=202"), and returns the output.
func shell(t *testing.T, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
	defer cancel()
	const wrap = `curl() { command curl --silent --show-error --write-out '\nstatus=%{http_code}\n' "$@"; }` + "\n"
	out, err := exec.CommandContext(ctx, "bash", "-c", wrap+script).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s\n%s", err, script, out)
	}
	return string(out)
}

// expectStatus checks that out (from shell) ends with the HTTP status want.
func expectStatus(t *testing.T, cmd, out, want string) {
	t.Helper()
	if !strings.HasSuffix(strings.TrimSpace(out), "status="+want) {
		t.Fatalf("%s\nanswered %s, want HTTP %s", cmd, out, want)
	}
}

// TestREADME_HTTPAPIExamplesAgainstMakeRun runs what a new user runs: `make
// run` (bin/wsgate-dev), then the banner's curl line and every curl example
// of README.md as written, after the banner's export line. Each must answer
// the status of its "# NNN" comment and do what it says to a connection of
// user 42 in session "abc" (or, GET /v1/routes, show the dev route).
func TestREADME_HTTPAPIExamplesAgainstMakeRun(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			need(t, "no "+tool+" in PATH (Debian: apt-get install "+tool+")")
		}
	}
	cmds := shellCommands(t, "curl ")
	if len(cmds) < 2 {
		t.Fatalf("README.md has %d curl examples in ```sh blocks, want the HTTP send API's send and close", len(cmds))
	}
	banner := startWsgateDev(t)
	wsURL := bannerField(t, banner, `WebSocket\s+(\S+)`)
	secret := bannerField(t, banner, `dev secret\s+(\S+)`)
	exports := bannerField(t, banner, `\n\s+(export DISPATCHER=\S+ KEY=\S+)`)
	ready := bannerField(t, banner, `\n\s+(curl -X POST \S+/v1/send .*)`)

	c := edgetest.Dial(t, wsURL, http.Header(bearer(edgetest.Token(t, secret, map[string]any{"sub": "42", "sid": "abc"}))))
	c.ExpectOK()

	// The banner's own line, pasted as it is.
	expectStatus(t, ready, shell(t, ready), "202")
	if f := c.Expect("hello"); string(f.Details) != `"hi"` {
		t.Fatalf("the banner's curl line delivered %s", f)
	}

	status := regexp.MustCompile(`#\s*(\d{3})\b`)
	body := regexp.MustCompile(`-d '([^']*)'`)
	for _, cmd := range cmds {
		m := status.FindStringSubmatch(cmd)
		if m == nil {
			t.Fatalf("README example has no # <status> comment: %s", cmd)
		}
		out := shell(t, exports+"\n"+cmd)
		expectStatus(t, cmd, out, m[1])
		b := body.FindStringSubmatch(cmd)
		if b == nil {
			// The one example without a body reads the route table, which
			// holds the dev stack's route.
			if !strings.Contains(cmd, "/v1/routes") || !strings.Contains(out, `"dev/route"`) {
				t.Fatalf("%s\nanswered %s; want the route table with dev/route", cmd, out)
			}
			continue
		}
		var req struct {
			Target, ID, Action string
			Details            json.RawMessage
		}
		if err := json.Unmarshal([]byte(b[1]), &req); err != nil {
			t.Fatalf("README example body %s: %v", b[1], err)
		}
		if !(req.Target == "user" && req.ID == "42" || req.Target == "session" && req.ID == "abc") {
			t.Fatalf("README example targets %s %q; the test's connection is user 42, session abc: %s", req.Target, req.ID, cmd)
		}
		switch {
		case strings.Contains(cmd, "/v1/send"):
			f := c.Expect(req.Action)
			if string(f.Details) != string(req.Details) {
				t.Fatalf("%s\ndelivered %s", cmd, f)
			}
		case strings.Contains(cmd, "/v1/close"):
			if code, _ := c.WaitClose(); code == abnormalClosure {
				t.Fatalf("%s\nended the connection without a close frame", cmd)
			}
			c = edgetest.Dial(t, wsURL, http.Header(bearer(edgetest.Token(t, secret, map[string]any{"sub": "42", "sid": "abc"}))))
			c.ExpectOK()
		default:
			t.Fatalf("README example neither sends nor closes: %s", cmd)
		}
	}
}

// TestREADME_NATSPubExamplesAgainstMakeRun runs every `nats pub` of
// README.md's ```sh blocks as written, with the real NATS CLI, against
// bin/wsgate-dev (NATS_URL is the banner's NATS; `make run` listens on the
// CLI's default, 4222). Each must do what it says to a connection of user
// 42: a ws.send.* publish delivers its message, a ws.ctl.close.* one closes
// it. The CLI's sub, reply and req recipes run in TestNATSCLI_DebuggingRecipes.
func TestREADME_NATSPubExamplesAgainstMakeRun(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		need(t, "no bash in PATH (Debian: apt-get install bash)")
	}
	cmds := shellCommands(t, "nats pub ")
	if len(cmds) < 3 {
		t.Fatalf("README.md has %d `nats pub` examples in ```sh blocks, want at least 3", len(cmds))
	}
	bin := natsCLI(t)
	banner := startWsgateDev(t)
	wsURL := bannerField(t, banner, `WebSocket\s+(\S+)`)
	natsURL := bannerField(t, banner, `NATS\s+(nats://\S+)`)
	secret := bannerField(t, banner, `dev secret\s+(\S+)`)
	dial := func() *edgetest.Client {
		c := edgetest.Dial(t, wsURL, http.Header(bearer(edgetest.Token(t, secret, map[string]any{"sub": "42"}))))
		c.ExpectOK()
		return c
	}
	c := dial()
	nc := edgetest.Connect(t, natsURL)
	env := append(os.Environ(), "NATS_URL="+natsURL, "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	pub := regexp.MustCompile(`^nats pub (\S+) '([^']*)'`)
	for _, cmd := range cmds {
		m := pub.FindStringSubmatch(cmd)
		if m == nil {
			t.Fatalf("README example is not `nats pub <subject> '<payload>'`: %s", cmd)
		}
		if group, ok := strings.CutPrefix(m[1], "ws.send.group."); ok {
			// As the README's line before it does: user 42 joins the group.
			join(t, nc, group)
		}
		ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
		sh := exec.CommandContext(ctx, "bash", "-c", cmd)
		sh.Env = env
		out, err := sh.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		switch subject := m[1]; {
		case subject == "ws.send.user.42" || subject == "ws.send.all" || strings.HasPrefix(subject, "ws.send.group."):
			var msg struct {
				Action  string
				Details json.RawMessage
			}
			if err := json.Unmarshal([]byte(m[2]), &msg); err != nil {
				t.Fatalf("%s: payload: %v", cmd, err)
			}
			if f := c.Expect(msg.Action); string(f.Details) != string(msg.Details) {
				t.Fatalf("%s\ndelivered %s", cmd, f)
			}
		case subject == "ws.ctl.close.user.42":
			if code, _ := c.WaitClose(); code == abnormalClosure {
				t.Fatalf("%s\nended the connection without a close frame", cmd)
			}
			c = dial()
		default:
			t.Fatalf("README example publishes to %s; the test knows what ws.send.user.42, ws.send.all, ws.send.group.<g> and ws.ctl.close.user.42 do", subject)
		}
	}
}

// join puts user 42 into group with a join request and waits for its
// answer, as `nats req ws.ctl.join.user.42 '{"groups":[...]}'` does.
func join(t *testing.T, nc *nats.Conn, group string) {
	t.Helper()
	msg, err := nc.Request("ws.ctl.join.user.42", []byte(`{"groups":["`+group+`"]}`), edgetest.Timeout)
	if err != nil {
		t.Fatalf("join %s: %v", group, err)
	}
	if string(msg.Data) != `{"ok":true}` {
		t.Fatalf("join %s answered %s", group, msg.Data)
	}
}
