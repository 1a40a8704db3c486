package fdwait

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func newWaiter(t *testing.T, fd int) *Waiter {
	t.Helper()
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if err := w.Watch(fd); err != nil {
		t.Fatal(err)
	}
	if err := w.Watch(fd); err != nil {
		t.Fatalf("watching again: %v", err)
	}
	return w
}

func TestWaitDeadlineReadableHangUp(t *testing.T) {
	r, wr := pipe(t)
	w := newWaiter(t, r)

	start := time.Now()
	ev, err := w.Wait(time.Now().Add(30 * time.Millisecond))
	if err != nil || ev != 0 {
		t.Fatalf("nothing to read: %v, %v; want no events at the deadline", ev, err)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Fatalf("returned after %v, before the deadline", d)
	}

	go func() {
		time.Sleep(10 * time.Millisecond)
		unix.Write(wr, []byte("x"))
	}()
	ev, err = w.Wait(time.Time{})
	if err != nil || !ev.Readable() || ev.HangUp() {
		t.Fatalf("after a write: %v, %v; want readable", ev, err)
	}
	// Level-triggered: still readable until read.
	if ev, err = w.Wait(time.Time{}); err != nil || !ev.Readable() {
		t.Fatalf("unread data: %v, %v; want readable again", ev, err)
	}
	var buf [1]byte
	unix.Read(r, buf[:])

	unix.Close(wr)
	if ev, err = w.Wait(time.Time{}); err != nil || !ev.HangUp() {
		t.Fatalf("writer closed: %v, %v; want a hang-up", ev, err)
	}
}

func TestWake(t *testing.T) {
	r, _ := pipe(t)
	w := newWaiter(t, r)
	// A wake before the wait is not lost.
	w.Wake()
	if ev, err := w.Wait(time.Time{}); err != nil || ev != 0 {
		t.Fatalf("woken before: %v, %v; want no events", ev, err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		w.Wake()
	}()
	if ev, err := w.Wait(time.Time{}); err != nil || ev != 0 {
		t.Fatalf("woken during: %v, %v; want no events", ev, err)
	}
}
