//go:build linux

package wsconn

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// stackIovecs: batches of up to this many frames build their iovec array on
// the stack.
const stackIovecs = 32

// writeFrames writes the frames of batch to fd, a non-blocking socket, in
// one system call, without telling the Go scheduler that a system call is
// in progress. Such a write never waits (a full socket answers EAGAIN), so
// the goroutine keeps its P through it: the runtime's monitor (sysmon) has
// no P in a system call to take and hand to another thread, and the write
// skips entersyscall/exitsyscall. A broadcast is a burst of thousands of
// such writes, each running the reader's TCP receive inline on loopback;
// as ordinary system calls, sysmon took their P again and again, at its
// shortest period for the whole burst (docs/PERFORMANCE.md, the broadcast
// tail).
func writeFrames(fd int, batch []item) (int, error) {
	var r uintptr
	var errno unix.Errno
	if len(batch) == 1 {
		b := batch[0].b
		r, _, errno = unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	} else {
		var onStack [stackIovecs]unix.Iovec
		iov := onStack[:0]
		if len(batch) > stackIovecs {
			iov = make([]unix.Iovec, 0, len(batch))
		}
		for i := range batch {
			iov = append(iov, unix.Iovec{Base: unsafe.SliceData(batch[i].b)})
			iov[i].SetLen(len(batch[i].b))
		}
		r, _, errno = unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(iov))), uintptr(len(iov)))
	}
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
