package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/pmxcfs-go/pmxcfs/cpg"
	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/ringquorum"
)

// Only the changes corosync makes while syncing a new totem ring (nodes gone or come) leave
// the ring unknown until its totem membership; a daemon that joins, leaves or dies on a node
// that stays changes no ring, and no totem membership follows.
func TestRingChange(t *testing.T) {
	self := cpg.Address{NodeID: 1, PID: 10, Reason: cpg.ReasonJoin}
	for _, tc := range []struct {
		name string
		c    cpg.ConfChg
		want bool
	}{
		{"own join", cpg.ConfChg{Joined: []cpg.Address{self}}, false},
		{"daemon joined", cpg.ConfChg{Joined: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonJoin}}}, false},
		{"daemon left", cpg.ConfChg{Left: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonLeave}}}, false},
		{"daemon died", cpg.ConfChg{Left: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonProcDown}}}, false},
		{"node down", cpg.ConfChg{Left: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonNodeDown}}}, true},
		{"node up", cpg.ConfChg{Joined: []cpg.Address{{NodeID: 3, PID: 8, Reason: cpg.ReasonNodeUp}}}, true},
	} {
		if got := ringChange(tc.c); got != tc.want {
			t.Errorf("%s: ringChange = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// groupApp is a replicated application for one member: it records what the engine does with
// it. A write's result is its length.
type groupApp struct {
	quorum *ringquorum.Gate

	mu        sync.Mutex
	delivered []string
	quorate   []bool // Quorum.Quorate at each delivery, with a gate
	confchgs  int
	flushes   int
	watch     []*dfsm.Pending // writers that must not hear back before a flush
	early     bool            // one of them did
}

func (a *groupApp) Deliver(_ dfsm.Member, _ uint16, _ uint32, payload []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delivered = append(a.delivered, string(payload))
	if a.quorum != nil {
		a.quorate = append(a.quorate, a.quorum.Quorate())
	}
	return len(payload), nil
}

func (a *groupApp) Confchg([]dfsm.Member) {
	a.mu.Lock()
	a.confchgs++
	a.mu.Unlock()
}

func (a *groupApp) Flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushes++
	for _, p := range a.watch {
		select {
		case <-p.Done():
			a.early = true
		default:
		}
	}
	return nil
}

func (a *groupApp) GetState() ([]byte, error)                               { return []byte{1}, nil }
func (a *groupApp) ProcessStateUpdate(*dfsm.SyncInfo) error                 { return nil }
func (a *groupApp) ProcessUpdate(*dfsm.SyncInfo, dfsm.Member, []byte) error { return nil }
func (a *groupApp) Commit(*dfsm.SyncInfo) error                             { return nil }
func (a *groupApp) Cleanup(*dfsm.SyncInfo)                                  {}
func (a *groupApp) Synced()                                                 {}

func (a *groupApp) get(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f()
}

type groupTest struct {
	t        *testing.T
	bus      *fakeCPG
	app      *groupApp
	g        *Group
	attached int
}

func newGroupTest(t *testing.T, quorum *ringquorum.Gate) *groupTest {
	logger, _ := logtest.NewNullLogger()
	gt := &groupTest{t: t, bus: newFakeCPG(1), app: &groupApp{quorum: quorum}}
	gt.g = &Group{GroupName: "test_group", ProtocolVersion: 1, App: gt.app, Log: logrus.NewEntry(logger),
		Quorum: quorum, Attach: func(*dfsm.DFSM) { gt.attached++ }}
	gt.g.connect = gt.bus.connect
	return gt
}

// run starts Group.Run, as Supervise does; stop ends it and returns its result.
func (gt *groupTest) run() (stop func() error, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- gt.g.Run(ctx) }()
	gt.t.Cleanup(cancel)
	return func() error {
		cancel()
		gt.bus.poke() // Run notices the cancel when its poll returns
		return gt.result(ch)
	}, ch
}

// result waits for Run to return.
func (gt *groupTest) result(done <-chan error) error {
	gt.t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		gt.t.Fatal("timed out waiting for Run to return")
		return nil
	}
}

// confchgs waits until the application saw n configuration changes and nothing waits for
// dispatch.
func (gt *groupTest) confchgs(n int) {
	gt.t.Helper()
	gt.bus.waitFor(gt.t, fmt.Sprintf("%d confchgs", n), func() bool {
		got := 0
		gt.app.get(func() { got = gt.app.confchgs })
		return got == n && gt.bus.idle()
	})
}

