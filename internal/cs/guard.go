package cs

import (
	"context"
	"sync"

	"golang.org/x/sys/unix"
)

// Guard makes a C handle safe to close at any time: the finalizer runs once,
// only after every call that entered the handle has left it, so no C call
// ever sees a finalized handle and no poll waits on a closed fd. It also owns
// an eventfd that wakes a dispatch loop blocked in poll(2).
type Guard struct {
	mu      sync.Mutex
	users   int
	closing bool
	final   func()
	wake    int
}

// NewGuard returns a Guard that calls final once when closed and idle.
func NewGuard(final func()) (*Guard, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &Guard{final: final, wake: fd}, nil
}

// Enter registers a call into the handle; false means the handle is closed.
func (g *Guard) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.users++
	return true
}

// Leave ends a call started by a successful Enter.
func (g *Guard) Leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.users--
	g.finishLocked()
}

// Close marks the handle closed, wakes any poller and finalizes as soon as
// the handle is idle. It is safe to call repeatedly and from callbacks.
func (g *Guard) Close() {
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
func (g *Guard) Closing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// Wake interrupts a Wait in progress (used for context cancellation).
func (g *Guard) Wake() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wakeLocked()
}

func (g *Guard) wakeLocked() {
	if g.wake >= 0 {
		var one = [8]byte{1}
		_, _ = unix.Write(g.wake, one[:])
	}
}

func (g *Guard) finishLocked() {
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
func (g *Guard) Wait(fd int) (int16, error) {
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

// Hangup reports whether poll events say the peer is gone.
func Hangup(revents int16) bool {
	return revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
}

// RunLoop waits on fd and calls dispatch until ctx is done (returns
// ctx.Err()), the guard is closed (returns nil) or dispatch fails. A hang-up
// that dispatch does not report itself becomes an ErrLibrary error for op, so
// a dead corosync never turns into a busy loop.
func RunLoop(ctx context.Context, g *Guard, op string, fd func() (int, error), dispatch func() error) error {
	stop := context.AfterFunc(ctx, g.Wake)
	defer stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !g.Enter() {
			return nil
		}
		f, err := fd()
		var rev int16
		if err == nil {
			rev, err = g.Wait(f)
		}
		g.Leave()
		if err != nil {
			return err
		}
		if rev == 0 {
			continue // woken: recheck ctx and closing
		}
		if err := dispatch(); err != nil {
			if g.Closing() {
				return nil
			}
			return err
		}
		if Hangup(rev) {
			return &Error{Op: op, Code: ErrLibrary, Detail: "connection to corosync lost"}
		}
	}
}
