// Package fdwait waits for a descriptor owned by a C library (corosync's) to become
// readable through the Go runtime's network poller, so no thread sits in poll(2) meanwhile.
//
// A goroutine blocked in a system call keeps its P (the runtime's right to run Go code), and
// the runtime's monitor thread takes it back only after polling every 20 µs; one that blocks
// for more than 10 ms is taken back every time and sets the monitor polling again. On a
// virtual machine each of those wake-ups is a context switch the hypervisor charges dearly:
// perf on node 1 of the 3-node bench found the monitor's sleeps to be 40 % of the daemon's
// context switches (docs/write-path.md, section 4). The library's descriptor cannot be
// handed to the poller itself (that needs it non-blocking, which would change the library's
// own reads), so an epoll instance of ours watches it, and the poller watches the epoll
// instance.
package fdwait

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Waiter waits for the descriptors it watches. Wake may be called from any goroutine at any
// time; Wait from one goroutine at a time, and not after or during Close.
type Waiter struct {
	ep       *os.File // our epoll instance, non-blocking, registered with the runtime's poller
	rc       syscall.RawConn
	deadline time.Time // the read deadline set on ep
	// mu guards wake, which Close sets to -1: a Wake racing with Close (a cancelled
	// context) must not write to a descriptor number that may have been reused.
	mu   sync.Mutex
	wake int // eventfd in ep: Wake makes it readable
}

// Events are what Wait found on the descriptor (EPOLLIN, EPOLLHUP, EPOLLERR).
type Events uint32

// Readable reports whether there is something to read (or a hang-up to learn of by reading).
func (e Events) Readable() bool { return e&unix.EPOLLIN != 0 }

// HangUp reports whether the peer is gone.
func (e Events) HangUp() bool { return e&(unix.EPOLLHUP|unix.EPOLLERR) != 0 }

// New returns a Waiter watching nothing yet.
func New() (*Waiter, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &Waiter{wake: wake}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	// Non-blocking before os.NewFile: that is what makes it register the descriptor with
	// the runtime's poller rather than treat it as a blocking file.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, err
	}
	w.ep = os.NewFile(uintptr(epfd), "fdwait")
	if w.rc, err = w.ep.SyscallConn(); err != nil {
		w.Close()
		return nil, err
	}
	// Deadlines work only on a descriptor the poller took; one that it did not take would
	// make Wait block a thread again, silently.
	if err := w.ep.SetReadDeadline(time.Time{}); err != nil {
		w.Close()
		return nil, fmt.Errorf("fdwait: the runtime poller did not take the epoll instance: %w", err)
	}
	return w, nil
}

// Watch adds fd, which stays owned (and closed) by its library; watching it again is no
// error. Closing fd ends the watch.
func (w *Waiter) Watch(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	err := w.control(func(epfd int) error { return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev) })
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("epoll_ctl %d: %w", fd, err)
	}
	return nil
}

func (w *Waiter) control(f func(epfd int) error) error {
	var err error
	if cerr := w.rc.Control(func(epfd uintptr) { err = f(int(epfd)) }); cerr != nil {
		return cerr
	}
	return err
}

// Wait returns the watched descriptors' events once one is readable or hung up; zero
// events when woken by Wake or at deadline (the zero time: none).
func (w *Waiter) Wait(deadline time.Time) (Events, error) {
	// Setting a deadline re-arms a runtime timer; a dispatch loop passes the same one for
	// many waits.
	if !deadline.Equal(w.deadline) {
		if err := w.ep.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		w.deadline = deadline
	}
	var evs [2]unix.EpollEvent
	var n int
	var werr error
	err := w.rc.Read(func(epfd uintptr) bool {
		n, werr = unix.EpollWait(int(epfd), evs[:], 0)
		if werr == unix.EINTR {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, fmt.Errorf("epoll_wait: %w", werr)
	}
	var got Events
	for _, ev := range evs[:n] {
		if int(ev.Fd) == w.wake {
			var buf [8]byte
			_, _ = unix.Read(w.wake, buf[:])
			continue
		}
		got |= Events(ev.Events)
	}
	return got, nil
}

// Wake makes a Wait in progress, or the next one, return zero events; after Close it does
// nothing.
func (w *Waiter) Wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wake >= 0 {
		one := [8]byte{1}
		_, _ = unix.Write(w.wake, one[:])
	}
}

// Close releases the epoll instance and the eventfd, not the watched descriptor.
func (w *Waiter) Close() error {
	err := w.ep.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wake >= 0 {
		if cerr := unix.Close(w.wake); err == nil {
			err = cerr
		}
		w.wake = -1
	}
	return err
}
