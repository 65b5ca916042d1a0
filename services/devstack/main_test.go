package devstack_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// binDir holds the service binaries built once for every test.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsgate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := build()
	if code == 0 {
		code = runWithLeakCheck(m)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func runWithLeakCheck(m *testing.M) int {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

func build() int {
	for name, pkg := range map[string]string{
		"edge":       "github.com/wsgate/wsgate/services/edge/cmd/edge",
		"dispatcher": "github.com/wsgate/wsgate/services/dispatcher/cmd/dispatcher",
		"wsgate-dev": "github.com/wsgate/wsgate/services/devstack/cmd/wsgate-dev",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", name, err)
			return 1
		}
	}
	return 0
}

// proc is a service binary running for one test.
type proc struct {
	cmd   *exec.Cmd
	lines chan map[string]any // JSON log lines
	done  chan error
}

// start runs bin with env added to the test's environment; it is stopped
// with SIGTERM at the end of the test.
func start(t *testing.T, bin string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, bin))
	cmd.Env = append(os.Environ(), append([]string{"LOG_FORMAT=json", "LOG_LEVEL=info"}, env...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan map[string]any, 256), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case p.lines <- line:
				default: // nobody is waiting for more log lines
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitLog returns the first log line whose msg is msg.
func (p *proc) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	timeout := time.After(edgetest.Timeout)
	for {
		select {
		case line := <-p.lines:
			if line["msg"] == msg {
				return line
			}
		case err := <-p.done:
			p.done <- err
			t.Fatalf("process exited while waiting for %q: %v", msg, err)
		case <-timeout:
			t.Fatalf("no %q log line", msg)
		}
	}
}

// stop sends SIGTERM and waits for the process to exit; it is idempotent.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	// Whether it has exited is what done says: cmd.ProcessState is written
	// by the reading goroutine's Wait, so reading it here would race.
	select {
	case err := <-p.done:
		p.done <- err
		return err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails harmlessly if it has just exited
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("%s did not stop on SIGTERM", p.cmd.Path)
		return p.wait()
	}
}

// wait waits until the process has exited and returns how; done keeps the
// answer, so it may be called again (stop calls it at cleanup).
func (p *proc) wait() error {
	err := <-p.done
	p.done <- err
	return err
}

// startEdge runs an edge process and returns its ws:// URL.
func startEdge(t *testing.T, natsURL, id string, env ...string) string {
	t.Helper()
	p := start(t, "edge", append([]string{"NATS_URL=" + natsURL, "EDGE_ADDR=127.0.0.1:0", "EDGE_ID=" + id,
		"EDGE_JWT_SECRET=" + secret, "EDGE_DRAIN_TIMEOUT=200ms"}, env...)...)
	line := p.waitLog(t, "edge listening")
	return "ws://" + line["addr"].(string) + "/ws"
}

// startDispatcher runs a dispatcher process and waits until it is subscribed.
func startDispatcher(t *testing.T, natsURL string) *proc {
	t.Helper()
	p := start(t, "dispatcher", "NATS_URL="+natsURL, "DISPATCHER_ADDR=127.0.0.1:0")
	p.waitLog(t, "dispatcher subscribed")
	return p
}

const secret = "e2e-secret-0123456789"

func token(t *testing.T, user string) string {
	t.Helper()
	return edgetest.Token(t, secret, map[string]any{"sub": user})
}

func bearer(tok string) map[string][]string {
	return map[string][]string{"Authorization": {"Bearer " + tok}}
}
