package dfsm_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/dfsm/dfsmtest"
)

// A SendSync waiter is released with EBUSY when the engine is re-initialised
// before its message came back (upstream dfsm_initialize aborts waiters).
func TestSendSyncAbortedByRestart(t *testing.T) {
	c := newCluster(t, 2)
	c.sim.Run(1000)
	p := c.sim.Proc(1)
	done := make(chan error, 1)
	go func() {
		_, err := p.Engine.SendSync(kvSet, []byte("a=1"))
		done <- err
	}()
	for c.sim.Pending() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The dispatch goroutine (this one) restarts the engine: the message is
	// never delivered here.
	if err := p.Engine.Start(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("got %v, want EBUSY", err)
	}
}

// SendSync returns the application's result for this process's own message
// once it is delivered, while the dispatch loop runs concurrently.
func TestSendSyncResult(t *testing.T) {
	c := newCluster(t, 2)
	c.sim.Run(1000)
	done := make(chan int, 1)
	go func() {
		r, err := c.sim.Proc(2).Engine.SendSync(kvSet, []byte("a=1"))
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	for {
		select {
		case r := <-done:
			if r != 1 {
				t.Fatalf("result %d, want 1 (version after the write)", r)
			}
			return
		default:
			c.sim.Step()
			time.Sleep(time.Millisecond)
		}
	}
}

// Results are matched by (nodeid, pid, count): another node's message with
// the same count does not complete our write (peer-lessons #3).
func TestResultMatchedBySender(t *testing.T) {
	c := newCluster(t, 2)
	c.sim.Run(1000)
	p2, err := c.sim.Proc(2).Engine.Submit(kvSet, []byte("b=2"))
	if err != nil {
		t.Fatal(err)
	}
	p1, err := c.sim.Proc(1).Engine.Submit(kvSet, []byte("a=1"))
	if err != nil {
		t.Fatal(err)
	}
	if p1.Count != 1 || p2.Count != 1 {
		t.Fatalf("counts %d %d", p1.Count, p2.Count)
	}
	c.sim.Step() // node 2's #1 is delivered first
	select {
	case <-p1.Done():
		t.Fatal("node 1's waiter woken by node 2's message")
	default:
	}
	c.sim.Step()
	if r, err := p1.Result(); err != nil || r != 2 {
		t.Fatalf("node 1 got %d, %v", r, err)
	}
	if r, err := p2.Result(); err != nil || r != 1 {
		t.Fatalf("node 2 got %d, %v", r, err)
	}
}

type busyTransport struct{ calls int }

func (b *busyTransport) Mcast([]byte) error { b.calls++; return dfsm.ErrTryAgain }
func (*busyTransport) Join() error          { return nil }
func (*busyTransport) Leave() error         { return nil }

// TRY_AGAIN is retried 100 times, 100 ms apart, then reported (the send
// failure then gives EBUSY to a synchronous writer).
func TestSendRetriesTryAgain(t *testing.T) {
	tr := &busyTransport{}
	clock := &dfsmtest.FakeClock{T: 1000}
	d, _ := dfsm.New(dfsm.Config{App: newKVApp(nil), Transport: tr, Clock: clock, Log: quietLogger()})
	if _, err := d.SendSync(kvSet, []byte("a=1")); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("got %v, want EBUSY", err)
	}
	// dfsm.c:dfsm_send_message_full: 100 calls, and a pause after each of them.
	if tr.calls != 100 || clock.T != 1000+10 {
		t.Fatalf("%d calls, clock advanced %d s", tr.calls, clock.T-1000)
	}
}

// flushApp is a kvApp that makes its changes durable in batches, as DCDB does.
type flushApp struct {
	*kvApp
	flushes int
	fail    error
}

func (a *flushApp) Flush() error { a.flushes++; return a.fail }

func newFlushNode(t *testing.T) (*dfsmtest.Simulator, *dfsmtest.SimProc, *flushApp) {
	t.Helper()
	sim := dfsmtest.NewSimulator(1000)
	app := &flushApp{kvApp: newKVApp(nil)}
	p, err := sim.Spawn(1, dfsm.Config{Name: "flush", ProtocolVersion: 1, App: app})
	if err != nil {
		t.Fatal(err)
	}
	sim.Run(1000)
	return sim, p, app
}

// Within a batch, writers hear of their results only after the one Flush at its end:
// a result is never handed out before the change is durable.
func TestBatchReleasesResultsAfterFlush(t *testing.T) {
	sim, p, app := newFlushNode(t)
	a, err := p.Engine.Submit(kvSet, []byte("a=1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Engine.Submit(kvSet, []byte("b=2"))
	if err != nil {
		t.Fatal(err)
	}
	flushesBefore := app.flushes
	p.Engine.BeginBatch()
	sim.Step()
	sim.Step()
	for _, w := range []*dfsm.Pending{a, b} {
		select {
		case <-w.Done():
			t.Fatal("result released before the batch was flushed")
		default:
		}
	}
	p.Engine.EndBatch()
	if got := app.flushes - flushesBefore; got != 1 {
		t.Fatalf("%d flushes for one batch, want 1", got)
	}
	for i, w := range []*dfsm.Pending{a, b} {
		if r, err := w.Result(); err != nil || r != i+1 {
			t.Fatalf("message %d: result %d, %v", i, r, err)
		}
	}
}

// A failed Flush fails every result of the batch (EIO) and stops the engine, as a
// database error does upstream.
func TestFailedFlushFailsTheBatch(t *testing.T) {
	sim, p, app := newFlushNode(t)
	w, err := p.Engine.Submit(kvSet, []byte("a=1"))
	if err != nil {
		t.Fatal(err)
	}
	app.fail = errors.New("disk full")
	sim.Step()
	if r, err := w.Result(); err != nil || r != -int(syscall.EIO) {
		t.Fatalf("result %d, %v; want -EIO", r, err)
	}
	if p.Engine.Mode() != dfsm.ModeError {
		t.Fatalf("mode %s after a failed flush", p.Engine.Mode())
	}
}

// A batch is flushed every MaxBatch messages: however long corosync keeps one dispatch
// going, delivered messages become durable (and their writers hear back) promptly.
func TestBatchIsBounded(t *testing.T) {
	sim, p, app := newFlushNode(t)
	var ws []*dfsm.Pending
	for i := 0; i < dfsm.MaxBatch+8; i++ {
		w, err := p.Engine.Submit(kvSet, []byte(fmt.Sprintf("k%d=1", i)))
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	before := app.flushes
	p.Engine.BeginBatch()
	for range ws {
		sim.Step()
	}
	if got := app.flushes - before; got != 1 {
		t.Fatalf("%d flushes within a batch of %d messages, want 1", got, len(ws))
	}
	select {
	case <-ws[dfsm.MaxBatch-1].Done():
	default:
		t.Fatal("the first MaxBatch results were not released by the bound's flush")
	}
	p.Engine.EndBatch()
	if _, err := ws[len(ws)-1].Result(); err != nil {
		t.Fatal(err)
	}
}
