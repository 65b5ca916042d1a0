package load

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The receive path of a worker: a few event loops instead of a goroutine
// per connection, because in the broadcast scenario the client shares the
// cores with the servers it measures, and a goroutine wake-up plus the
// runtime's second read (it reads until EAGAIN) per message cost as much as
// the servers' work. A loop makes one read per readiness report of a
// connection and parses what came. Linux only, like the rest of the tool.

// readBuffer is a loop's read buffer: one read takes what a connection has,
// up to this, and the rest waits for the next report.
const readBuffer = 64 << 10

// errWorkerClosing ends the connections of a closing worker (not counted as
// dropped).
var errWorkerClosing = errors.New("load: worker closing")

// loop is an event loop: a level-triggered epoll instance and the goroutine
// that reads every connection handed to it, and ends them.
type loop struct {
	w *Worker // static
	// file is the epoll descriptor as a file of Go's poller, so that the
	// loop parks like a network read while nothing is ready. A thread
	// blocked in epoll_wait instead cost more client CPU per message than
	// the goroutines did: each wake-up was a context switch plus the
	// runtime taking the P back from the system call. Closing file stops
	// run.
	file *os.File
	rc   syscall.RawConn // file's
	done chan struct{}   // closed when run has returned

	mu     sync.Mutex
	conns  map[int32]*conn // owned by mu: the connections read, by descriptor
	closed bool            // owned by mu: add refuses
}

func newLoop(w *Worker) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("load: epoll_create: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("load: epoll: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("load: epoll: %w", err)
	}
	return &loop{w: w, file: file, rc: rc, done: make(chan struct{}), conns: map[int32]*conn{}}, nil
}

// ctl changes the registration of fd; it fails once the loop is stopped.
func (l *loop) ctl(op, fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	var err error
	if cerr := l.rc.Control(func(epfd uintptr) { err = unix.EpollCtl(int(epfd), op, fd, &ev) }); cerr != nil {
		return cerr
	}
	return err
}

// add hands c over to the loop, which reads it and ends it from then on.
// It fails once the loop is stopping; c is then still the caller's.
func (l *loop) add(c *conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errWorkerClosing
	}
	// Registered under mu, so that run finds c as soon as it is reported.
	if err := l.ctl(unix.EPOLL_CTL_ADD, c.fd); err != nil {
		return fmt.Errorf("load: epoll_ctl add: %w", err)
	}
	l.conns[int32(c.fd)] = c
	return nil
}

// wait returns the number of events it put in events, parking until there
// is one; it fails once stop has closed the file.
func (l *loop) wait(events []unix.EpollEvent) (int, error) {
	var n int
	var werr error
	err := l.rc.Read(func(epfd uintptr) bool {
		for {
			// Only an empty answer parks: Go's poller sees the descriptor
			// edge-triggered, and a connection left readable (level
			// triggering keeps it ready) makes no new edge.
			n, werr = unix.EpollWait(int(epfd), events, 0)
			if werr != unix.EINTR {
				return werr != nil || n > 0
			}
		}
	})
	if err != nil {
		return 0, err
	}
	return n, werr
}

// run serves the loop until stop, then ends its connections.
func (l *loop) run() {
	defer close(l.done)
	buf := make([]byte, readBuffer)
	events := make([]unix.EpollEvent, 256)
	r := newReceiver(l.w)
	for {
		n, err := l.wait(events)
		if err != nil {
			l.shutdown(fmt.Errorf("load: epoll: %w", err)) // stop closed it, or the epoll failed
			return
		}
		for _, ev := range events[:n] {
			l.mu.Lock()
			c := l.conns[ev.Fd]
			l.mu.Unlock()
			if c == nil {
				continue // not expected: a descriptor leaves the instance before its close
			}
			if err := l.read(c, buf, r); err != nil {
				l.end(c, err)
			}
		}
	}
}

// read makes one read of c and hands the bytes to its parser. Level
// triggering reports c again while bytes are left, so a connection never
// needs a second read (which would mostly find nothing) per report.
func (l *loop) read(c *conn, buf []byte, r *receiver) error {
	n, err := unix.Read(c.fd, buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return nil
	case err != nil:
		return fmt.Errorf("read: %w", err)
	case n == 0:
		return fmt.Errorf("read: %w", io.EOF)
	}
	return r.feed(c, buf[:n])
}

// end ends c, which err ended. The descriptor leaves the epoll instance
// first: the close waits for a write in progress, and the ended socket
// would be reported all that time.
func (l *loop) end(c *conn, err error) {
	l.mu.Lock()
	delete(l.conns, int32(c.fd))
	l.mu.Unlock()
	_ = l.ctl(unix.EPOLL_CTL_DEL, c.fd)
	c.close()
	l.w.ended(c, err)
}

// shutdown ends every connection of the loop with err.
func (l *loop) shutdown(err error) {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range conns {
		c.close()
		l.w.ended(c, err)
	}
}

// stop makes add refuse and run end its connections and return.
func (l *loop) stop() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	_ = l.file.Close()
}

// close waits for run to return.
func (l *loop) close() { <-l.done }
