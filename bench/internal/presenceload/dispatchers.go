package presenceload

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// dispatcherStart bounds the wait for an extra dispatcher to subscribe.
const dispatcherStart = 30 * time.Second

// extraDispatcher is a dispatcher process beside the stack's one, so that
// reaps and offline transitions race between replicas (DESIGN §9: each
// event exactly once however many dispatchers run).
type extraDispatcher struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when its stdout reached EOF
}

// startDispatcher starts bin/dispatcher number n on natsURL with env added,
// logging to dir, and returns once it has subscribed.
func startDispatcher(ctx context.Context, b Bin, dir string, n int, natsURL string, env []string) (*extraDispatcher, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "dispatcher-extra"+strconv.Itoa(n)+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(b.Dir, "dispatcher"))
	cmd.Env = append(os.Environ(), append([]string{
		"DISPATCHER_ADDR=127.0.0.1:0", "NATS_URL=" + natsURL, "LOG_LEVEL=info", "LOG_FORMAT=json",
		"WS_SUBJECT_PREFIX=ws", "WS_PRESENCE=memory",
	}, env...)...)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("presenceload: start dispatcher: %w", err)
	}
	d := &extraDispatcher{cmd: cmd, log: logf, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(d.done)
		sc := bufio.NewScanner(io.TeeReader(out, logf))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), `"msg":"dispatcher subscribed"`) {
				signalled = true
				close(ready)
			}
		}
	}()
	t := time.NewTimer(dispatcherStart)
	defer t.Stop()
	select {
	case <-ready:
		return d, nil
	case <-d.done:
		err = fmt.Errorf("presenceload: dispatcher %d exited before it was ready (see %s)", n, logf.Name())
	case <-t.C:
		err = fmt.Errorf("presenceload: dispatcher %d not ready within %s (see %s)", n, dispatcherStart, logf.Name())
	case <-ctx.Done():
		err = errStopped
	}
	d.stop()
	return nil, err
}

// stop ends the dispatcher with SIGTERM (SIGKILL after a while) and waits.
func (d *extraDispatcher) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	kill := time.AfterFunc(15*time.Second, func() { _ = d.cmd.Process.Kill() })
	defer kill.Stop()
	<-d.done
	err := d.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		fmt.Fprintln(d.log, "presenceload: dispatcher:", err)
	}
	d.log.Close()
}
