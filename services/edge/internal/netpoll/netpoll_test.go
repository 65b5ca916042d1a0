//go:build linux

package netpoll

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitFor bounds every wait for something that must happen.
const waitFor = 10 * time.Second

// quietFor is how long a test watches for something that must not happen
// and has nothing else to wait on.
const quietFor = 250 * time.Millisecond

// recorder is a Handler that counts its calls and reports each on calls and
// each return on returns (while their buffers last: a handler called far
// too often must not block, or Close could not end the test); with block
// set, a call waits for block to be closed.
type recorder struct {
	calls   chan struct{}
	returns chan struct{}
	block   <-chan struct{}

	mu sync.Mutex
	n  int // calls so far; owned by mu
}

func newRecorder(block <-chan struct{}) *recorder {
	return &recorder{calls: make(chan struct{}, 64), returns: make(chan struct{}, 64), block: block}
}

func (r *recorder) Readable() {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
	send(r.calls)
	if r.block != nil {
		<-r.block
	}
	send(r.returns)
}

func send(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// waitCall waits for r's next call.
func waitCall(t *testing.T, r *recorder, what string) {
	t.Helper()
	waitOn(t, r.calls, what)
}

// waitOn waits for one value on ch.
func waitOn(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("%s: nothing within %s", what, waitFor)
	}
}

// fixture is a running poller and a loopback listener for socket pairs.
type fixture struct {
	t       *testing.T
	p       *Poller
	ln      net.Listener
	runDone chan struct{} // closed when Run has returned
}

// modes are the two ways a poller waits: New's epoll, and the goroutine
// parked per armed socket New falls back to without epoll.
var modes = []struct {
	name     string
	portable bool
}{{"epoll", false}, {"portable", true}}

// newFixture starts an epoll poller, or with portable a portable one.
func newFixture(t *testing.T, portable bool) *fixture {
	t.Helper()
	p := NewPortable()
	if !portable {
		p = New()
		if p.Portable() {
			t.Fatal("New on Linux fell back to the portable poller: epoll is missing")
		}
	}
	f := &fixture{t: t, p: p, runDone: make(chan struct{})}
	go func() { defer close(f.runDone); p.Run() }()
	t.Cleanup(f.close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f.ln = ln
	return f
}

// close closes the poller and checks that Run has returned.
func (f *fixture) close() {
	f.t.Helper()
	f.p.Close()
	waitOn(f.t, f.runDone, "Run returns after Close")
}

// pair returns both ends of a fresh loopback TCP connection.
func (f *fixture) pair() (client, server *net.TCPConn) {
	f.t.Helper()
	c, err := net.Dial("tcp", f.ln.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	s, err := f.ln.Accept()
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// arm arms c's socket for token, fails the test if Arm does, and returns
// Arm's readAgain.
func (f *fixture) arm(c *net.TCPConn, token uint64, first bool) bool {
	f.t.Helper()
	readAgain, err := f.p.Arm(rawConn(f.t, c), token, first)
	if err != nil {
		f.t.Fatalf("Arm(first=%v): %v", first, err)
	}
	return readAgain
}

// watch registers a recorder for c's socket and arms it for the first time.
func (f *fixture) watch(c *net.TCPConn, block <-chan struct{}) (*recorder, uint64) {
	f.t.Helper()
	r := newRecorder(block)
	token := f.p.Register(r)
	f.arm(c, token, true)
	return r, token
}

// barrier returns once the poller has handled a socket that became
// readable after everything the test did so far: epoll reports ready
// sockets in the order they became ready, so any event due before has been
// handed to a handler by then. (Handed, not necessarily run: checks that
// must not miss a late call are repeated after Close, which waits for
// handlers.)
func (f *fixture) barrier() {
	f.t.Helper()
	c, s := f.pair()
	write(f.t, c, "!")
	waitBuffered(f.t, s, 1)
	r, token := f.watch(s, nil)
	waitCall(f.t, r, "barrier")
	f.p.Forget(token)
}

func rawConn(t *testing.T, c *net.TCPConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func fdOf(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	var fd int
	if err := rawConn(t, c).Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

func write(t *testing.T, c *net.TCPConn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// waitBuffered waits, through Go's own poller, until c's socket holds at
// least n unread bytes, without reading them.
func waitBuffered(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	var have int
	err := rawConn(t, c).Read(func(fd uintptr) bool {
		q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		have = q
		return err != nil || q >= n
	})
	if err != nil || have < n {
		t.Fatalf("waiting for %d buffered bytes (have %d): %v", n, have, err)
	}
}

// drain reads everything c's socket holds now, without waiting.
func drain(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	var total int
	var readErr error
	err := rawConn(t, c).Control(func(fd uintptr) {
		buf := make([]byte, 4096)
		for {
			n, err := unix.Read(int(fd), buf)
			if err == unix.EAGAIN || n == 0 {
				return
			}
			if err != nil {
				readErr = err
				return
			}
			total += n
		}
	})
	if err != nil || readErr != nil {
		t.Fatalf("drain: %v %v", err, readErr)
	}
	return total
}

func TestRegisterGivesDistinctNonZeroTokens(t *testing.T) {
	f := newFixture(t, false)
	seen := map[uint64]bool{}
	for range 100 {
		token := f.p.Register(newRecorder(nil))
		if token == noToken || seen[token] {
			t.Fatalf("token %d: zero (the stop token) or given twice", token)
		}
		seen[token] = true
	}
}

// One Arm, one call: bytes arriving after the call do not call the handler
// again while it has not armed again.
func TestArmCallsOnceWhenBytesArrive(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			c, s := f.pair()
			r, _ := f.watch(s, nil)

			f.barrier()
			if n := r.count(); n != 0 {
				t.Fatalf("called %d times before any byte arrived", n)
			}

			write(t, c, "a")
			waitCall(t, r, "handler after bytes arrived")
			write(t, c, "bc")
			waitBuffered(t, s, 3)
			f.barrier()
			if n := r.count(); n != 1 {
				t.Fatalf("called %d times for one Arm", n)
			}
			f.close() // with epoll, waits for every handler it handed a socket to
			if n := r.count(); n != 1 {
				t.Fatalf("called %d times for one Arm", n)
			}
		})
	}
}

// Arming a socket for the first time while it already holds bytes calls
// the handler at once: nothing that came before is missed.
func TestFirstArmWithBytesWaitingCallsAtOnce(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			c, s := f.pair()
			write(t, c, "waiting")
			waitBuffered(t, s, len("waiting"))

			r, _ := f.watch(s, nil)
			waitCall(t, r, "handler armed (ADD) with bytes waiting")
			f.close()
			if n := r.count(); n != 1 {
				t.Fatalf("called %d times for one Arm", n)
			}
		})
	}
}

