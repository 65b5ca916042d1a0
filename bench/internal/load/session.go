package load

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/wsgate/wsgate/bench/internal/hist"
)

// Commands from the controller to a worker, one per line on its stdin.
const (
	cmdSend   = "send"   // start sending requests
	cmdStop   = "stop"   // stop sending
	cmdReport = "report" // send a final report
	cmdQuit   = "quit"   // close every connection and exit
)

// Report is what a worker tells the controller, one JSON line on its stdout.
type Report struct {
	Type     string         `json:"type"` // progress, ready, result
	Counters Counters       `json:"counters"`
	Hist     *hist.Snapshot `json:"hist,omitempty"`
	AckHist  *hist.Snapshot `json:"ack_hist,omitempty"` // reliable requests: send to Server/ack
	Errors   []string       `json:"errors,omitempty"`
}

const (
	reportProgress = "progress"
	reportReady    = "ready"
	reportResult   = "result"
	// progressEvery is how often a worker reports its counters; its
	// histogram goes with every fourth report.
	progressEvery = 250 * time.Millisecond
)

// Drive runs w: it ramps, reports "ready", then obeys commands until
// "quit", the end of cmds or ctx. report may be called from two goroutines
// at once; it must serialise itself.
func Drive(ctx context.Context, w *Worker, cmds <-chan string, report func(Report)) {
	progCtx, stopProgress := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-progCtx.Done():
				return
			case <-t.C:
				r := Report{Type: reportProgress, Counters: w.Counters()}
				if n%4 == 0 {
					h := w.Hist()
					r.Hist = &h
				}
				report(r)
			}
		}
	})
	defer func() {
		stopProgress()
		bg.Wait()
		w.Close()
	}()

	w.Ramp(ctx)
	report(Report{Type: reportReady, Counters: w.Counters()})

	var snd sending
	defer snd.stop()
	for {
		var cmd string
		var ok bool
		select {
		case <-ctx.Done():
			return
		case cmd, ok = <-cmds:
		}
		if !ok || cmd == cmdQuit {
			return
		}
		switch cmd {
		case cmdSend:
			snd.start(ctx, w)
		case cmdStop:
			snd.stop()
		case cmdReport:
			h, ah := w.Hist(), w.AckHist()
			report(Report{Type: reportResult, Counters: w.Counters(), Hist: &h, AckHist: &ah, Errors: w.ErrorSamples()})
		}
	}
}

// sending is the worker's sender goroutine while it runs.
type sending struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (s *sending) start(ctx context.Context, w *Worker) {
	s.stop()
	sctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.wg.Go(func() { w.Send(sctx) })
}

func (s *sending) stop() {
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	s.wg.Wait()
}

// ServeWorker is the body of a worker process: the job comes as the first
// line of in, commands follow, reports go to out as JSON lines.
func ServeWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return errors.New("load: worker: no job on stdin")
	}
	var job Job
	if err := json.Unmarshal(sc.Bytes(), &job); err != nil {
		return fmt.Errorf("load: worker: job: %w", err)
	}
	w, err := NewWorker(job)
	if err != nil {
		return err
	}
	cmds := make(chan string, 16)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Go(func() {
		defer close(cmds)
		for sc.Scan() {
			select {
			case cmds <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	})
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	Drive(ctx, w, cmds, func(r Report) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(r)
	})
	cancel()
	// The scanner goroutine may sit in a read of stdin; the parent closes
	// it after "quit", and os.Stdin is closed here for a parent that did not.
	if f, ok := in.(*os.File); ok {
		_ = f.Close()
	}
	return nil
}

// handle is the controller's side of one worker, local or a process.
type handle struct {
	send    func(cmd string) // never blocks for long
	reports chan Report      // closed when the worker has ended
	pid     int              // the worker process, 0 when in-process
	wait    func() error     // waits for the worker's end
}

// startLocal runs a worker in this process.
func startLocal(ctx context.Context, job Job) (*handle, error) {
	w, err := NewWorker(job)
	if err != nil {
		return nil, err
	}
	cmds := make(chan string, 16)
	h := &handle{reports: make(chan Report, 64)}
	h.send = func(cmd string) { cmds <- cmd }
	done := make(chan struct{})
	var mu sync.Mutex
	go func() {
		defer close(done)
		defer close(h.reports)
		Drive(ctx, w, cmds, func(r Report) {
			mu.Lock()
			defer mu.Unlock()
			h.reports <- r
		})
	}()
	h.wait = func() error { <-done; return nil }
	return h, nil
}

// startProcess runs a worker as a child process of exe ("exe worker").
func startProcess(ctx context.Context, exe string, job Job, stderr io.Writer) (*handle, error) {
	cmd := exec.Command(exe, "worker")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("load: start worker: %w", err)
	}
	line, _ := json.Marshal(job)
	if _, err := stdin.Write(append(line, '\n')); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("load: worker job: %w", err)
	}
	h := &handle{reports: make(chan Report, 64), pid: cmd.Process.Pid}
	var mu sync.Mutex
	closed := false
	h.send = func(c string) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		_, _ = io.WriteString(stdin, c+"\n")
		if c == cmdQuit {
			closed = true
			_ = stdin.Close()
		}
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(h.reports)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var r Report
			if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
				h.reports <- r
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	h.wait = func() error {
		<-readDone
		stop()
		return cmd.Wait()
	}
	return h, nil
}
