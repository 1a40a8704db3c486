package cs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

func TestErrorFormatAndIs(t *testing.T) {
	err := Check("cpg_mcast_joined", ErrTryAgain)
	if err.Error() != "cpg: cpg_mcast_joined: CS_ERR_TRY_AGAIN" {
		t.Errorf("%q", err)
	}
	if !errors.Is(fmt.Errorf("x: %w", err), ErrTryAgain) || errors.Is(err, ErrLibrary) {
		t.Error("errors.Is")
	}
	var ce *Error
	if !errors.As(fmt.Errorf("x: %w", err), &ce) || ce.Code != ErrTryAgain {
		t.Error("errors.As")
	}
	if Check("cmap_get", OK) != nil {
		t.Error("CS_OK is not an error")
	}
	if got := Closed("quorum_getquorate").Error(); got != "quorum: quorum_getquorate: CS_ERR_BAD_HANDLE (handle closed)" {
		t.Errorf("%q", got)
	}
	// Values from corosync/corotypes.h.
	for code, want := range map[Code]string{2: "CS_ERR_LIBRARY", 6: "CS_ERR_TRY_AGAIN", 9: "CS_ERR_BAD_HANDLE",
		100: "CS_ERR_SECURITY", 42: "CS_ERR_UNKNOWN(42)"} {
		if code.String() != want {
			t.Errorf("%d: got %s want %s", code, code, want)
		}
	}
}

// pauses is a sleep for Policy.Run that only counts.
type pauses struct{ n int }

func (p *pauses) sleep(d time.Duration) error {
	if d != 100*time.Millisecond {
		return fmt.Errorf("pause of %v", d)
	}
	p.n++
	return nil
}

func messages(hook *test.Hook) []string {
	var out []string
	for _, e := range hook.AllEntries() {
		out = append(out, e.Message)
	}
	return out
}

// dfsm.c:dfsm_send_message_full on a persistent TRY_AGAIN: 100 calls, a pause after each
// (the last included), "retry N" at every 10th, then "retried 100 times" and the TRY_AGAIN.
func TestSendPolicyMatchesUpstream(t *testing.T) {
	log, hook := test.NewNullLogger()
	var p pauses
	calls := 0
	retries, err := Send.Run(log, "cpg_send_message", p.sleep, func() bool { calls++; return true })
	if err != nil || calls != 100 || p.n != 100 || retries != 100 {
		t.Fatalf("err %v after %d calls, %d pauses, %d retries", err, calls, p.n, retries)
	}
	var want []string
	for i := 10; i <= 100; i += 10 {
		want = append(want, fmt.Sprintf("cpg_send_message retry %d", i))
	}
	want = append(want, "cpg_send_message retried 100 times")
	if got := messages(hook); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("logs %q", got)
	}

	// Success at the 4th call: three pauses and the summary line.
	hook.Reset()
	p, calls = pauses{}, 0
	retries, err = Send.Run(log, "cpg_send_message", p.sleep, func() bool { calls++; return calls < 4 })
	if err != nil || calls != 4 || p.n != 3 || retries != 3 ||
		fmt.Sprint(messages(hook)) != "[cpg_send_message retried 3 times]" {
		t.Fatalf("%v %d %d %q", err, calls, p.n, messages(hook))
	}

	// No TRY_AGAIN: one call, no pause, no line.
	hook.Reset()
	p, calls = pauses{}, 0
	if retries, err := Send.Run(log, "cpg_send_message", p.sleep, func() bool { calls++; return false }); err != nil ||
		retries != 0 || calls != 1 || p.n != 0 || len(hook.AllEntries()) != 0 {
		t.Fatalf("%v %d %d %d %q", err, retries, calls, p.n, messages(hook))
	}
}

// dfsm.c:dfsm_join/dfsm_dispatch and quorum.c:service_quorum_dispatch retry without limit,
// log every 10th or 100th pause and have no summary line.
func TestUnlimitedPolicies(t *testing.T) {
	for _, c := range []struct {
		p     Policy
		every int
	}{{CPG, 10}, {Service, 100}} {
		log, hook := test.NewNullLogger()
		var p pauses
		calls := 0
		retries, err := c.p.Run(log, "x_dispatch", p.sleep, func() bool { calls++; return calls <= 250 })
		if err != nil || calls != 251 || p.n != 250 || retries != 250 {
			t.Fatalf("%+v: %v %d %d", c.p, err, calls, p.n)
		}
		var want []string
		for i := c.every; i <= 250; i += c.every {
			want = append(want, fmt.Sprintf("x_dispatch retry %d", i))
		}
		if got := messages(hook); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%+v: logs %q", c.p, got)
		}
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	retries, err := CPG.Run(nil, "cpg_join", Sleep(ctx), func() bool {
		calls++
		if calls == 3 {
			cancel()
		}
		return true
	})
	if !errors.Is(err, context.Canceled) || calls != 3 || retries != 2 {
		t.Fatalf("%v after %d calls, %d retries", err, calls, retries)
	}
}