// Bytes that arrive while the handler runs are not missed: with epoll,
// Arm tells the handler to read again; the portable poller calls it again.
func TestBytesArrivingWhileRunningAreNotMissed(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			c, s := f.pair()
			r, token := f.watch(s, nil)
			write(t, c, "a")
			waitCall(t, r, "handler after bytes arrived")
			drain(t, s)
			write(t, c, "b") // while the handler has not armed again
			waitBuffered(t, s, 1)
			f.barrier()
			readAgain := f.arm(s, token, false)
			if mode.portable {
				if readAgain {
					t.Fatal("the portable poller told the handler to read again")
				}
				waitCall(t, r, "portable handler called again")
				return
			}
			if !readAgain {
				t.Fatal("Arm did not tell the handler to read again after bytes arrived")
			}
			// Reading again, and arming once the socket is empty, waits.
			drain(t, s)
			if f.arm(s, token, false) {
				t.Fatal("Arm told the handler to read again with nothing new")
			}
			f.barrier()
			if n := r.count(); n != 1 {
				t.Fatalf("%d calls, want 1", n)
			}
			write(t, c, "c")
			waitCall(t, r, "handler after new bytes")
		})
	}
}

// A peer that sends its last bytes and hangs up at once is not missed by a
// handler that read the bytes with one short read (which does not show the
// end) and arms again: with epoll, Arm tells it to read again until it sees
// the end; the portable poller calls it again.
func TestEndArrivingWithDataIsNotMissed(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			c, s := f.pair()
			write(t, c, "last words")
			c.Close()
			r, token := f.watch(s, nil)
			waitCall(t, r, "handler after the last bytes and the end")
			buf := make([]byte, 64)
			var n int
			if err := rawConn(t, s).Control(func(fd uintptr) { n, _ = unix.Read(int(fd), buf) }); err != nil || n != len("last words") {
				t.Fatalf("short read: %d bytes, %v", n, err)
			}
			for i := range 3 {
				readAgain := f.arm(s, token, false)
				if mode.portable {
					waitCall(t, r, "portable handler called again at the end")
					return
				}
				if !readAgain {
					t.Fatalf("arm %d after the end: not told to read again", i+1)
				}
			}
		})
	}
}

