// Package dfsmtest is the test support of package dfsm: an in-memory virtually synchronous
// process group (Simulator) that drives dfsm engines deterministically, and a settable
// clock. It plays the part etcd's rafttest plays for raft; nothing in the daemon uses it.
package dfsmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
)

// Simulator is an in-memory virtually synchronous process group for tests:
// processes on nodes, network partitions, and one agreed total order of
// messages per connected component. The caller drives it from one goroutine
// (the dispatch goroutine of every engine) with Step or Run and decides when
// membership changes happen, which gives deterministic, controllable
// delivery schedules; writers may multicast from other goroutines.
//
// Semantics (as Corosync CPG): a membership change first delivers every
// message already multicast, in order, to every member of the old view,
// then delivers the configuration change to
// every process whose view changed. A message multicast after that is
// delivered in the new view, even when its sender had not yet processed the
// change; the DFSM epochs exist for exactly this case.
type Simulator struct {
	Clock *FakeClock
	// AutoRejoin restarts an engine that left the group after an error (and
	// is restartable) right after the configuration change without it.
	AutoRejoin bool
	// CutInFlight makes a membership change deliver the messages still in flight only
	// to the members that end up with their sender, as totem does with agreed order: a
	// node delivers its own message as soon as it sent it, and a partition at that
	// moment keeps it from the others.
	CutInFlight bool
	// Trace, if set, receives one line per send, delivery and confchg.
	Trace func(line string)
	// Describe renders a payload in trace lines; printable text by default.
	Describe func(m *dfsm.Message) string
	// OnRingChange and OnRing, if set, model corosync's totem ring for the CPG glue (and
	// what a quorum service derives from it). Each component has a ring, a new one whenever
	// its set of nodes changes. A process whose view changes with its component's ring, or
	// that joins afresh, gets OnRingChange before its engine's confchg; every process whose
	// ring is new to it gets OnRing after all confchgs of the change, as corosync sends the
	// totem membership after the groups' changes.
	OnRingChange func(p *SimProc)
	OnRing       func(p *SimProc, ring uint64, nodes []uint32)

	procs     []*SimProc
	component map[uint32]int
	nextPID   uint32
	ringSeq   uint64
	rings     map[uint32]simRing // per node: the ring of its component

	// mu guards what writers on other goroutines touch through Mcast.
	mu   sync.Mutex
	fifo []simMessage
	ops  []simOp
}

// SimProc is one simulated process with its engine.
type SimProc struct {
	dfsm.Member
	Engine  *dfsm.DFSM
	sim     *Simulator
	alive   bool
	joined  bool
	stopped bool
	view    []dfsm.Member
	ring    uint64 // the ring last given to OnRing
}

type simRing struct {
	seq   uint64
	nodes []uint32
}

type simMessage struct {
	from *SimProc
	data []byte
}

type simOp struct {
	apply   func()
	leavers []*SimProc
}

// NewSimulator returns an empty simulated cluster whose clock starts at t0.
func NewSimulator(t0 int64) *Simulator {
	return &Simulator{Clock: &FakeClock{T: t0}, AutoRejoin: true, component: map[uint32]int{}, nextPID: 100,
		rings: map[uint32]simRing{}}
}

func (s *Simulator) trace(format string, args ...any) {
	if s.Trace != nil {
		s.Trace(fmt.Sprintf(format, args...))
	}
}

// Spawn creates a process on nodeid with a fresh pid and an engine built
// from cfg (Self, Transport and Clock are filled in), and starts it: it
// joins the group at the next Step.
func (s *Simulator) Spawn(nodeid uint32, cfg dfsm.Config) (*SimProc, error) {
	s.nextPID++
	p := &SimProc{Member: dfsm.Member{NodeID: nodeid, PID: s.nextPID}, sim: s, alive: true}
	cfg.Self = p.Member
	cfg.Transport = p
	cfg.Clock = s.Clock
	e, err := dfsm.New(cfg)
	if err != nil {
		return nil, err
	}
	p.Engine = e
	s.procs = append(s.procs, p)
	if _, ok := s.component[nodeid]; !ok {
		s.component[nodeid] = 0
	}
	return p, e.Start()
}

