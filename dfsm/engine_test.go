package dfsm

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"
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

func TestErrorModesOnlyEscalate(t *testing.T) {
	d, err := New(Config{App: newKVApp(nil), Transport: nopTransport{}, Log: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct{ set, want Mode }{
		{ModeSynced, ModeSynced}, {ModeError, ModeError}, {ModeLeave, ModeError},
		{ModeVersionError, ModeError}, {ModeStart, ModeStart}, {ModeVersionError, ModeVersionError},
		{ModeLeave, ModeVersionError}, {ModeError, ModeError},
	}
	for i, s := range steps {
		d.setMode(s.set)
		if got := d.Mode(); got != s.want {
			t.Fatalf("step %d: set %s, mode %s, want %s", i, s.set, got, s.want)
		}
	}
	if d.Restartable() {
		t.Fatal("ERROR must not be restartable")
	}
	if err := d.Start(); err == nil {
		t.Fatal("Start after ERROR must fail")
	}
}

// The msg_queue is ordered by count only, equal counts in arrival order,
// through upstream's comparator (u64 difference truncated to a C int).
func TestQueueOrder(t *testing.T) {
	d, _ := New(Config{App: newKVApp(nil), Transport: nopTransport{}, Log: quietLogger(), Self: Member{1, 1}})
	d.releaseSyncResources([]Member{{1, 1}, {2, 2}, {3, 3}})
	d.setMode(ModeStartSync)
	in := []struct {
		from  Member
		count uint64
	}{{Member{2, 2}, 5}, {Member{3, 3}, 1}, {Member{1, 1}, 5}, {Member{2, 2}, 6}, {Member{1, 1}, 1}, {Member{3, 3}, 2}}
	for _, m := range in {
		if !d.queueMessage(m.from, m.count, []byte{byte(m.from.NodeID)}) {
			t.Fatal("queue refused a member")
		}
	}
	want := []string{"3/3#1", "1/1#1", "3/3#2", "2/2#5", "1/1#5", "2/2#6"}
	for i, q := range d.msgQueue {
		if got := q.from.String() + "#" + string(rune('0'+q.count)); got != want[i] {
			t.Fatalf("position %d: %s, want %s", i, got, want[i])
		}
	}
	if queueCmp(1<<32+1, 1) != 0 {
		t.Fatal("comparator must truncate like upstream")
	}
	if d.queueMessage(Member{9, 9}, 1, []byte{1}) {
		t.Fatal("a non-member's message must be refused")
	}
}

type nopTransport struct{}

func (nopTransport) Mcast([]byte) error { return nil }
func (nopTransport) Join() error        { return nil }
func (nopTransport) Leave() error       { return nil }

type busyTransport struct{ calls int }

func (b *busyTransport) Mcast([]byte) error { b.calls++; return ErrTryAgain }
func (*busyTransport) Join() error          { return nil }
func (*busyTransport) Leave() error         { return nil }

// TRY_AGAIN is retried 100 times, 100 ms apart, then reported (the send
// failure then gives EBUSY to a synchronous writer).
func TestSendRetriesTryAgain(t *testing.T) {
	tr := &busyTransport{}
	clock := &FakeClock{T: 1000}
	d, _ := New(Config{App: newKVApp(nil), Transport: tr, Clock: clock, Log: quietLogger()})
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

func newFlushNode(t *testing.T) (*Simulator, *SimProc, *flushApp) {
	t.Helper()
	sim := NewSimulator(1000)
	app := &flushApp{kvApp: newKVApp(nil)}
	p, err := sim.Spawn(1, Config{Name: "flush", ProtocolVersion: 1, App: app})
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
	for _, w := range []*Pending{a, b} {
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
	for i, w := range []*Pending{a, b} {
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
	if p.Engine.Mode() != ModeError {
		t.Fatalf("mode %s after a failed flush", p.Engine.Mode())
	}
}

// A batch is flushed every maxBatch messages: however long corosync keeps one dispatch
// going, delivered messages become durable (and their writers hear back) promptly.
func TestBatchIsBounded(t *testing.T) {
	sim, p, app := newFlushNode(t)
	var ws []*Pending
	for i := 0; i < maxBatch+8; i++ {
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
	case <-ws[maxBatch-1].Done():
	default:
		t.Fatal("the first maxBatch results were not released by the bound's flush")
	}
	p.Engine.EndBatch()
	if _, err := ws[len(ws)-1].Result(); err != nil {
		t.Fatal(err)
	}
}