// A handler that read everything and re-armed is not called again until
// new bytes arrive.
func TestRearmAfterDrainWaitsForNewBytes(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			c, s := f.pair()
			r, token := f.watch(s, nil)

			for i, msg := range []string{"one", "two", "three"} {
				write(t, c, msg)
				waitCall(t, r, "handler after "+msg)
				if got := drain(t, s); got != len(msg) {
					t.Fatalf("drained %d bytes, want %d", got, len(msg))
				}
				f.arm(s, token, false)
				f.barrier()
				if n := r.count(); n != i+1 {
					t.Fatalf("after re-arming an empty socket: %d calls, want %d", n, i+1)
				}
			}
			f.close()
			if n := r.count(); n != 3 {
				t.Fatalf("%d calls, want 3", n)
			}
		})
	}
}

// An armed handler learns of its socket's end: the peer closing, resetting
// or shutting down its side, or a local shutdown (how wsconn's Abort ends a
// connection).
func TestHangupWakesArmedHandler(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, client, server *net.TCPConn)
	}{
		{"peer closes", func(t *testing.T, c, _ *net.TCPConn) { c.Close() }},
		{"peer shuts down writing", func(t *testing.T, c, _ *net.TCPConn) { c.CloseWrite() }},
		{"peer resets", func(t *testing.T, c, _ *net.TCPConn) {
			if err := c.SetLinger(0); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}},
		{"local shutdown(SHUT_RDWR)", func(t *testing.T, _, s *net.TCPConn) {
			if err := s.CloseRead(); err != nil {
				t.Fatal(err)
			}
			if err := s.CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}},
		{"local shutdown(SHUT_RD)", func(t *testing.T, _, s *net.TCPConn) {
			if err := s.CloseRead(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				f := newFixture(t, mode.portable)
				c, s := f.pair()
				r, _ := f.watch(s, nil)
				f.barrier()
				if n := r.count(); n != 0 {
					t.Fatalf("called %d times before the end", n)
				}
				tt.end(t, c, s)
				waitCall(t, r, "handler after "+tt.name)
			})
		}
	}
}

// A forgotten token's handler is not called, even though its socket, still
// armed, becomes readable.
func TestForgottenTokenIsNotCalled(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			c, s := f.pair()
			r, token := f.watch(s, nil)
			f.p.Forget(token)
			f.p.Forget(token) // twice is fine

			write(t, c, "late")
			waitBuffered(t, s, len("late"))
			f.barrier()
			f.close()
			if n := r.count(); n != 0 {
				t.Fatalf("forgotten handler called %d times", n)
			}
		})
	}
}

// Closing an armed socket drops it from the epoll set: another socket
// that gets the same descriptor is armed afresh (ADD, which would fail
// with EEXIST otherwise), and the old handler is never called. (Epoll
// only: the portable poller's parked read wakes when its socket closes.)
func TestClosingSocketDropsRegistration(t *testing.T) {
	f := newFixture(t, false)
	_, s := f.pair()
	old, _ := f.watch(s, nil)
	fd := fdOf(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The kernel gives the lowest free descriptor: the next socket made.
	var reused, peer *net.TCPConn
	for range 3 {
		c, s := f.pair()
		switch fd {
		case fdOf(t, c):
			reused, peer = c, s
		case fdOf(t, s):
			reused, peer = s, c
		default:
			continue
		}
		break
	}
	if reused == nil {
		t.Fatalf("no new socket got descriptor %d again", fd)
	}
	r, _ := f.watch(reused, nil)
	write(t, peer, "new")
	waitCall(t, r, "handler of the socket with the reused descriptor")
	f.barrier()
	f.close()
	if n := old.count(); n != 0 {
		t.Fatalf("the closed socket's handler was called %d times", n)
	}
	if n := r.count(); n != 1 {
		t.Fatalf("the new socket's handler was called %d times, want 1", n)
	}
}

// Many armed sockets becoming readable together each get exactly one call.
func TestManySocketsEachCalledOnce(t *testing.T) {
	const sockets = 500
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			clients := make([]*net.TCPConn, sockets)
			recs := make([]*recorder, sockets)
			for i := range sockets {
				c, s := f.pair()
				clients[i] = c
				recs[i], _ = f.watch(s, nil)
			}
			for _, c := range clients {
				write(t, c, "x")
			}
			for _, r := range recs {
				waitCall(t, r, "one of many handlers")
			}
			f.barrier()
			f.close()
			for i, r := range recs {
				if n := r.count(); n != 1 {
					t.Fatalf("socket %d: %d calls, want 1", i, n)
				}
			}
		})
	}
}