// write sends data and waits for its result.
func (gt *groupTest) write(e *dfsm.DFSM, data string) {
	gt.t.Helper()
	p, err := e.Submit(1, []byte(data))
	if err != nil {
		gt.t.Fatalf("write %q: %v", data, err)
	}
	if r, err := gt.wait(p); err != nil || r != len(data) {
		gt.t.Fatalf("write %q: result %d, %v", data, r, err)
	}
}

// wait returns the result of p.
func (gt *groupTest) wait(p *dfsm.Pending) (int, error) {
	gt.t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		gt.t.Fatalf("timed out waiting for the result of message %d", p.Count)
	}
	return p.Result()
}

// A reconnect drives the same engine: the writers of the lost connection hear EBUSY, the new
// connection joins the group again, and the engine is neither recreated nor attached again.
func TestGroupKeepsEngineAcrossReconnects(t *testing.T) {
	gt := newGroupTest(t, nil)
	_, done := gt.run()
	gt.confchgs(1)
	e := gt.g.CurrentEngine()
	if e == nil || e.Mode() != dfsm.ModeSynced || e.Self().NodeID != 1 {
		t.Fatalf("engine %v after the first connection", e)
	}
	gt.write(e, "a=1")

	gt.bus.hold()
	lost, err := e.Submit(1, []byte("b=2")) // sent, never delivered
	if err != nil {
		t.Fatal(err)
	}
	gt.bus.kill()
	if err := gt.result(done); err == nil {
		t.Fatal("Run returned nil after the connection was lost")
	}
	if r, err := gt.wait(lost); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("writer of the lost connection got %d, %v; want EBUSY", r, err)
	}
	if _, err := e.SendSync(1, []byte("c=3")); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("write between connections: %v, want EBUSY", err)
	}

	gt.bus.release()
	stop, _ := gt.run()
	gt.confchgs(2)
	if got := gt.g.CurrentEngine(); got != e {
		t.Fatal("the reconnect created a new engine")
	}
	gt.write(e, "d=4")
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	gt.bus.mu.Lock()
	dials, joins := gt.bus.dials, gt.bus.joins
	gt.bus.mu.Unlock()
	if gt.attached != 1 || dials != 2 || joins != 2 {
		t.Fatalf("attached %d times, %d connections, %d joins; want 1, 2, 2", gt.attached, dials, joins)
	}
	gt.app.get(func() {
		if got := strings.Join(gt.app.delivered, " "); got != "a=1 d=4" {
			t.Errorf("delivered %q, want the two writes of live connections", got)
		}
	})
}

// corosync reporting another nodeid for this node (its configuration changed under a running
// daemon) is refused: the engine's members would no longer match.
func TestGroupRefusesNodeIDChange(t *testing.T) {
	gt := newGroupTest(t, nil)
	stop, _ := gt.run()
	gt.confchgs(1)
	e := gt.g.CurrentEngine()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	gt.bus.nodeid = 2
	_, done := gt.run()
	err := gt.result(done)
	if err == nil || !strings.Contains(err.Error(), "nodeid changed from 1 to 2") {
		t.Fatalf("Run with another nodeid: %v", err)
	}
	gt.bus.mu.Lock()
	joins, open := gt.bus.joins, len(gt.bus.conns)
	gt.bus.mu.Unlock()
	if joins != 1 || open != 0 || gt.g.CurrentEngine() != e || e.Self().NodeID != 1 {
		t.Fatalf("%d joins, %d open connections, engine of node %d", joins, open, gt.g.CurrentEngine().Self().NodeID)
	}
}

