//go:build linux

package netpoll

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// pollSys is an epoll instance. Its own descriptor is watched by Go's
// runtime poller (an epoll descriptor is readable while events are ready), so
// that waiting for events parks a goroutine, not a thread in a system call:
// a wake-up costs what any network read's does.
type pollSys struct {
	epfd   int
	file   *os.File        // epfd, as a file of Go's poller; closing it stops wait
	rc     syscall.RawConn // file's
	events []unix.EpollEvent

	// What wait's callback appends to and fails with. The callback is made
	// once: a closure made per wait would cost three allocations each time.
	collected []ready
	werr      error
	collectFn func(fd uintptr) bool
}

func newPollSys() (pollSys, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return pollSys{}, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return pollSys{}, err
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return pollSys{}, err
	}
	return pollSys{epfd: epfd, file: file, rc: rc, events: make([]unix.EpollEvent, 256)}, nil
}

// add watches fd for token, edge-triggered: an event comes each time bytes
// arrive (or the socket ends), also while its handler is running, and the
// registration stays until the socket is closed.
func (s *pollSys) add(fd int, token uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET}
	setToken(&ev, token)
	return unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// wait appends the sockets that became ready, parking until there is one.
// It returns an error once close has been called.
func (s *pollSys) wait(dst []ready) ([]ready, error) {
	if s.collectFn == nil {
		s.collectFn = s.collect
	}
	s.collected, s.werr = dst, nil
	err := s.rc.Read(s.collectFn)
	dst, s.collected = s.collected, nil
	if err == nil {
		err = s.werr
	}
	return dst, err
}

// collect is wait's callback: it takes the ready events, and says whether
// there were any (false parks until the descriptor is readable).
func (s *pollSys) collect(fd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(fd), s.events, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			s.werr = err
			return true
		}
		for _, ev := range s.events[:n] {
			s.collected = append(s.collected, ready{token: token(&ev), end: ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0})
		}
		// Go's poller reports the descriptor edge-triggered: take
		// every ready event before parking again.
		if n < len(s.events) {
			return len(s.collected) > 0
		}
	}
}

// close wakes wait, which fails from then on, and closes the descriptor
// once nothing uses it.
func (s *pollSys) close() { _ = s.file.Close() }

// release is called once wait has returned for good: close did all.
func (s *pollSys) release() {}

func setToken(ev *unix.EpollEvent, t uint64) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