// Alive lists the running processes.
func (s *Simulator) Alive() []*SimProc {
	var out []*SimProc
	for _, p := range s.procs {
		if p.alive {
			out = append(out, p)
		}
	}
	return out
}

// Proc returns the running process of nodeid, or nil.
func (s *Simulator) Proc(nodeid uint32) *SimProc {
	for _, p := range s.procs {
		if p.alive && p.NodeID == nodeid {
			return p
		}
	}
	return nil
}

// Alive reports whether the process still runs.
func (p *SimProc) Alive() bool { return p.alive }

// Joined reports whether the process is in the group: its join was performed and no leave
// since.
func (p *SimProc) Joined() bool { return p.joined }

// View is the member list of the last confchg this process got.
func (p *SimProc) View() []dfsm.Member { return p.view }

// Mcast implements dfsm.Transport.
func (p *SimProc) Mcast(msg []byte) error {
	s := p.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	if !p.alive || !p.joined {
		return errors.New("sim: not joined")
	}
	s.trace("%s send %s", p.Member, s.describe(msg))
	s.fifo = append(s.fifo, simMessage{from: p, data: append([]byte(nil), msg...)})
	return nil
}

// Join implements dfsm.Transport.
func (p *SimProc) Join() error {
	p.sim.addOp(simOp{apply: func() { p.joined = true }})
	return nil
}

// Leave implements dfsm.Transport.
func (p *SimProc) Leave() error {
	p.sim.addOp(simOp{apply: func() { p.joined = false }, leavers: []*SimProc{p}})
	return nil
}

func (s *Simulator) addOp(op simOp) {
	s.mu.Lock()
	s.ops = append(s.ops, op)
	s.mu.Unlock()
}

// Stop shuts a process down cleanly: it leaves the group, the others see it
// in the left list.
func (s *Simulator) Stop(p *SimProc) {
	p.stopped = true
	_ = p.Engine.Stop()
	s.addOp(simOp{apply: func() { p.alive = false }})
}

// Crash kills a process: the others see it leave; it gets nothing.
func (s *Simulator) Crash(p *SimProc) {
	s.addOp(simOp{apply: func() { p.alive = false; p.joined = false; p.stopped = true }})
}

// Partition splits the nodes into the given components; nodes not listed
// form one more component together.
func (s *Simulator) Partition(groups ...[]uint32) {
	s.addOp(simOp{apply: func() {
		for n := range s.component {
			s.component[n] = len(groups)
		}
		for i, g := range groups {
			for _, n := range g {
				s.component[n] = i
			}
		}
	}})
}

// Component lists the nodes node can reach (itself included) as of the last membership
// change, in ascending order.
func (s *Simulator) Component(node uint32) []uint32 {
	var out []uint32
	for n, c := range s.component {
		if c == s.component[node] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Heal reconnects every node.
func (s *Simulator) Heal() {
	s.addOp(simOp{apply: func() {
		for n := range s.component {
			s.component[n] = 0
		}
	}})
}

// Inject multicasts raw bytes as if p had sent them.
func (s *Simulator) Inject(p *SimProc, msg []byte) error { return p.Mcast(msg) }

// Pending is the number of messages multicast but not yet delivered.
func (s *Simulator) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fifo)
}

// PendingOps is the number of membership changes not yet performed.
func (s *Simulator) PendingOps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ops)
}

// Step performs one membership change if one is pending, else delivers one
// message. It returns false when idle.
func (s *Simulator) Step() bool {
	s.mu.Lock()
	if len(s.ops) > 0 {
		op := s.ops[0]
		s.ops = s.ops[1:]
		s.mu.Unlock()
		s.membershipChange(op)
		return true
	}
	s.mu.Unlock()
	return s.StepMessage()
}

