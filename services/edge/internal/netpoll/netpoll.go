// Package netpoll tells connections' owners when their sockets have become
// readable, through one epoll instance for all of them, so that an idle
// connection needs no goroutine parked in a read. A readable socket's
// handler runs on one of a few long-lived workers (whose stacks have already
// grown to what handling a message takes), or on a fresh goroutine when they
// are all busy, so that a handler that blocks never holds up the others.
// Without epoll (NewPortable) it parks a goroutine per armed socket instead,
// which the poller owns like the others: Close wakes them and waits for them.
package netpoll

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Handler is told that its socket is readable (or has ended). After an Arm,
// it is called once when bytes arrive; it is never called while it runs.
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
	stopping chan struct{}  // closed by Close
	stopped  chan struct{}  // closed when Run has returned
	parks    sync.WaitGroup // portable: the goroutines parked per armed socket; Run waits for them

	armMu     sync.RWMutex
	armClosed bool // owned by armMu: Arm refuses

	mu       sync.Mutex
	handlers map[uint64]*registration   // by token; owned by mu
	parked   map[uint64]syscall.RawConn // portable, owned by mu: the sockets a goroutine is parked on, by token
	next     uint64                     // owned by mu: the last token given
	closed   bool                       // owned by mu
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
		handlers: map[uint64]*registration{},
	}
}

// NewPortable returns a poller that parks one goroutine per armed socket
// (what New falls back to without epoll).
func NewPortable() *Poller {
	return &Poller{portable: true, work: make(chan Handler), stopping: make(chan struct{}), stopped: make(chan struct{}),
		handlers: map[uint64]*registration{}, parked: map[uint64]syscall.RawConn{}}
}

// Portable reports whether p parks a goroutine per armed socket.
func (p *Poller) Portable() bool { return p.portable }

// workersPerCPU: long-lived workers per core; more readable sockets at a
// time get goroutines of their own.
const workersPerCPU = 4

// Run waits for readable sockets and runs their handlers until Close. It
// returns after every handler it started, on a worker or not, has returned
// (in portable mode: after every parked goroutine has).
func (p *Poller) Run() {
	defer close(p.stopped)
	if p.portable {
		<-p.stopping
		p.parks.Wait()
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
	var events []ready
	for {
		var err error
		events, err = p.sys.wait(events[:0])
		if err != nil {
			return // closed
		}
		for _, ev := range events {
			p.mu.Lock()
			reg := p.handlers[ev.token]
			p.mu.Unlock()
			if reg == nil {
				continue // forgotten meanwhile
			}
			if ev.end {
				reg.end.Store(true)
			}
			if !reg.wake() {
				continue // running: Arm tells it to read again
			}
			select {
			case p.work <- reg.h:
			default:
				p.workers.Go(reg.h.Readable) // Run waits for it too
			}
		}
	}
}

// ready is an event of the system's poller.
type ready struct {
	token uint64
	end   bool // the peer hung up, or the socket failed
}

// registration is one socket's handler and where it stands. Its state is
// the edge between a handler's run and the next (the kernel's ordering of
// reads and epoll events is invisible to Go's memory model).
type registration struct {
	h     Handler      // static
	state atomic.Int32 // running, idle or again
	// end is set once the socket has reported its end. A read that came
	// back short may have left it unseen (the end is seen by the read
	// after the data), and an edge-triggered poller reports it only once:
	// from then on the handler always reads again, until it sees it.
	end atomic.Bool
}

// States of a registration.
const (
	running int32 = iota // the handler runs: an event only marks it again
	idle                 // armed: the next event calls the handler
	again                // bytes came while it ran: it must read again
)

// wake reports whether an event should call the handler; an event for a
// running handler tells it to read again instead.
func (r *registration) wake() bool {
	for {
		switch s := r.state.Load(); s {
		case idle:
			if r.state.CompareAndSwap(idle, running) {
				return true
			}
		case running:
			if r.state.CompareAndSwap(running, again) {
				return false
			}
		default:
			return false
		}
	}
}

// rest is the end of a handler's run: it reports whether the handler must
// read again (and stays running) rather than wait for the next event.
func (r *registration) rest() (readAgain bool) {
	if r.end.Load() {
		r.state.Store(running)
		return true
	}
	for {
		switch s := r.state.Load(); s {
		case again:
			if r.state.CompareAndSwap(again, running) {
				return true
			}
		case running:
			if r.state.CompareAndSwap(running, idle) {
				return false
			}
		default:
			return false // armed already: a second Arm changes nothing
		}
	}
}

// noToken is no handler's token: Register starts at 1.
const noToken = 0

// Register gives h a token for Arm. Until the first Arm, h counts as running
// (its owner reads first, then arms).
func (p *Poller) Register(h Handler) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.handlers[p.next] = &registration{h: h}
	return p.next
}

