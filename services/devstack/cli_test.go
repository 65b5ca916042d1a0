package devstack_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// natsCLIVersion is the NATS CLI the README's debugging section is tested with.
const natsCLIVersion = "v0.5.0"

// natsCLI builds the real NATS CLI from the Go module proxy once per machine
// (into the user cache directory) and returns its path.
func natsCLI(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "wsgate", "natscli-"+natsCLIVersion)
	bin := filepath.Join(dir, "nats")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "install", "github.com/nats-io/natscli/nats@"+natsCLIVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the NATS CLI %s: %v\n%s", natsCLIVersion, err, out)
	}
	return bin
}

// cli runs the NATS CLI against url and returns its output.
func cli(t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--server", url}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestNATSCLI_DebuggingRecipes runs the README's "Debugging with the NATS
// CLI" commands with the real CLI against a running stack.
func TestNATSCLI_DebuggingRecipes(t *testing.T) {
	bin := natsCLI(t)
	ns := edgetest.RunNATS(t)
	url := ns.ClientURL()
	edgeURL := startEdge(t, url, "edge1", "EDGE_AUTH_CALLOUT_SUBJECT=app.auth")
	startDispatcher(t, url)

	// nats pub ws.send.user.42 … reaches every tab of user 42.
	tab := edgetest.Dial(t, edgeURL, http.Header(bearer(token(t, "42"))))
	tab.ExpectOK()
	cli(t, bin, url, "pub", "ws.send.user.42", `{"action":"hello","details":"Hello from the CLI"}`)
	if f := tab.Expect("hello"); f.String() != `["hello","Hello from the CLI"]` {
		t.Fatalf("got %s", f)
	}

	// nats sub 'ws.in.>' sees what clients send, with identity, and the
	// lifecycle events.
	ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
	defer cancel()
	var out bytes.Buffer
	sub := exec.CommandContext(ctx, bin, "--server", url, "sub", "ws.in.>", "--count", "2")
	sub.Stdout, sub.Stderr = &out, &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, "CLI subscribed", func() bool {
		sz, err := ns.Subsz(&natsserver.SubszOptions{Subscriptions: true, Test: "ws.in.cli-probe"})
		return err == nil && sz.Total == 1
	})
	tab.Send("chat/send", map[string]string{"text": "seen by the CLI"})
	tab.Expect("chat/message")
	viewer := edgetest.Dial(t, edgeURL, http.Header(bearer(token(t, "viewer"))))
	viewer.ExpectOK()
	if err := sub.Wait(); err != nil {
		t.Fatalf("nats sub: %v\n%s", err, out.String())
	}
	for _, want := range []string{"ws.in.chat/send", `"text":"seen by the CLI"`, `"user":"42"`, "ws.in.Client/authentication", `"user":"viewer"`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("nats sub output lacks %q:\n%s", want, out.String())
		}
	}

	// nats reply as the auth callout: a responder written with the CLI.
	rctx, rcancel := context.WithCancel(context.Background())
	reply := exec.CommandContext(rctx, bin, "--server", url, "reply", "app.auth", `{"user":"cli-user","groups":["cli"]}`)
	if err := reply.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { rcancel(); _ = reply.Wait() }()
	edgetest.Eventually(t, "CLI responder subscribed", func() bool {
		sz, err := ns.Subsz(&natsserver.SubszOptions{Subscriptions: true, Test: "app.auth"})
		return err == nil && sz.Total == 1
	})
	cookieTab := edgetest.Dial(t, edgeURL, http.Header{"Cookie": {"session=anything"}})
	cookieTab.ExpectOK()
	cli(t, bin, url, "pub", "ws.send.group.cli", `{"action":"hi","details":"to the cli group"}`)
	cookieTab.Expect("hi")

	// nats req: ask the callout responder directly, as the edge does.
	if got := cli(t, bin, url, "req", "app.auth", `{"edge":"x","remote_addr":"127.0.0.1:1"}`); !strings.Contains(got, `"user":"cli-user"`) {
		t.Fatalf("nats req answered %s", got)
	}
}
