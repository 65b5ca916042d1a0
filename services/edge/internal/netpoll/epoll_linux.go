//go:build linux

package netpoll

import (
	"golang.org/x/sys/unix"
)

// pollSys is an epoll instance plus an eventfd that wakes it to stop.
type pollSys struct {
	epfd, evfd int
	events     []unix.EpollEvent
}

// stopToken marks the eventfd's events; handler tokens start at 1.
const stopToken = 0

func newPollSys() (pollSys, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return pollSys{}, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return pollSys{}, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, stopToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return pollSys{}, err
	}
	return pollSys{epfd: epfd, evfd: evfd, events: make([]unix.EpollEvent, 256)}, nil
}

// add watches fd for token, edge-triggered: an event comes each time bytes
// arrive (or the socket ends), also while its handler is running, and the
// registration stays until the socket is closed.
func (s *pollSys) add(fd int, token uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET}
	setToken(&ev, token)
	return unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// wait appends the sockets that became ready, blocking until there is one.
// It returns unix.EBADF once close has been called.
func (s *pollSys) wait(dst []ready) ([]ready, error) {
	for {
		n, err := unix.EpollWait(s.epfd, s.events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return dst, err
		}
		for _, ev := range s.events[:n] {
			t := token(&ev)
			if t == stopToken {
				return dst, unix.EBADF
			}
			dst = append(dst, ready{token: t, end: ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0})
		}
		return dst, nil
	}
}

func (s *pollSys) close() {
	one := [8]byte{1}
	_, _ = unix.Write(s.evfd, one[:])
}

// release closes the descriptors, once wait has returned for good.
func (s *pollSys) release() {
	unix.Close(s.evfd)
	unix.Close(s.epfd)
}

func setToken(ev *unix.EpollEvent, t uint64) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