// An engine that left the group after an error (LEAVE) ends Run once the change without us
// arrived; the next Run starts it again on a new connection and it syncs.
func TestGroupRestartsAfterLeave(t *testing.T) {
	gt := newGroupTest(t, nil)
	_, done := gt.run()
	gt.confchgs(1)
	e := gt.g.CurrentEngine()
	gt.bus.inject(func(cb cpg.Callbacks) { cb.Deliver(cpg.Message{NodeID: 2, PID: 7, Data: []byte{1, 2, 3}}) })
	if err := gt.result(done); err == nil || err.Error() != "left the process group" {
		t.Fatalf("Run after a short message: %v", err)
	}
	if !e.Finished() || !e.Restartable() {
		t.Fatalf("engine in %s, finished %v", e.Mode(), e.Finished())
	}
	stop, _ := gt.run()
	gt.confchgs(2)
	if e.Mode() != dfsm.ModeSynced || gt.g.CurrentEngine() != e {
		t.Fatalf("restarted engine in %s", e.Mode())
	}
	gt.write(e, "a=1")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// After VERSION_ERROR the node stays out of the group until the daemon restarts: Run
// connects (to learn the nodeid) but does not join, and waits for shutdown.
func TestGroupStaysOutAfterVersionError(t *testing.T) {
	gt := newGroupTest(t, nil)
	_, done := gt.run()
	gt.confchgs(1)
	e := gt.g.CurrentEngine()
	newer := dfsm.Message{Header: dfsm.Header{Type: dfsm.MsgNormal, ProtocolVersion: 2}, Count: 1}
	gt.bus.inject(func(cb cpg.Callbacks) { cb.Deliver(cpg.Message{NodeID: 2, PID: 7, Data: newer.Encode()}) })
	if err := gt.result(done); err == nil {
		t.Fatal("Run went on after VERSION_ERROR")
	}
	if e.Mode() != dfsm.ModeVersionError {
		t.Fatalf("engine in %s", e.Mode())
	}
	stop, done := gt.run()
	gt.bus.waitFor(t, "the second connection", func() bool { return gt.bus.dials == 2 })
	select {
	case err := <-done:
		t.Fatalf("Run returned %v before shutdown", err)
	default:
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	gt.bus.mu.Lock()
	defer gt.bus.mu.Unlock()
	if gt.bus.joins != 1 || len(gt.bus.conns) != 0 {
		t.Fatalf("%d joins, %d open connections; want 1, 0", gt.bus.joins, len(gt.bus.conns))
	}
}

// Everything one dispatch delivers is one batch: the application flushes once, and only
// then do the writers hear of their results.
func TestGroupBatchesEachDispatch(t *testing.T) {
	gt := newGroupTest(t, nil)
	stop, _ := gt.run()
	gt.confchgs(1)
	e := gt.g.CurrentEngine()
	gt.bus.hold()
	var ws []*dfsm.Pending
	for _, d := range []string{"a=1", "b=22", "c=333"} {
		w, err := e.Submit(1, []byte(d))
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	var before int
	gt.app.get(func() { before, gt.app.watch = gt.app.flushes, ws })
	gt.bus.release()
	for i, w := range ws {
		if r, err := gt.wait(w); err != nil || r != 3+i {
			t.Fatalf("write %d: %d, %v", i, r, err)
		}
	}
	gt.app.get(func() {
		if n := gt.app.flushes - before; n != 1 || gt.app.early || len(gt.app.delivered) != 3 {
			t.Fatalf("%d flushes for %d messages of one dispatch (want 1), a result before the flush: %v",
				n, len(gt.app.delivered), gt.app.early)
		}
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A send corosync refuses with TRY_AGAIN is retried by the engine: the connection reports it
// as dfsm.ErrTryAgain.
func TestGroupSendRetriesTryAgain(t *testing.T) {
	gt := newGroupTest(t, nil)
	stop, _ := gt.run()
	gt.confchgs(1)
	gt.bus.mu.Lock()
	gt.bus.busy, gt.bus.mcasts = 2, 0
	gt.bus.mu.Unlock()
	gt.write(gt.g.CurrentEngine(), "a=1")
	gt.bus.mu.Lock()
	mcasts := gt.bus.mcasts
	gt.bus.mu.Unlock()
	if mcasts != 3 {
		t.Fatalf("%d sends, want 2 refused and 1 accepted", mcasts)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// The quorum gate follows the connection's totem ring: known from the connection's initial
// totem membership, unknown from a group change that came with a ring change until the new
// ring's totem membership.
func TestGroupFollowsTotemRing(t *testing.T) {
	gate := &ringquorum.Gate{}
	gate.Notify(4, true) // the ring a new connection is told
	gt := newGroupTest(t, gate)
	stop, _ := gt.run()
	gt.confchgs(1)
	e := gt.g.CurrentEngine()
	gt.write(e, "a=1")
	self := cpg.Address{NodeID: 1, PID: uint32(os.Getpid())}
	gt.bus.inject(func(cb cpg.Callbacks) {
		cb.ConfChg(cpg.ConfChg{Members: []cpg.Address{self}, Left: []cpg.Address{{NodeID: 2, PID: 7, Reason: cpg.ReasonNodeDown}}})
	})
	gt.write(e, "b=2")
	gate.Notify(8, true)
	gt.bus.inject(func(cb cpg.Callbacks) { cb.TotemConfChg(cpg.TotemConfChg{RingSeq: 8}) })
	gt.write(e, "c=3")
	gt.app.get(func() {
		if fmt.Sprint(gt.app.quorate) != "[true false true]" {
			t.Fatalf("quorate at the deliveries: %v, want [true false true]", gt.app.quorate)
		}
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