// Forget drops token; its handler is not called again.
func (p *Poller) Forget(token uint64) {
	p.mu.Lock()
	delete(p.handlers, token)
	p.mu.Unlock()
}

// Arm is the end of a handler's run: the handler has read all its socket had
// (until a read found it empty or came back short) and asks to be called when
// more arrives. first tells whether rc is armed for the first time; bytes
// already waiting then call the handler at once. Arm reports readAgain when
// bytes arrived while the handler ran, or once the socket has reported its
// end: the handler must then read again (and Arm again) instead of returning.
// Closing the socket drops its registration.
//
// With epoll the socket is added once, edge-triggered: arming it again is an
// atomic state change, not a system call.
func (p *Poller) Arm(rc syscall.RawConn, token uint64, first bool) (readAgain bool, err error) {
	// Held across the system call, so that Close cannot release the epoll
	// descriptor under it (its number could then be another file's).
	p.armMu.RLock()
	defer p.armMu.RUnlock()
	if p.armClosed {
		return false, ErrClosed
	}
	p.mu.Lock()
	reg := p.handlers[token]
	p.mu.Unlock()
	if reg == nil {
		return false, nil // forgotten: nobody is to be called
	}
	if p.portable {
		reg.rest()
		// Counted under armMu: Close, which waits for the parked goroutines
		// through Run, cannot have begun.
		p.parks.Add(1)
		p.mu.Lock()
		p.parked[token] = rc
		p.mu.Unlock()
		go p.park(rc, token)
		return false, nil
	}
	if !first {
		return reg.rest(), nil
	}
	// No event can come before the socket is added: the handler rests
	// first, and bytes already waiting then call it at once.
	reg.rest()
	var addErr error
	if err := rc.Control(func(fd uintptr) { addErr = p.sys.add(int(fd), token) }); err != nil {
		addErr = err
	}
	if addErr != nil {
		reg.state.Store(running) // never added: no event can have woken it
		return false, fmt.Errorf("netpoll: %w", addErr)
	}
	return false, nil
}

// Close stops Run and waits for it (so Run must have been started). Sockets
// still armed are not told. In portable mode the goroutines parked on them
// are woken by shutting down the sockets' reading side (their owners could
// not be told of input any more: Arm fails from now on), and Run waits for
// every parked goroutine, so none outlives Close.
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
	parked := make([]syscall.RawConn, 0, len(p.parked))
	for _, rc := range p.parked {
		parked = append(parked, rc)
	}
	p.mu.Unlock()
	if !p.portable {
		p.sys.close()
	}
	for _, rc := range parked {
		// An error means the socket is closed: its goroutine wakes anyway.
		_ = rc.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RD) })
	}
	<-p.stopped
}

// park is the portable poller's wait for one socket: a goroutine parked in
// a read that takes nothing, then the handler on the same goroutine. Its
// owner is the poller: Arm counts it in parks, Close wakes it, Run waits for it.
func (p *Poller) park(rc syscall.RawConn, token uint64) {
	defer p.parks.Done()
	var peek [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN && err != unix.EINTR
	}) // an error (the socket closed) is the handler's to find
	p.mu.Lock()
	delete(p.parked, token) // the handler may arm it again
	reg := p.handlers[token]
	closed := p.closed
	p.mu.Unlock()
	if !closed && reg != nil && reg.wake() {
		reg.h.Readable()
	}
}