// Handlers that block, more than there are workers, hold up neither the
// poller nor other sockets' handlers: those run on goroutines of their own.
func TestBlockedHandlersDoNotStopOthers(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			workers := workersPerCPU * runtime.GOMAXPROCS(0)
			blocked := max(100, 2*workers)
			release := make(chan struct{})
			var once sync.Once
			defer once.Do(func() { close(release) }) // a failed test leaves no handler blocked

			var stuck []*recorder
			for range blocked {
				c, s := f.pair()
				r, _ := f.watch(s, release)
				stuck = append(stuck, r)
				write(t, c, "x")
			}
			for _, r := range stuck {
				waitCall(t, r, "blocking handler") // more than the workers: some overflowed
			}

			for range 50 {
				c, s := f.pair()
				r, _ := f.watch(s, nil)
				write(t, c, "y")
				waitCall(t, r, "handler while others block")
				waitOn(t, r.returns, "handler returns while others block")
			}

			once.Do(func() { close(release) })
			for _, r := range stuck {
				waitOn(t, r.returns, "released handler returns")
			}
		})
	}
}

// Close waits for every handler the poller started, on a worker or on a
// goroutine of its own: none outlives it (and so none can arm a socket on
// the epoll descriptor Run releases).
func TestCloseWaitsForOverflowHandlers(t *testing.T) {
	f := newFixture(t, false)
	workers := workersPerCPU * runtime.GOMAXPROCS(0)
	releaseWorkers, releaseLast := make(chan struct{}), make(chan struct{})
	var onceWorkers, onceLast sync.Once
	defer onceLast.Do(func() { close(releaseLast) })
	defer onceWorkers.Do(func() { close(releaseWorkers) })

	// Occupy every worker (and then some), then one more handler: it has a
	// goroutine of its own.
	var first []*recorder
	for range workers + 4 {
		c, s := f.pair()
		r, _ := f.watch(s, releaseWorkers)
		write(t, c, "x")
		waitCall(t, r, "handler occupying a worker")
		first = append(first, r)
	}
	c, s := f.pair()
	last, _ := f.watch(s, releaseLast)
	write(t, c, "x")
	waitCall(t, last, "overflow handler")

	closed := make(chan struct{})
	go func() { defer close(closed); f.p.Close() }()
	onceWorkers.Do(func() { close(releaseWorkers) })
	for _, r := range first {
		waitOn(t, r.returns, "released handler returns")
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a handler it started was still running")
	case <-time.After(quietFor):
	}
	onceLast.Do(func() { close(releaseLast) })
	waitOn(t, closed, "Close returns once the last handler has")
	select {
	case <-last.returns:
	default:
		t.Fatal("Close returned before the overflow handler did")
	}
}

// Close stops Run promptly, even while sockets are armed; Arm then fails
// with ErrClosed, and Close may be called again, or concurrently.
func TestCloseStopsRun(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.portable)
			_, s := f.pair()
			r, token := f.watch(s, nil)
			f.barrier() // with epoll, Run is in epoll_wait

			var wg sync.WaitGroup
			for range 2 {
				wg.Go(f.p.Close)
			}
			wg.Wait()
			waitOn(t, f.runDone, "Run returns after Close")
			if _, err := f.p.Arm(rawConn(t, s), token, false); !errors.Is(err, ErrClosed) {
				t.Fatalf("Arm after Close: %v, want ErrClosed", err)
			}
			if _, err := f.p.Arm(rawConn(t, s), f.p.Register(r), true); !errors.Is(err, ErrClosed) {
				t.Fatalf("first Arm after Close: %v, want ErrClosed", err)
			}
			f.p.Close()
			if n := r.count(); n != 0 {
				t.Fatalf("armed handler called %d times by Close", n)
			}
		})
	}
}