// StepMessage delivers one message even if membership changes are pending.
func (s *Simulator) StepMessage() bool {
	s.mu.Lock()
	if len(s.fifo) == 0 {
		s.mu.Unlock()
		return false
	}
	m := s.fifo[0]
	s.fifo = s.fifo[1:]
	s.mu.Unlock()
	s.deliverMessage(m)
	return true
}

// Run steps until idle or until limit steps were made; it returns the number
// of steps.
func (s *Simulator) Run(limit int) int {
	n := 0
	for n < limit && s.Step() {
		n++
	}
	return n
}

func (s *Simulator) recipients(from *SimProc) []*SimProc {
	var out []*SimProc
	c := s.component[from.NodeID]
	for _, p := range s.procs {
		if p.alive && p.joined && s.component[p.NodeID] == c {
			out = append(out, p)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return memberLess(out[i].Member, out[j].Member) })
	return out
}

func (s *Simulator) deliverMessage(m simMessage) {
	s.deliverTo(m, s.recipients(m.from))
}

func (s *Simulator) deliverTo(m simMessage, to []*SimProc) {
	if !m.from.joined && m.from.alive {
		// Sent by a process that left before delivery: CPG drops it.
		return
	}
	names := make([]string, len(to))
	for i, p := range to {
		names[i] = p.Member.String()
	}
	s.trace("deliver %s from %s to %s", s.describe(m.data), m.from.Member, strings.Join(names, ","))
	for _, p := range to {
		if p.alive && p.joined {
			p.Engine.Deliver(m.from.NodeID, m.from.PID, m.data)
		}
	}
}

func (s *Simulator) membershipChange(op simOp) {
	// Virtual synchrony: what was sent in the old view is delivered in it.
	s.mu.Lock()
	old := s.fifo
	s.fifo = nil
	s.mu.Unlock()
	if s.CutInFlight {
		to := make([][]*SimProc, len(old))
		for i, m := range old {
			to[i] = s.recipients(m.from)
		}
		s.mu.Lock()
		op.apply()
		s.mu.Unlock()
		for i, m := range old {
			var side []*SimProc
			for _, p := range to[i] {
				if s.component[p.NodeID] == s.component[m.from.NodeID] {
					side = append(side, p)
				}
			}
			s.deliverTo(m, side)
		}
	} else {
		for _, m := range old {
			s.deliverMessage(m)
		}
		s.mu.Lock()
		op.apply()
		s.mu.Unlock()
	}

	views := map[int][]dfsm.Member{}
	for _, p := range s.procs {
		if p.alive && p.joined {
			c := s.component[p.NodeID]
			views[c] = append(views[c], p.Member)
		}
	}
	for _, v := range views {
		sort.Slice(v, func(i, j int) bool { return memberLess(v[i], v[j]) })
	}
	newRing := s.updateRings()
	// A process joining afresh sees only the newcomers as joined, like CPG.
	var fresh []dfsm.Member
	for _, p := range s.procs {
		if p.alive && p.joined && p.view == nil {
			fresh = append(fresh, p.Member)
		}
	}
	for _, p := range s.procs {
		if !p.alive || !p.joined {
			continue
		}
		nv := views[s.component[p.NodeID]]
		if slices.Equal(p.view, nv) {
			continue
		}
		left, joined := diffMembers(p.view, nv), diffMembers(nv, p.view)
		if p.view == nil {
			joined = diffMembers(joined, diffMembers(joined, fresh))
			p.ring = 0 // a new connection learns its ring again
		}
		if s.OnRingChange != nil && (newRing[p.NodeID] || p.view == nil) {
			s.OnRingChange(p)
		}
		p.view = append([]dfsm.Member(nil), nv...)
		s.trace("%s confchg members=%s left=%s joined=%s", p.Member, fmtMembers(nv), fmtMembers(left), fmtMembers(joined))
		p.Engine.Confchg(nv, left, joined)
	}
	for _, p := range op.leavers {
		if !p.alive || p.stopped || p.view == nil {
			continue
		}
		nv := views[s.component[p.NodeID]]
		s.trace("%s confchg members=%s left=%s joined=-", p.Member, fmtMembers(nv), p.Member)
		p.view = nil
		p.Engine.Confchg(nv, []dfsm.Member{p.Member}, nil)
		if s.AutoRejoin && !p.stopped && p.Engine.Finished() && p.Engine.Restartable() {
			s.trace("%s rejoin", p.Member)
			_ = p.Engine.Start()
		}
	}
	for _, p := range s.procs {
		if !p.alive && p.view != nil {
			p.view = nil
		}
	}
	if s.OnRing != nil {
		for _, p := range s.procs {
			if r := s.rings[p.NodeID]; p.alive && p.joined && p.view != nil && p.ring != r.seq {
				p.ring = r.seq
				s.OnRing(p, r.seq, r.nodes)
			}
		}
	}
}

