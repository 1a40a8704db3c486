package cs

import (
	"sync"
	"time"

	"github.com/pmxcfs-go/pmxcfs/internal/fdwait"
)

// guard makes a C handle safe to close at any time: the finalizer runs once,
// only after every call that entered the handle has left it, so no C call
// ever sees a finalized handle and no wait watches a closed fd. It also owns
// the waiter of the dispatch loop, so Close and Wake can interrupt it.
type guard struct {
	mu      sync.Mutex
	users   int
	closing bool
	final   func()
	w       *fdwait.Waiter // nil once finalized
	watched int            // the fd w watches, -1 for none
}

// newGuard returns a guard that calls final once when closed and idle.
func newGuard(final func()) (*guard, error) {
	w, err := fdwait.New()
	if err != nil {
		return nil, err
	}
	return &guard{final: final, w: w, watched: -1}, nil
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
	if g.w != nil {
		g.w.Wake()
	}
}

func (g *guard) finishLocked() {
	if !g.closing || g.users > 0 || g.final == nil {
		return
	}
	g.final()
	g.final = nil
	g.w.Close()
	g.w = nil
}

// Wait blocks until fd is readable (or hung up), Wake/Close is called or the
// deadline (zero: none) passes. It returns the events of fd, zero when woken or
// at the deadline. The caller must have entered the guard, so fd stays open and
// the waiter alive meanwhile.
func (g *guard) Wait(fd int, deadline time.Time) (fdwait.Events, error) {
	g.mu.Lock()
	w, watched := g.w, g.watched
	g.mu.Unlock()
	if fd != watched {
		if err := w.Watch(fd); err != nil {
			return 0, err
		}
		g.mu.Lock()
		g.watched = fd
		g.mu.Unlock()
	}
	return w.Wait(deadline)
}
