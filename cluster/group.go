package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/cpg"
	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/internal/fdwait"
	"github.com/pmxcfs-go/pmxcfs/ringquorum"
)

// Group runs one DFSM engine over a CPG group. The engine is created on the first
// connection, when corosync has told us our nodeid, and kept across reconnects, so local
// writers keep one engine to wait on.
type Group struct {
	GroupName       string // CPG group, e.g. pve_dcdb_v1
	ProtocolVersion uint32
	App             dfsm.Application
	// Attach is called once with the new engine (dcdb.App.Attach).
	Attach func(*dfsm.DFSM)
	Log    *logrus.Entry
	// Quorum, if set, follows the totem ring of the group's membership, for an application
	// that checks deliveries with Quorum.Quorate.
	Quorum *ringquorum.Gate

	// connect opens the CPG connection; nil means corosync (cpg.Initialize). Tests set an
	// in-memory group.
	connect func(cpg.Callbacks) (conn, error)

	mu     sync.Mutex
	engine *dfsm.DFSM
	handle conn // the connection in use, nil between connections
}

// conn is what Group uses of a CPG connection (*cpg.Handle). Callbacks run inside Dispatch.
type conn interface {
	LocalNodeID() (uint32, error)
	// Wait returns once Dispatch has work or the connection hung up (its events), or with
	// zero events when woken or at deadline.
	Wait(deadline time.Time) (fdwait.Events, error)
	Wake()
	Dispatch(ctx context.Context) error
	Join(ctx context.Context, group string) error
	Leave(ctx context.Context, group string) error
	TryMcast(msg []byte) error
	Close() error
}

func (g *Group) Name() string { return g.GroupName }

// CurrentEngine returns the engine or nil before the first connection.
func (g *Group) CurrentEngine() *dfsm.DFSM {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.engine
}

// Run connects, joins and dispatches until the connection fails or the engine leaves the
// group after an error; Supervise then reconnects about 6 s later, as upstream does.
func (g *Group) Run(ctx context.Context) error {
	var engine *dfsm.DFSM
	cb := cpg.Callbacks{
		Deliver: func(m cpg.Message) { engine.Deliver(m.NodeID, m.PID, m.Data) },
		ConfChg: func(c cpg.ConfChg) {
			if g.Quorum != nil && ringChange(c) {
				g.Quorum.RingChanging()
			}
			engine.Confchg(members(c.Members), members(c.Left), members(c.Joined))
		},
	}
	if g.Quorum != nil {
		g.Quorum.RingChanging() // until this connection's initial totem membership
		cb.TotemConfChg = func(c cpg.TotemConfChg) { g.Quorum.SetRing(c.RingSeq) }
	}
	h, err := g.dial(cb)
	if err != nil {
		return fmt.Errorf("cpg_initialize failed: %w", err)
	}
	defer h.Close()
	nodeid, err := h.LocalNodeID()
	if err != nil {
		return fmt.Errorf("cpg_local_get failed: %w", err)
	}
	if engine, err = g.engineFor(nodeid); err != nil {
		return err
	}
	if !engine.Restartable() {
		<-ctx.Done() // VERSION_ERROR and ERROR keep the node out until the daemon restarts
		return nil
	}
	g.setHandle(h)
	defer g.setHandle(nil)
	if err := engine.Start(); err != nil {
		return err
	}
	defer engine.Stop()
	stop := context.AfterFunc(ctx, h.Wake)
	defer stop()
	nextVerify := time.Now().Add(dfsm.VerifyInterval)
	for ctx.Err() == nil {
		// Dispatch, the verify timer and shutdown all run on this goroutine: the engine's
		// inputs must come from one goroutine.
		ev, err := h.Wait(nextVerify)
		if err != nil {
			return err
		}
		if ev != 0 {
			if ev.HangUp() && !ev.Readable() {
				return errors.New("connection to corosync lost")
			}
			// Everything corosync has ready is one batch: the application commits it
			// once and only then are local writers told their results.
			engine.BeginBatch()
			err := h.Dispatch(ctx)
			engine.EndBatch()
			if err != nil {
				return err
			}
		}
		if engine.Finished() {
			return errors.New("left the process group")
		}
		if time.Now().After(nextVerify) {
			nextVerify = time.Now().Add(dfsm.VerifyInterval)
			if err := engine.VerifyTick(); err != nil {
				g.Log.WithError(err).Warn("verify request failed")
			}
		}
	}
	return nil
}

func (g *Group) dial(cb cpg.Callbacks) (conn, error) {
	if g.connect != nil {
		return g.connect(cb)
	}
	h, err := cpg.Initialize(cb)
	if err != nil {
		return nil, err
	}
	h.SetLogger(g.Log)
	return h, nil
}

func (g *Group) engineFor(nodeid uint32) (*dfsm.DFSM, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.engine != nil {
		if g.engine.Self().NodeID != nodeid {
			return nil, fmt.Errorf("corosync nodeid changed from %d to %d - restart pmxcfs", g.engine.Self().NodeID, nodeid)
		}
		return g.engine, nil
	}
	e, err := dfsm.New(dfsm.Config{
		Name:            g.GroupName,
		ProtocolVersion: g.ProtocolVersion,
		Self:            dfsm.Member{NodeID: nodeid, PID: uint32(os.Getpid())},
		App:             g.App,
		Transport:       (*groupTransport)(g),
		Log:             g.Log,
	})
	if err != nil {
		return nil, err
	}
	g.engine = e
	if g.Attach != nil {
		g.Attach(e)
	}
	return e, nil
}

func (g *Group) setHandle(h conn) {
	g.mu.Lock()
	g.handle = h
	g.mu.Unlock()
}

func (g *Group) currentHandle() conn {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.handle
}

// ringChange reports a group change that corosync made while syncing a new totem ring
// (members that left or came with their node); the new ring's id follows it.
func ringChange(c cpg.ConfChg) bool {
	for _, a := range c.Left {
		if a.Reason == cpg.ReasonNodeDown {
			return true
		}
	}
	for _, a := range c.Joined {
		if a.Reason == cpg.ReasonNodeUp {
			return true
		}
	}
	return false
}

func members(addrs []cpg.Address) []dfsm.Member {
	out := make([]dfsm.Member, len(addrs))
	for i, a := range addrs {
		out[i] = dfsm.Member{NodeID: a.NodeID, PID: a.PID}
	}
	return out
}

// groupTransport is the engine's view of the current CPG connection. The engine runs its own
// TRY_AGAIN retry loop, so a send is a single attempt here.
type groupTransport Group

var errNotConnected = errors.New("not connected to corosync")

func (t *groupTransport) Mcast(msg []byte) error {
	h := (*Group)(t).currentHandle()
	if h == nil {
		return errNotConnected
	}
	err := h.TryMcast(msg)
	if errors.Is(err, cpg.ErrTryAgain) {
		return dfsm.ErrTryAgain
	}
	return err
}

func (t *groupTransport) Join() error {
	h := (*Group)(t).currentHandle()
	if h == nil {
		return errNotConnected
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return h.Join(ctx, t.GroupName)
}

func (t *groupTransport) Leave() error {
	h := (*Group)(t).currentHandle()
	if h == nil {
		return errNotConnected
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.Leave(ctx, t.GroupName)
}