// updateRings gives every component whose set of nodes changed a new ring and returns the
// nodes that got one.
func (s *Simulator) updateRings() map[uint32]bool {
	byComp := map[int][]uint32{}
	for n, c := range s.component {
		byComp[c] = append(byComp[c], n)
	}
	changed := map[uint32]bool{}
	comps := make([]int, 0, len(byComp))
	for c, nodes := range byComp {
		sort.Slice(nodes, func(i, j int) bool { return nodes[i] < nodes[j] })
		comps = append(comps, c)
	}
	sort.Ints(comps) // ring ids in a deterministic order
	for _, c := range comps {
		nodes := byComp[c]
		same := true
		for _, n := range nodes {
			if r, ok := s.rings[n]; !ok || !slices.Equal(r.nodes, nodes) {
				same = false
			}
		}
		if same {
			continue
		}
		s.ringSeq += 4 // corosync's ring ids grow by 4
		for _, n := range nodes {
			s.rings[n] = simRing{seq: s.ringSeq, nodes: nodes}
			changed[n] = true
		}
	}
	return changed
}

func memberLess(a, b dfsm.Member) bool {
	if a.NodeID != b.NodeID {
		return a.NodeID < b.NodeID
	}
	return a.PID < b.PID
}

func diffMembers(a, b []dfsm.Member) []dfsm.Member {
	var out []dfsm.Member
	for _, m := range a {
		found := false
		for _, o := range b {
			if m == o {
				found = true
				break
			}
		}
		if !found {
			out = append(out, m)
		}
	}
	return out
}

func fmtMembers(ms []dfsm.Member) string {
	if len(ms) == 0 {
		return "-"
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return strings.Join(parts, ",")
}

func (s *Simulator) describe(b []byte) string {
	m, err := dfsm.Decode(b)
	if err != nil {
		return fmt.Sprintf("<%d bytes: %v>", len(b), err)
	}
	var sb strings.Builder
	if m.ProtocolVersion != 0 {
		fmt.Fprintf(&sb, "v%d ", m.ProtocolVersion)
	}
	if m.IsNormal() {
		fmt.Fprintf(&sb, "NORMAL #%d/%d", m.Count, m.Subtype)
	} else {
		fmt.Fprintf(&sb, "%s e=%s", m.Type, m.Epoch)
	}
	var p string
	switch {
	case m.Type == dfsm.MsgVerifyRequest && len(m.Payload) == 8:
		p = fmt.Sprintf("id=%d", binary.LittleEndian.Uint64(m.Payload))
	case m.Type == dfsm.MsgVerify && len(m.Payload) == 40:
		p = fmt.Sprintf("id=%d sum=%x…", binary.LittleEndian.Uint64(m.Payload), m.Payload[8:12])
	case s.Describe != nil:
		p = s.Describe(&m)
	case len(m.Payload) > 0:
		p = printable(m.Payload)
	}
	if p != "" {
		sb.WriteString(" ")
		sb.WriteString(p)
	}
	return sb.String()
}

func printable(b []byte) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("<%d bytes>", len(b))
		}
	}
	return fmt.Sprintf("%q", b)
}