func TestGuardFinalizesOnceAfterLastUser(t *testing.T) {
	n := 0
	g, err := newGuard(func() { n++ })
	if err != nil {
		t.Fatal(err)
	}
	if !g.Enter() {
		t.Fatal("Enter on open guard")
	}
	g.Close()
	g.Close()
	if n != 0 || g.Enter() {
		t.Fatal("finalized while in use, or Enter after Close")
	}
	g.Leave()
	g.Close()
	if n != 1 {
		t.Fatalf("finalized %d times", n)
	}
}

// fakeLib is a library whose fd is an eventfd the test makes readable and whose dispatch
// answers with the codes the test queues.
type fakeLib struct {
	fd         int
	codes      chan Code
	dispatched chan struct{}
	finalized  int
	owner      string
}

func newFakeLib(t *testing.T) *fakeLib {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &fakeLib{fd: fd, codes: make(chan Code, 10), dispatched: make(chan struct{}, 10), owner: "owner"}
}

func (f *fakeLib) lib() Lib {
	return Lib{
		Name:  "fake",
		FdGet: func() (int, Code) { return f.fd, OK },
		Dispatch: func() Code {
			var buf [8]byte
			unix.Read(f.fd, buf[:])
			c := <-f.codes
			f.dispatched <- struct{}{}
			return c
		},
		Finalize:       func() Code { f.finalized++; return OK },
		DispatchPolicy: CPG,
	}
}

// ready makes the fd readable and queues the dispatch result.
func (f *fakeLib) ready(c Code) {
	f.codes <- c
	one := [8]byte{1}
	unix.Write(f.fd, one[:])
}

func open(t *testing.T, f *fakeLib) (*Conn, uintptr) {
	t.Helper()
	var key uintptr
	c, err := Open(f.lib(), &f.owner, func(k uintptr) error { key = k; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func runAsync(c *Conn, ctx context.Context) chan error {
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return done
}

func TestConnRunDispatchesUntilClose(t *testing.T) {
	f := newFakeLib(t)
	c, key := open(t, f)
	if o, ok := Lookup[*string](key); !ok || *o != "owner" {
		t.Fatal("owner not found by its key")
	}
	if _, ok := Lookup[*int](key); ok {
		t.Fatal("Lookup ignored the type")
	}
	done := runAsync(c, context.Background())
	f.ready(OK)
	<-f.dispatched
	f.ready(OK)
	<-f.dispatched
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run after Close = %v, want nil", err)
	}
	c.Close()
	if f.finalized != 1 {
		t.Fatalf("finalized %d times", f.finalized)
	}
	if _, ok := Lookup[*string](key); ok {
		t.Fatal("callback lookup works after Close")
	}
	if err := c.Call("fake_call", func() Code { t.Fatal("call on closed handle"); return OK }); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("Call after Close = %v", err)
	}
}

func TestConnRunStopsWithContextAndOnFailure(t *testing.T) {
	f := newFakeLib(t)
	c, _ := open(t, f)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(c, ctx)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v", err)
	}

	// A failing dispatch ends Run with its error; TRY_AGAIN first is retried.
	done = runAsync(c, context.Background())
	f.codes <- ErrTryAgain
	f.ready(ErrLibrary)
	<-f.dispatched
	<-f.dispatched
	if err := <-done; !errors.Is(err, ErrLibrary) || err.Error() != "fake: fake_dispatch: CS_ERR_LIBRARY" {
		t.Fatalf("Run after a failed dispatch = %v", err)
	}
}

// Close from inside a callback: the handle is finalized only after the dispatch that ran
// the callback has returned, and Run ends with nil.
func TestConnCloseDuringDispatch(t *testing.T) {
	f := newFakeLib(t)
	c, _ := open(t, f)
	l := f.lib()
	finalizedInside := -1
	l.Dispatch = func() Code {
		c.Close()
		finalizedInside = f.finalized
		return ErrLibrary // what a closing library may answer
	}
	c.lib = l
	done := runAsync(c, context.Background())
	f.ready(OK)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if finalizedInside != 0 || f.finalized != 1 {
		t.Fatalf("finalized during dispatch: %d, after: %d", finalizedInside, f.finalized)
	}
}

func TestConnRetryOnClosedAndCancelled(t *testing.T) {
	f := newFakeLib(t)
	c, _ := open(t, f)
	c.SetLogger(logrus.New())
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := c.Retry(ctx, "fake_join", CPG, func() Code {
		calls++
		if calls == 2 {
			cancel()
		}
		return ErrTryAgain
	})
	if !errors.Is(err, ErrTryAgain) || !errors.Is(err, context.Canceled) || calls != 2 {
		t.Fatalf("%v after %d calls", err, calls)
	}
	c.Close()
	if err := c.Retry(context.Background(), "fake_join", CPG, func() Code { return OK }); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("Retry after Close = %v", err)
	}
}

func TestOpenFailureLeavesNothing(t *testing.T) {
	f := newFakeLib(t)
	var key uintptr
	_, err := Open(f.lib(), &f.owner, func(k uintptr) error { key = k; return Check("fake_initialize", ErrLibrary) })
	if !errors.Is(err, ErrLibrary) {
		t.Fatal(err)
	}
	if _, ok := Lookup[*string](key); ok || f.finalized != 0 {
		t.Fatal("failed Open left its registry entry or finalized")
	}
}
