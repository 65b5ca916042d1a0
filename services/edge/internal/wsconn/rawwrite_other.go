//go:build !linux

package wsconn

import "golang.org/x/sys/unix"

// writeFrames writes the frames of batch to fd, a non-blocking socket, in
// one system call.
func writeFrames(fd int, batch []item) (int, error) {
	if len(batch) == 1 {
		return unix.Write(fd, batch[0].b)
	}
	bufs := make([][]byte, len(batch))
	for i := range batch {
		bufs[i] = batch[i].b
	}
	return unix.Writev(fd, bufs)
}
