//go:build !linux

package netpoll

import "errors"

// pollSys is only implemented with Linux's epoll; elsewhere New fails and
// the caller parks a goroutine per connection instead.
type pollSys struct{}

func newPollSys() (pollSys, error) { return pollSys{}, errors.New("needs Linux epoll") }

func (pollSys) add(int, uint64) error { return errors.New("netpoll: needs Linux epoll") }
func (pollSys) wait(dst []ready) ([]ready, error) {
	return dst, errors.New("netpoll: needs Linux epoll")
}
func (pollSys) close()   {}
func (pollSys) release() {}
