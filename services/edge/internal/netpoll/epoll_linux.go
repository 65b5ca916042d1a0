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

// arm registers fd (or re-arms it) for one readiness event: EPOLLONESHOT,
// so that one handler at a time reads it; re-arming with MOD checks the
// socket at once, so bytes that came meanwhile are not missed.
func (s *pollSys) arm(fd int, token uint64, first bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, token)
	op := unix.EPOLL_CTL_MOD
	if first {
		op = unix.EPOLL_CTL_ADD
	}
	return unix.EpollCtl(s.epfd, op, fd, &ev)
}

// wait blocks until sockets are ready and appends their tokens; it fails
// once the poller is closed.
func (s *pollSys) wait(dst []uint64) ([]uint64, error) {
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
			dst = append(dst, t)
		}
		return dst, nil
	}
}

// close wakes wait, which then fails. The descriptors stay open until
// release: closing them under a running EpollWait would be a race.
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
