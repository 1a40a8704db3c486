package cs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// guard makes a C handle safe to close at any time: the finalizer runs once,
// only after every call that entered the handle has left it, so no C call
// ever sees a finalized handle and no poll waits on a closed fd. It also owns
// an eventfd that wakes a dispatch loop blocked in poll(2).
type guard struct {
	mu      sync.Mutex
	users   int
	closing bool
	final   func()
	wake    int
}

// newGuard returns a guard that calls final once when closed and idle.
func newGuard(final func()) (*guard, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &guard{final: final, wake: fd}, nil
}

// Enter registers a call into the handle; false means the handle is closed.
func (g *guard) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.users++
	return true
}

// Leave ends a call started by a successful Enter.
func (g *guard) Leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.users--
	g.finishLocked()
}

// Close marks the handle closed, wakes any poller and finalizes as soon as
// the handle is idle. It is safe to call repeatedly and from callbacks.
func (g *guard) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return
	}
	g.closing = true
	g.wakeLocked()
	g.finishLocked()
}

// Closing reports whether Close was called.
func (g *guard) Closing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// Wake interrupts a Wait in progress (used for context cancellation).
func (g *guard) Wake() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wakeLocked()
}

func (g *guard) wakeLocked() {
	if g.wake >= 0 {
		var one = [8]byte{1}
		_, _ = unix.Write(g.wake, one[:])
	}
}

func (g *guard) finishLocked() {
	if !g.closing || g.users > 0 || g.final == nil {
		return
	}
	g.final()
	g.final = nil
	unix.Close(g.wake)
	g.wake = -1
}

// Wait blocks until fd is readable (or hung up) or Wake/Close is called. It
// returns the poll events of fd, zero when woken. The caller must have
// entered the guard, so fd stays open meanwhile.
func (g *guard) Wait(fd int) (int16, error) {
	g.mu.Lock()
	wake := g.wake
	g.mu.Unlock()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if fds[1].Revents != 0 {
			var buf [8]byte
			_, _ = unix.Read(wake, buf[:])
			return 0, nil
		}
		return fds[0].Revents, nil
	}
}

// hangup reports whether poll events say the peer is gone.
func hangup(revents int16) bool {
	return revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
}
