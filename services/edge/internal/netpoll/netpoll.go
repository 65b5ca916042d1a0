// Package netpoll tells connections' owners when their sockets have become
// readable, through one epoll instance for all of them, so that an idle
// connection needs no goroutine parked in a read. A readable socket's
// handler runs on one of a few long-lived workers (whose stacks have already
// grown to what handling a message takes), or on a fresh goroutine when they
// are all busy, so that a handler that blocks never holds up the others.
package netpoll

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Handler is told, once per Arm, that its socket is readable (or closed).
type Handler interface {
	Readable()
}

// ErrClosed is returned by Arm after Close.
var ErrClosed = errors.New("netpoll: poller is closed")

// Poller is one epoll instance with its workers; or, where there is no
// epoll (or with NewPortable), a goroutine parked per armed socket.
type Poller struct {
	sys      pollSys // static: the system's readiness API, unless portable
	portable bool    // static
	work     chan Handler
	workers  sync.WaitGroup
	stopping chan struct{} // closed by Close
	stopped  chan struct{} // closed when Run has returned

	armMu     sync.RWMutex
	armClosed bool // owned by armMu: Arm refuses

	mu       sync.Mutex
	handlers map[uint64]Handler // by token; owned by mu
	next     uint64             // owned by mu: the last token given
	closed   bool               // owned by mu
}

// New returns a poller on epoll, or a portable one where epoll is missing;
// call Run to serve it and Close to stop it.
func New() *Poller {
	sys, err := newPollSys()
	if err != nil {
		return NewPortable()
	}
	return &Poller{
		sys: sys, work: make(chan Handler), stopping: make(chan struct{}), stopped: make(chan struct{}),
		handlers: map[uint64]Handler{},
	}
}

// NewPortable returns a poller that parks one goroutine per armed socket
// (what New falls back to without epoll).
func NewPortable() *Poller {
	return &Poller{portable: true, work: make(chan Handler), stopping: make(chan struct{}), stopped: make(chan struct{}),
		handlers: map[uint64]Handler{}}
}

// Portable reports whether p parks a goroutine per armed socket.
func (p *Poller) Portable() bool { return p.portable }

// workersPerCPU: long-lived workers per core; more readable sockets at a
// time get goroutines of their own.
const workersPerCPU = 4

// Run waits for readable sockets and runs their handlers until Close. It
// returns after every handler it started, on a worker or not, has returned.
func (p *Poller) Run() {
	defer close(p.stopped)
	if p.portable {
		<-p.stopping
		return
	}
	n := workersPerCPU * runtime.GOMAXPROCS(0)
	p.workers.Add(n)
	for range n {
		go func() {
			defer p.workers.Done()
			for h := range p.work {
				h.Readable()
			}
		}()
	}
	defer func() { close(p.work); p.workers.Wait(); p.sys.release() }()
	var ready []uint64
	for {
		var err error
		ready, err = p.sys.wait(ready[:0])
		if err != nil {
			return // closed
		}
		for _, token := range ready {
			p.mu.Lock()
			h := p.handlers[token]
			p.mu.Unlock()
			if h == nil {
				continue // forgotten meanwhile
			}
			select {
			case p.work <- h:
			default:
				p.workers.Go(h.Readable) // Run waits for it too
			}
		}
	}
}

// Register gives h a token for Arm.
func (p *Poller) Register(h Handler) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.handlers[p.next] = h
	return p.next
}

// Forget drops token; its handler is not called again.
func (p *Poller) Forget(token uint64) {
	p.mu.Lock()
	delete(p.handlers, token)
	p.mu.Unlock()
}

// Arm asks for one call of token's handler once rc's socket is readable (at
// once if it is now); first tells whether rc is armed for the first time.
// Closing the socket drops its registration.
func (p *Poller) Arm(rc syscall.RawConn, token uint64, first bool) error {
	// Held across the system call, so that Close cannot release the epoll
	// descriptor under it (its number could then be another file's).
	p.armMu.RLock()
	defer p.armMu.RUnlock()
	if p.armClosed {
		return ErrClosed
	}
	// What the caller did before arming must happen before its handler
	// runs elsewhere; the kernel's ordering of epoll_ctl and the event is
	// invisible to Go's memory model, so Run's lookup under mu is the edge.
	p.mu.Lock()
	p.mu.Unlock() //nolint:staticcheck // an empty critical section, on purpose
	if p.portable {
		go p.park(rc, token)
		return nil
	}
	var armErr error
	if err := rc.Control(func(fd uintptr) { armErr = p.sys.arm(int(fd), token, first) }); err != nil {
		return fmt.Errorf("netpoll: %w", err)
	}
	if armErr != nil {
		return fmt.Errorf("netpoll: %w", armErr)
	}
	return nil
}

// Close stops Run and waits for it (so Run must have been started). Sockets
// still armed are not told; in portable mode their goroutines stay parked
// until the sockets close.
func (p *Poller) Close() {
	p.armMu.Lock()
	p.armClosed = true
	p.armMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.stopped
		return
	}
	p.closed = true
	close(p.stopping)
	p.mu.Unlock()
	if !p.portable {
		p.sys.close()
	}
	<-p.stopped
}

// park is the portable poller's wait for one socket: a goroutine parked in
// a read that takes nothing, then the handler on the same goroutine.
func (p *Poller) park(rc syscall.RawConn, token uint64) {
	var peek [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN && err != unix.EINTR
	}) // an error (the socket closed) is the handler's to find
	p.mu.Lock()
	h := p.handlers[token]
	p.mu.Unlock()
	if h != nil {
		h.Readable()
	}
}
