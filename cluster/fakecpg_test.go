package cluster

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmxcfs-go/pmxcfs/cpg"
	"github.com/pmxcfs-go/pmxcfs/internal/cs"
	"github.com/pmxcfs-go/pmxcfs/internal/fdwait"
)

// fakeCPG is an in-memory corosync with one process group, for Group.Run in plain go test.
// Each connection is a process of this test binary (pid os.Getpid()) on the node the test
// chose. One lock orders every event, so all members see one total order, as with CPG's
// agreed order. A connection's events wait in its inbox until Dispatch runs their callbacks;
// a pipe stands for corosync's descriptor: readable while events wait, hung up when the
// connection is lost.
type fakeCPG struct {
	mu      sync.Mutex
	nodeid  uint32 // of the next connection
	ring    uint64 // the totem ring a new connection is told
	conns   []*fakeConn
	held    bool // events are queued without waking the dispatchers
	busy    int  // so many more TryMcast calls fail with TRY_AGAIN
	dials   int
	joins   int
	mcasts  int
	running int           // Dispatch calls running callbacks
	changed chan struct{} // closed and replaced after every connect and Dispatch
}

type fakeConn struct {
	bus    *fakeCPG
	nodeid uint32
	cb     cpg.Callbacks
	rfd    int
	wfd    int            // -1 once corosync is gone
	w      *fdwait.Waiter // watches rfd
	inbox  []func()
	joined bool
	closed bool
}

func newFakeCPG(nodeid uint32) *fakeCPG {
	return &fakeCPG{nodeid: nodeid, ring: 4, changed: make(chan struct{})}
}

// connect is Group.connect.
func (b *fakeCPG) connect(cb cpg.Callbacks) (conn, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	w, err := fdwait.New()
	if err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, err
	}
	if err := w.Watch(p[0]); err != nil {
		w.Close()
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := &fakeConn{bus: b, nodeid: b.nodeid, cb: cb, rfd: p[0], wfd: p[1], w: w}
	b.conns = append(b.conns, c)
	b.dials++
	b.signal()
	if cb.TotemConfChg != nil { // a model-initialized connection learns the current ring
		c.queue(func() { cb.TotemConfChg(cpg.TotemConfChg{RingSeq: b.ring}) })
	}
	return c, nil
}

func (c *fakeConn) self() cpg.Address {
	return cpg.Address{NodeID: c.nodeid, PID: uint32(os.Getpid())}
}

// queue adds an event to c's inbox (bus lock held).
func (c *fakeConn) queue(ev func()) {
	c.inbox = append(c.inbox, ev)
	if !c.bus.held {
		c.wake()
	}
}

func (c *fakeConn) wake() {
	if c.wfd >= 0 {
		unix.Write(c.wfd, []byte{0})
	}
}

// members lists the joined connections' addresses (bus lock held).
func (b *fakeCPG) members() []cpg.Address {
	var out []cpg.Address
	for _, c := range b.conns {
		if c.joined {
			out = append(out, c.self())
		}
	}
	slices.SortFunc(out, func(x, y cpg.Address) int { return int(x.NodeID) - int(y.NodeID) })
	return out
}

// confchg tells every joined connection, and extra (one that just left), of a change.
func (b *fakeCPG) confchg(extra *fakeConn, left, joined []cpg.Address) {
	c := cpg.ConfChg{Members: b.members(), Left: left, Joined: joined}
	for _, to := range b.conns {
		if to.joined || to == extra {
			cb := to.cb.ConfChg
			to.queue(func() { cb(c) })
		}
	}
}

func (c *fakeConn) LocalNodeID() (uint32, error) { return c.nodeid, nil }

func (c *fakeConn) Wait(deadline time.Time) (fdwait.Events, error) { return c.w.Wait(deadline) }

func (c *fakeConn) Wake() { c.w.Wake() }

