// Command floor measures what this machine allows before any gateway runs:
// how long plain TCP writes of one message to N loopback sockets take to
// reach their readers (no WebSocket, no NATS, no routing), and how much CPU
// one timer wake-up of an otherwise idle Go process costs. The first bounds
// the latency of a broadcast, the second the idle CPU of every server here.
//
//	floor -conns 10000 -readers 2 -writers 2 -rate 5 -messages 50 -json out.json
//
// The writer (this process) holds the accepted sockets and writes each
// message to all of them from -writers goroutines, as an edge's flush
// workers do. The readers are child processes ("floor reader"), each with
// one epoll loop over its share of the connections, as the load tool's
// workers have. Every message carries its send time; latency is from there
// to the read that returned it. The summary line goes to stdout, the full
// record to -json.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/bench/internal/hist"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

// Record is the JSON record of a run.
type Record struct {
	Conns    int `json:"conns"`
	Readers  int `json:"readers"`
	Writers  int `json:"writers"`
	Size     int `json:"size"`
	Messages int `json:"messages"`
	// Rate is messages per second, each to every connection.
	Rate     float64 `json:"rate"`
	Received uint64  `json:"received"`
	Expected uint64  `json:"expected"`
	// Latency percentiles of the fan-out, in milliseconds.
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	// WriteMs is the median time the writers took to write one message to
	// every connection.
	WriteMs float64 `json:"write_ms"`
	// WriterCPUUs and ReaderCPUUs are the CPU, user and system, that the
	// writer and the readers spent per delivered message from the first
	// write to the last read: a gateway's server CPU per delivery and the
	// load tool's compare with them.
	WriterCPUUs float64 `json:"writer_cpu_per_delivery_us"`
	ReaderCPUUs float64 `json:"reader_cpu_per_delivery_us"`
	// WakeupUs is the CPU, user and system, of one wake-up of a Go process
	// that does nothing but sleep 10 ms at a time (runtime defaults): the
	// machine's price of a timer, which every idle server here pays.
	WakeupUs float64 `json:"wakeup_us"`
	Command  string  `json:"command"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "reader":
			return reader(ctx, args[1:], os.Stdin, stdout)
		case "sleeper":
			return sleeper(stdout)
		}
	}
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conns := fs.Int("conns", 10000, "connections")
	readers := fs.Int("readers", 2, "reader processes")
	writers := fs.Int("writers", 2, "writing goroutines")
	rate := fs.Float64("rate", 5, "messages per second, each to every connection")
	messages := fs.Int("messages", 50, "messages")
	size := fs.Int("size", 128, "bytes per message (at least 8: the send time)")
	jsonOut := fs.String("json", "", "write the full record here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conns < 1 || *readers < 1 || *writers < 1 || *rate <= 0 || *messages < 1 || *size < 8 {
		return errors.New("-conns, -readers, -writers, -rate and -messages must be positive, -size at least 8")
	}
	rec := Record{Conns: *conns, Readers: *readers, Writers: *writers, Size: *size, Messages: *messages, Rate: *rate,
		Expected: uint64(*conns) * uint64(*messages),
		Command: fmt.Sprintf("bench/.bin/floor -conns %d -readers %d -writers %d -rate %g -messages %d -size %d",
			*conns, *readers, *writers, *rate, *messages, *size)}
	res, err := fanout(ctx, &rec)
	if err != nil {
		return err
	}
	snap := res.hist
	rec.Received = snap.Count
	ms := func(q float64) float64 { return float64(snap.Quantile(q)) / 1000 }
	rec.P50, rec.P90, rec.P99, rec.Max = ms(0.50), ms(0.90), ms(0.99), float64(snap.Max)/1000
	rec.WriteMs = res.writeMs
	if snap.Count > 0 {
		perDelivery := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(snap.Count) }
		rec.WriterCPUUs, rec.ReaderCPUUs = perDelivery(res.writerCPU), perDelivery(res.readerCPU)
	}
	if rec.WakeupUs, err = wakeupCost(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "floor fanout conns=%d readers=%d writers=%d rate=%g/s messages=%d received=%d/%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms write=%.1fms writer-cpu=%.2fus reader-cpu=%.2fus wakeup-cpu=%.1fus\n",
		rec.Conns, rec.Readers, rec.Writers, rec.Rate, rec.Messages, rec.Received, rec.Expected, rec.P50, rec.P90, rec.P99, rec.Max, rec.WriteMs,
		rec.WriterCPUUs, rec.ReaderCPUUs, rec.WakeupUs)
	if *jsonOut != "" {
		data, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	if rec.Received != rec.Expected {
		return fmt.Errorf("received %d of %d messages", rec.Received, rec.Expected)
	}
	return nil
}

// fanResult is what fanout measured.
type fanResult struct {
	hist      hist.Snapshot // the readers' merged latencies, µs
	writeMs   float64       // the median time to write one message to all
	writerCPU time.Duration // this process's CPU from the first write to the last read
	readerCPU time.Duration // the readers' CPU from their first read to their last
}

// readerResult is the line a reader ends with.
type readerResult struct {
	Hist hist.Snapshot `json:"hist"`
	// CPUNs is the reader's CPU, user and system, from ready to done.
	CPUNs int64 `json:"cpu_ns"`
}

// fanout runs the readers, accepts their connections, writes the messages
// and returns what it measured.
func fanout(ctx context.Context, rec *Record) (fanResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fanResult{}, err
	}
	defer ln.Close()
	self, err := os.Executable()
	if err != nil {
		return fanResult{}, err
	}
	// The readers stop by themselves after the last message is due, plus
	// a margin; closing their stdin stops them sooner.
	deadline := time.Duration(float64(rec.Messages)/rec.Rate*float64(time.Second)) + 30*time.Second
	type child struct {
		cmd   *exec.Cmd
		stdin io.Closer
		out   *bufio.Reader
	}
	var children []child
	defer func() {
		for _, c := range children {
			_ = c.stdin.Close()
			_ = c.cmd.Wait()
		}
	}()
	for i := range rec.Readers {
		n := rec.Conns / rec.Readers
		if i < rec.Conns%rec.Readers {
			n++
		}
		cmd := exec.CommandContext(ctx, self, "reader", "-addr", ln.Addr().String(), "-conns", strconv.Itoa(n),
			"-expect", strconv.Itoa(n*rec.Messages), "-size", strconv.Itoa(rec.Size), "-deadline", deadline.String())
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return fanResult{}, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return fanResult{}, err
		}
		if err := cmd.Start(); err != nil {
			return fanResult{}, fmt.Errorf("reader: %w", err)
		}
		children = append(children, child{cmd: cmd, stdin: stdin, out: bufio.NewReader(out)})
	}

	conns := make([]net.Conn, 0, rec.Conns)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(60 * time.Second))
	for len(conns) < rec.Conns {
		c, err := ln.Accept()
		if err != nil {
			return fanResult{}, fmt.Errorf("accept %d of %d: %w", len(conns), rec.Conns, err)
		}
		conns = append(conns, c)
	}
	for _, c := range children {
		if line, err := c.out.ReadString('\n'); err != nil || line != "ready\n" {
			return fanResult{}, fmt.Errorf("reader not ready: %q %v", line, err)
		}
	}
	time.Sleep(time.Second) // the connections' setup has settled

	msg := make([]byte, rec.Size)
	parts := split(conns, rec.Writers)
	writes := make([]time.Duration, 0, rec.Messages)
	cpuStart, err := cpu()
	if err != nil {
		return fanResult{}, err
	}
	start := time.Now()
	for m := range rec.Messages {
		due := start.Add(time.Duration(float64(m) / rec.Rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			return fanResult{}, ctx.Err()
		case <-time.After(time.Until(due)):
		}
		sent := time.Now()
		binary.LittleEndian.PutUint64(msg, uint64(sent.UnixNano()))
		var wg sync.WaitGroup
		errs := make([]error, len(parts))
		for i, part := range parts {
			wg.Go(func() {
				for _, c := range part {
					if _, err := c.Write(msg); err != nil {
						errs[i] = err
						return
					}
				}
			})
		}
		wg.Wait()
		writes = append(writes, time.Since(sent))
		if err := errors.Join(errs...); err != nil {
			return fanResult{}, fmt.Errorf("write: %w", err)
		}
	}

	res := fanResult{writeMs: medianMs(writes)}
	for _, c := range children {
		var r readerResult
		line, err := c.out.ReadBytes('\n')
		if err != nil {
			return fanResult{}, fmt.Errorf("reader result: %w", err)
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return fanResult{}, fmt.Errorf("reader result: %w", err)
		}
		res.hist.Merge(r.Hist)
		res.readerCPU += time.Duration(r.CPUNs)
	}
	cpuEnd, err := cpu()
	if err != nil {
		return fanResult{}, err
	}
	res.writerCPU = cpuEnd - cpuStart
	return res, nil
}

// split cuts conns into n parts of nearly equal size.
func split(conns []net.Conn, n int) [][]net.Conn {
	parts := make([][]net.Conn, 0, n)
	for i := range n {
		lo, hi := i*len(conns)/n, (i+1)*len(conns)/n
		parts = append(parts, conns[lo:hi])
	}
	return parts
}

func medianMs(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

// reader connects its connections, says "ready", reads until it has the
// messages it expects (or the deadline passes, or stdin closes) and prints
// its latencies as one line of JSON.
func reader(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("floor reader", flag.ContinueOnError)
	addr := fs.String("addr", "", "the writer's address")
	n := fs.Int("conns", 0, "connections")
	expect := fs.Int("expect", 0, "messages to read in all")
	size := fs.Int("size", 128, "bytes per message")
	deadline := fs.Duration("deadline", time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	defer unix.Close(ep)
	// partial holds the start of a message a read cut, by descriptor.
	partial := map[int32][]byte{}
	for range *n {
		fd, err := dial(*addr)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
		partial[int32(fd)] = nil
	}
	fmt.Fprintln(stdout, "ready")
	cpuStart, err := cpu()
	if err != nil {
		return err
	}

	stop := time.Now().Add(*deadline)
	var abandoned atomic.Bool // the writer closed stdin: it gave up
	go func() { _, _ = io.Copy(io.Discard, stdin); abandoned.Store(true) }()
	h := hist.New()
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for int(h.Count()) < *expect && ctx.Err() == nil && !abandoned.Load() && time.Now().Before(stop) {
		k, err := unix.EpollWait(ep, events, 100)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:k] {
			got, err := unix.Read(int(ev.Fd), buf)
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			if err != nil || got == 0 {
				return fmt.Errorf("read: the writer's socket ended (%v)", err)
			}
			now := time.Now().UnixNano()
			data := append(partial[ev.Fd], buf[:got]...)
			for len(data) >= *size {
				sent := int64(binary.LittleEndian.Uint64(data))
				h.Record(max(0, (now-sent)/1000))
				data = data[*size:]
			}
			partial[ev.Fd] = append(partial[ev.Fd][:0], data...)
		}
	}
	cpuEnd, err := cpu()
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(readerResult{Hist: h.Snapshot(), CPUNs: int64(cpuEnd - cpuStart)})
}

// dial returns a connected, non-blocking socket outside Go's poller, so
// that an arriving message costs the reader one epoll report and one read.
func dial(addr string) (int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return fd, nil
}

// wakeupCost runs "floor sleeper" with the runtime's defaults (no GODEBUG)
// and returns the CPU of one of its wake-ups, in µs.
func wakeupCost(ctx context.Context) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, self, "sleeper")
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("sleeper: %w", err)
	}
	var us float64
	if _, err := fmt.Sscan(string(out), &us); err != nil {
		return 0, fmt.Errorf("sleeper said %q", out)
	}
	return us, nil
}

// sleeper sleeps 10 ms at a time for 5 s and prints its CPU per wake-up, in µs.
func sleeper(stdout io.Writer) error {
	const period, runFor = 10 * time.Millisecond, 5 * time.Second
	before, err := cpu()
	if err != nil {
		return err
	}
	start := time.Now()
	n := 0
	for time.Since(start) < runFor {
		time.Sleep(period)
		n++
	}
	after, err := cpu()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%.2f\n", float64(after-before)/float64(time.Microsecond)/float64(n))
	return err
}

// cpu is the process's CPU time so far, user and system.
func cpu() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