func (c *fakeConn) Dispatch(context.Context) error {
	b := c.bus
	var buf [64]byte
	for {
		if n, _ := unix.Read(c.rfd, buf[:]); n <= 0 {
			break
		}
	}
	b.mu.Lock()
	if c.wfd < 0 {
		b.mu.Unlock()
		return errors.New("fake corosync: connection lost")
	}
	evs := c.inbox
	c.inbox = nil
	b.running++
	b.mu.Unlock()
	for _, ev := range evs { // outside the lock: callbacks send and leave
		ev()
	}
	b.mu.Lock()
	b.running--
	b.signal()
	b.mu.Unlock()
	return nil
}

func (c *fakeConn) Join(_ context.Context, group string) error {
	b := c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.wfd < 0 || c.joined {
		return &cs.Error{Op: "cpg_join", Code: cs.ErrLibrary}
	}
	c.joined = true
	b.joins++
	b.confchg(nil, nil, []cpg.Address{{NodeID: c.nodeid, PID: uint32(os.Getpid()), Reason: cpg.ReasonJoin}})
	return nil
}

func (c *fakeConn) Leave(_ context.Context, group string) error {
	b := c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.wfd < 0 || !c.joined {
		return &cs.Error{Op: "cpg_leave", Code: cs.ErrLibrary}
	}
	c.joined = false
	b.confchg(c, []cpg.Address{{NodeID: c.nodeid, PID: uint32(os.Getpid()), Reason: cpg.ReasonLeave}}, nil)
	return nil
}

func (c *fakeConn) TryMcast(msg []byte) error {
	b := c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mcasts++
	if c.wfd < 0 || !c.joined {
		return &cs.Error{Op: "cpg_mcast_joined", Code: cs.ErrLibrary}
	}
	if b.busy > 0 {
		b.busy--
		return &cs.Error{Op: "cpg_mcast_joined", Code: cs.ErrTryAgain}
	}
	m := cpg.Message{NodeID: c.nodeid, PID: uint32(os.Getpid()), Data: slices.Clone(msg)}
	for _, to := range b.conns {
		if to.joined {
			cb := to.cb.Deliver
			to.queue(func() { cb(m) })
		}
	}
	return nil
}

func (c *fakeConn) Close() error {
	b := c.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	b.lose(c, cpg.ReasonProcDown)
	c.w.Close()
	unix.Close(c.rfd)
	b.conns = slices.DeleteFunc(b.conns, func(o *fakeConn) bool { return o == c })
	return nil
}

// lose takes c out of the group, as corosync does when the process or its node goes, and
// hangs up its descriptor (bus lock held).
func (b *fakeCPG) lose(c *fakeConn, why cpg.Reason) {
	if c.joined {
		c.joined = false
		b.confchg(nil, []cpg.Address{{NodeID: c.nodeid, PID: uint32(os.Getpid()), Reason: why}}, nil)
	}
	if c.wfd >= 0 {
		unix.Close(c.wfd)
		c.wfd = -1
	}
}

// kill is corosync going away under the open connection.
func (b *fakeCPG) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		b.lose(c, cpg.ReasonNodeDown)
	}
}

// hold keeps the following events from the dispatchers until release, so that they are
// dispatched together.
func (b *fakeCPG) hold() {
	b.mu.Lock()
	b.held = true
	b.mu.Unlock()
}

func (b *fakeCPG) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held = false
	for _, c := range b.conns {
		if len(c.inbox) > 0 {
			c.wake()
		}
	}
}

// poke makes every open connection's descriptor readable, with nothing to dispatch.
func (b *fakeCPG) poke() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.wake()
	}
}

// inject queues events on every open connection: a message from a peer that is not in the
// group, or a change the test composes.
func (b *fakeCPG) inject(ev func(cb cpg.Callbacks)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		cb := c.cb
		c.queue(func() { ev(cb) })
	}
}

// signal wakes waitFor (bus lock held).
func (b *fakeCPG) signal() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// waitFor waits until cond (called under the bus lock) holds, checking after every connect
// and dispatch.
func (b *fakeCPG) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		b.mu.Lock()
		ok, changed := cond(), b.changed
		b.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// idle reports that no connection has events waiting or being dispatched (bus lock held).
func (b *fakeCPG) idle() bool {
	if b.running > 0 {
		return false
	}
	for _, c := range b.conns {
		if len(c.inbox) > 0 {
			return false
		}
	}
	return true
}
