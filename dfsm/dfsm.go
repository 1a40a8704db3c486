// Package dfsm is the distributed finite state machine that keeps one
// application replicated over a virtually synchronous process group: the
// wire protocol of upstream pmxcfs's dfsm.c (docs/protocol.md), as a
// deterministic engine driven by Deliver, Confchg and VerifyTick inputs.
//
// Threading: Start, Deliver, Confchg and VerifyTick, and every Application
// callback, run on one dispatch goroutine. Send and SendSync may be called
// from any goroutine, including from inside callbacks (SendSync there would
// wait forever, as upstream). SendUpdate and SendUpdateComplete are for the
// leader's ProcessStateUpdate callback.
package dfsm

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/internal/cs"
)

// Mode is the engine's state (docs/protocol.md#modes).
type Mode uint8

const (
	ModeStart        Mode = 0
	ModeStartSync    Mode = 1
	ModeSynced       Mode = 2
	ModeUpdate       Mode = 3
	errorModeStart   Mode = 128
	ModeLeave        Mode = 253
	ModeVersionError Mode = 254
	ModeError        Mode = 255
)

func (m Mode) String() string {
	switch m {
	case ModeStart:
		return "START"
	case ModeStartSync:
		return "START_SYNC"
	case ModeSynced:
		return "SYNCED"
	case ModeUpdate:
		return "UPDATE"
	case ModeLeave:
		return "LEAVE"
	case ModeVersionError:
		return "VERSION_ERROR"
	case ModeError:
		return "ERROR"
	}
	return fmt.Sprintf("MODE(%d)", uint8(m))
}

// IsError reports whether m is one of the error modes (LEAVE and above).
func (m Mode) IsError() bool { return m >= errorModeStart }

// ErrTryAgain is returned by a Transport when the group is congested.
var ErrTryAgain = errors.New("dfsm: transport busy, try again")

// VerifyInterval is how often the daemon calls VerifyTick (upstream's
// service timer).
const VerifyInterval = 3600 * time.Second

// Config describes one engine.
type Config struct {
	// Name is the group name, used in logs.
	Name string
	// ProtocolVersion is 1 for pve_dcdb_v1, 0 for pve_kvstore_v1.
	ProtocolVersion uint32
	// Self is this process: the transport's local nodeid and our pid.
	Self      Member
	App       Application
	Transport Transport
	Clock     Clock // SystemClock when nil
	Log       logrus.FieldLogger
	// OnModeChange, if set, observes every mode change (tests, status).
	OnModeChange func(from, to Mode)
}

type localResult struct {
	count  uint64
	result int
	alone  bool // delivered while this process was the group's only member
}

type queuedMessage struct {
	from  Member
	count uint64
	msg   []byte
}

// DFSM is one engine instance.
type DFSM struct {
	cfg   Config
	app   Application
	tr    Transport
	clock Clock
	log   logrus.FieldLogger

	mode atomic.Uint32

	// Dispatch-goroutine state.
	joined       bool
	weAreMember  bool
	si           *SyncInfo
	members      map[Member]int
	epochCounter uint32
	syncEpoch    Epoch
	lowestNodeID uint32
	msgQueue     []queuedMessage // sorted by count, stable
	syncQueue    []queuedMessage // FIFO

	// Batching (Flusher applications): local results wait in unflushed until the
	// application has made their messages durable.
	batching  bool
	unflushed []localResult
	dirty     int // messages applied since the last Flush

	csum        [ChecksumLen]byte
	csumEpoch   Epoch
	csumID      uint64
	csumCounter uint64

	// Synchronous senders. sendMu is held across a NORMAL send so counts go
	// out in order.
	sendMu   sync.Mutex
	msgCount uint64
	rcvd     uint64
	waiters  map[uint64]*Pending

	confirmer Confirmer // the application, if it confirms local results
	confirm   confirmState
}

// New creates an engine in START mode. Call Start to join the group.
func New(cfg Config) (*DFSM, error) {
	if cfg.App == nil || cfg.Transport == nil {
		return nil, errors.New("dfsm: Config needs App and Transport")
	}
	d := &DFSM{cfg: cfg, app: cfg.App, tr: cfg.Transport, clock: cfg.Clock, log: cfg.Log,
		members: map[Member]int{}, waiters: map[uint64]*Pending{}}
	if d.clock == nil {
		d.clock = SystemClock
	}
	if d.log == nil {
		d.log = logrus.StandardLogger().WithField("group", cfg.Name)
	}
	d.confirmer, _ = cfg.App.(Confirmer)
	return d, nil
}

// Self is this process.
func (d *DFSM) Self() Member { return d.cfg.Self }

// Mode returns the current mode; safe from any goroutine.
func (d *DFSM) Mode() Mode { return Mode(d.mode.Load()) }

// Restartable is false after VERSION_ERROR and ERROR: the node stays out of
// the group until the daemon restarts.
func (d *DFSM) Restartable() bool {
	m := d.Mode()
	return m != ModeError && m != ModeVersionError
}

// Finished reports that the engine left the group after an error and the
// confchg without us arrived: the caller should stop dispatching and, if
// Restartable, call Start again later (upstream waits about 6 s).
func (d *DFSM) Finished() bool {
	return d.Mode().IsError() && !d.joined && !d.weAreMember
}

// IsLowestNode reports whether this node has the lowest nodeid in the current
// configuration (it sends SYNC_START, VERIFY_REQUEST and decides unlocks).
func (d *DFSM) IsLowestNode() bool {
	return d.lowestNodeID != 0 && d.lowestNodeID == d.cfg.Self.NodeID
}

// IsLocal reports whether m is this process.
func (d *DFSM) IsLocal(m Member) bool { return m == d.cfg.Self }

// SetErrorMode puts the engine into the terminal ERROR mode (used by the
// application after a fatal local error).
func (d *DFSM) SetErrorMode() { d.setMode(ModeError) }

func (d *DFSM) now() uint32 { return uint32(d.clock.Now().Unix()) }

func (d *DFSM) setMode(to Mode) {
	var from Mode
	for {
		cur := d.mode.Load()
		from = Mode(cur)
		if from == to {
			return
		}
		// Error modes only escalate.
		if to.IsError() && from.IsError() && to < from {
			return
		}
		if d.mode.CompareAndSwap(cur, uint32(to)) {
			break
		}
	}
	switch to {
	case ModeStart:
		d.log.Info("start cluster connection")
	case ModeStartSync:
		d.log.Info("starting data syncronisation")
	case ModeSynced:
		d.log.Info("all data is up to date")
	case ModeUpdate:
		d.log.Info("waiting for updates from leader")
	case ModeLeave:
		d.log.Error("leaving CPG group")
	case ModeVersionError:
		d.log.Error("detected newer protocol - please update this node")
	case ModeError:
		d.log.Error("serious internal error - stop cluster connection")
	}
	if d.cfg.OnModeChange != nil {
		d.cfg.OnModeChange(from, to)
	}
	if to == ModeSynced {
		d.app.Synced()
	}
}

// Start (re)initialises the engine and joins the group: the queue is freed,
// every synchronous waiter is aborted (EBUSY) and the mode is START.
func (d *DFSM) Start() error {
	if !d.Restartable() {
		return fmt.Errorf("dfsm %s: not restartable after %s", d.cfg.Name, d.Mode())
	}
	d.msgQueue = nil
	d.flush()
	d.abortWaiters()
	d.joined = false
	d.weAreMember = false
	d.setMode(ModeStart)
	if st, ok := d.app.(Starter); ok {
		st.Starting()
	}
	if err := d.tr.Join(); err != nil {
		return fmt.Errorf("dfsm %s: join: %w", d.cfg.Name, err)
	}
	d.joined = true
	return nil
}

// Stop aborts the waiters and leaves the group (upstream dfsm_finalize).
func (d *DFSM) Stop() error {
	d.flush()
	d.abortWaiters()
	if !d.joined {
		return nil
	}
	d.joined = false
	d.weAreMember = false
	return d.tr.Leave()
}

// afterDispatch leaves the group once an error mode is reached, as upstream's
// dispatch loop does after every callback.
func (d *DFSM) afterDispatch() {
	if d.Mode().IsError() && d.joined {
		if err := d.tr.Leave(); err != nil {
			d.log.WithError(err).Error("leave failed")
		}
		d.joined = false
	}
}

// ---- sending ----

func (d *DFSM) mcast(msg []byte) error {
	var err error
	sleep := func(t time.Duration) error { d.clock.Sleep(t); return nil }
	cs.Send.Run(d.log, "cpg_send_message", sleep, func() bool {
		err = d.tr.Mcast(msg)
		return errors.Is(err, ErrTryAgain)
	})
	// A TRY_AGAIN left after the last retry is the caller's to report, as upstream's
	// dfsm.c:dfsm_send_message_full does.
	if err != nil && !errors.Is(err, ErrTryAgain) {
		d.log.WithError(err).Error("cpg_send_message failed")
	}
	return err
}

func (d *DFSM) sendState(t MsgType, payload []byte) error {
	m := Message{Header: Header{Type: t, ProtocolVersion: d.cfg.ProtocolVersion, Time: d.now()},
		Epoch: d.syncEpoch, Payload: payload}
	return d.mcast(m.Encode())
}

// SendUpdate multicasts one UPDATE with the current sync epoch (leader only,
// from ProcessStateUpdate).
func (d *DFSM) SendUpdate(payload []byte) error { return d.sendState(MsgUpdate, payload) }

// SendUpdateComplete ends the leader's updates.
func (d *DFSM) SendUpdateComplete() error { return d.sendState(MsgUpdateComplete, nil) }

// Pending is a NORMAL message sent by this process whose result is awaited.
type Pending struct {
	Count     uint64
	done      chan struct{}
	result    int
	processed bool
	// unconfirmed: applied here, but the group changed before the others were known to
	// have it (Confirmer).
	unconfirmed bool
	later       bool // sent with SendSyncLater: released unconfirmed, owed a confirmation
}

// Done is closed once the message was delivered locally or the wait aborted.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Result is valid after Done: the application's result, or syscall.EBUSY if
// the message was never processed here (aborted by a restart, or dropped), or
// syscall.EIO if it was applied here but not confirmed (Confirmer).
func (p *Pending) Result() (int, error) {
	<-p.done
	if !p.processed {
		return 0, syscall.EBUSY
	}
	if p.unconfirmed {
		return 0, syscall.EIO
	}
	return p.result, nil
}

// Send multicasts a NORMAL message without waiting for it.
func (d *DFSM) Send(subtype uint16, payload []byte) error {
	_, err := d.send(subtype, payload, false)
	return err
}

// Submit multicasts a NORMAL message and returns a handle to await its
// local result; the result is matched by (nodeid, pid, count).
func (d *DFSM) Submit(subtype uint16, payload []byte) (*Pending, error) {
	return d.send(subtype, payload, true)
}

// SendSync multicasts a NORMAL message and waits until this process has
// delivered it (no timeout, as upstream), and with a Confirmer until that was
// confirmed. A failed send or an aborted wait gives syscall.EBUSY.
func (d *DFSM) SendSync(subtype uint16, payload []byte) (int, error) {
	p, err := d.send(subtype, payload, true)
	if err != nil {
		return 0, syscall.EBUSY
	}
	return p.Result()
}

func (d *DFSM) send(subtype uint16, payload []byte, wait bool) (*Pending, error) {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	return d.sendLocked(subtype, payload, wait)
}

func (d *DFSM) sendLocked(subtype uint16, payload []byte, wait bool) (*Pending, error) {
	count, err := d.mcastNormalLocked(subtype, payload)
	if err != nil {
		return nil, err
	}
	d.sentLocked(count)
	var p *Pending
	if wait {
		// Registered before sendMu is released, so before the delivery can look for it.
		p = &Pending{Count: count, done: make(chan struct{})}
		d.waiters[count] = p
	}
	return p, nil
}

// mcastNormalLocked sends a NORMAL message with the next count (sendMu held).
func (d *DFSM) mcastNormalLocked(subtype uint16, payload []byte) (uint64, error) {
	d.msgCount++
	count := d.msgCount
	m := Message{Header: Header{Type: MsgNormal, Subtype: subtype,
		ProtocolVersion: d.cfg.ProtocolVersion, Time: d.now()}, Count: count, Payload: payload}
	return count, d.mcast(m.Encode())
}

// recordLocalResult hands a result to the waiter of count (or holds it until it is
// confirmed); like upstream, it also releases every waiter with a lower count (their
// message was lost).
func (d *DFSM) recordLocalResult(count uint64, result int, alone bool) {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.confirmedLocked(count, result)
	if p := d.waiters[count]; p != nil {
		p.result, p.processed = result, true
		// Alone in the group there is nobody who could have missed the message.
		if !alone && d.holdLocked(p) {
			delete(d.waiters, count)
		}
	}
	d.rcvd = count
	d.wakeLocked()
	d.sendConfirmLocked()
}

func (d *DFSM) abortWaiters() {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	d.rcvd = d.msgCount
	d.wakeLocked()
	d.abortConfirmLocked()
}

func (d *DFSM) wakeLocked() {
	for c, p := range d.waiters {
		if c <= d.rcvd {
			close(p.done)
			delete(d.waiters, c)
		}
	}
}

// ---- membership ----

// Confchg is a configuration change of the group. Only the member list is
// used for the membership (the joined and left lists differ between nodes);
// a non-empty joined list triggers the resend of our queued messages.
func (d *DFSM) Confchg(members, left, joined []Member) {
	d.confchg(members, left, joined)
	d.endInput()
}

func (d *DFSM) confchg(members, left, joined []Member) {
	d.weAreMember = false
	d.epochCounter++
	d.syncEpoch = Epoch{Counter: d.epochCounter, Time: d.now(), NodeID: d.cfg.Self.NodeID, PID: d.cfg.Self.PID}
	d.csumID = d.csumCounter
	d.csumEpoch = Epoch{}
	d.syncQueue = nil

	mode := d.Mode()
	if mode.IsError() {
		d.log.Debug("already left group - ignore confchg")
		return
	}
	var lowest uint32
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.String()
		if lowest == 0 || m.NodeID < lowest {
			lowest = m.NodeID
		}
		if m == d.cfg.Self {
			d.weAreMember = true
		}
	}
	if d.weAreMember || mode != ModeStart {
		d.log.Infof("members: %s", strings.Join(ids, ", "))
	}
	d.lowestNodeID = lowest
	d.releaseSyncResources(members)

	if !d.weAreMember {
		if mode == ModeStart {
			return
		}
		d.log.Infof("we (%s) left the process group", d.cfg.Self)
		d.setMode(ModeLeave)
		return
	}
	if len(members) > 1 {
		if len(joined) > 0 && len(d.msgQueue) > 0 {
			d.log.Infof("queue not empty - resending %d messages", len(d.msgQueue))
			if !d.resendQueue() {
				d.setMode(ModeLeave)
				return
			}
		}
		d.setMode(ModeStartSync)
		if lowest == d.cfg.Self.NodeID {
			if err := d.sendState(MsgSyncStart, nil); err != nil {
				d.log.Error("failed to send SYNC_START message")
				d.setMode(ModeLeave)
				return
			}
		}
	} else {
		d.setMode(ModeSynced)
		d.si.Nodes[d.si.Local].Synced = true
		if !d.deliverQueue() {
			d.setMode(ModeLeave)
			return
		}
	}
	d.app.Confchg(members)
}

// releaseSyncResources ends a sync round (cleanup, states dropped); with a
// member list it also rebuilds the membership, all members unsynced.
func (d *DFSM) releaseSyncResources(members []Member) {
	if d.si != nil {
		if d.si.Data != nil {
			d.app.Cleanup(d.si)
			d.si.Data = nil
		}
		for i := range d.si.Nodes {
			d.si.Nodes[i].State = nil
		}
	}
	if members == nil {
		return
	}
	si := &SyncInfo{Nodes: make([]NodeInfo, len(members)), Local: -1}
	for i, m := range members {
		si.Nodes[i].Member = m
	}
	sort.SliceStable(si.Nodes, func(i, j int) bool { return si.Nodes[i].less(si.Nodes[j].Member) })
	d.members = make(map[Member]int, len(members))
	for i, n := range si.Nodes {
		d.members[n.Member] = i
		if n.Member == d.cfg.Self {
			si.Local = i
		}
	}
	d.si = si
}

func (d *DFSM) member(m Member) *NodeInfo {
	i, ok := d.members[m]
	if !ok || d.si == nil {
		return nil
	}
	return &d.si.Nodes[i]
}

// resendQueue multicasts our own queued messages unchanged, then drops the
// whole queue: every member resends its own, so all queues become equal.
func (d *DFSM) resendQueue() bool {
	ok := true
	for _, q := range d.msgQueue {
		if q.from == d.cfg.Self {
			if err := d.mcast(q.msg); err != nil {
				ok = false
				break
			}
		}
	}
	d.msgQueue = nil
	return ok
}

// ---- queues ----

// queueCmp is upstream's comparator: the u64 difference truncated to int.
func queueCmp(a, b uint64) int32 { return int32(a - b) }

func (d *DFSM) queueMessage(from Member, count uint64, msg []byte) bool {
	ni := d.member(from)
	if ni == nil {
		d.log.Errorf("queue: sender %s is not a member", from)
		return false
	}
	q := queuedMessage{from: from, count: count, msg: append([]byte(nil), msg...)}
	if d.Mode() == ModeUpdate && ni.Synced {
		d.syncQueue = append(d.syncQueue, q)
		return true
	}
	// After every element that compares equal or lower (GSequence order).
	i := sort.Search(len(d.msgQueue), func(i int) bool { return queueCmp(d.msgQueue[i].count, count) > 0 })
	d.msgQueue = append(d.msgQueue, queuedMessage{})
	copy(d.msgQueue[i+1:], d.msgQueue[i:])
	d.msgQueue[i] = q
	return true
}

// deliverQueue walks msg_queue: messages of non-members are dropped; in
// SYNCED those of synced members are delivered, in UPDATE they move to the
// sync_queue; the others stay.
func (d *DFSM) deliverQueue() bool {
	if len(d.msgQueue) == 0 {
		return true
	}
	d.log.Infof("deliver queue: length %d", len(d.msgQueue))
	queue := d.msgQueue
	d.msgQueue = nil
	var keep []queuedMessage
	ok := true
	for i, q := range queue {
		ni := d.member(q.from)
		if ni == nil {
			d.log.Infof("remove message from non-member %s", q.from)
			continue
		}
		switch d.Mode() {
		case ModeSynced:
			if ni.Synced {
				d.deliver(q.from, q.msg)
				continue
			}
		case ModeUpdate:
			if ni.Synced {
				d.syncQueue = append(d.syncQueue, q)
				continue
			}
		default:
			keep = append(keep, queue[i:]...)
			ok = false
		}
		if !ok {
			break
		}
		keep = append(keep, q)
	}
	// Messages queued during the walk (none expected) come after.
	d.msgQueue = append(keep, d.msgQueue...)
	return ok
}

func (d *DFSM) deliverSyncQueue() bool {
	queue := d.syncQueue
	d.syncQueue = nil
	if len(queue) == 0 {
		return true
	}
	d.log.Infof("deliver sync queue: length %d", len(queue))
	ok := true
	for _, q := range queue {
		if ok && d.Mode() == ModeSynced {
			d.deliver(q.from, q.msg)
		} else {
			ok = false
		}
	}
	return ok
}

// ---- delivery ----

// Deliver processes one message from the group, in agreed order, including
// our own.
func (d *DFSM) Deliver(nodeid, pid uint32, msg []byte) {
	d.deliver(Member{nodeid, pid}, msg)
	d.endInput()
}

// maxBatch is the most messages one Flush covers.
const maxBatch = 32

// BeginBatch defers the Flush of the following inputs to EndBatch: the transport loop
// brackets each dispatch of everything corosync has ready, so a burst of messages
// (concurrent writers, a queue delivered after a sync) costs the application one Flush.
func (d *DFSM) BeginBatch() { d.batching = true }

// EndBatch flushes the batch's inputs and hands out their local results.
func (d *DFSM) EndBatch() {
	d.batching = false
	d.endInput()
}

func (d *DFSM) endInput() {
	if !d.batching {
		d.flush()
	}
	d.afterDispatch()
}

// flush makes the delivered messages durable through the application, then releases
// their local results (all as EIO if that failed).
func (d *DFSM) flush() {
	f, ok := d.app.(Flusher)
	if !ok || d.dirty == 0 {
		return
	}
	d.dirty = 0
	err := f.Flush()
	if err != nil {
		d.log.WithError(err).Error("flushing delivered messages failed")
		d.setMode(ModeError)
	}
	results := d.unflushed
	d.unflushed = nil
	for _, r := range results {
		if err != nil {
			r.result = -int(syscall.EIO)
		}
		d.recordLocalResult(r.count, r.result, r.alone)
	}
}

func (d *DFSM) leave() {
	d.setMode(ModeLeave)
	d.releaseSyncResources(nil)
}

func (d *DFSM) deliver(from Member, msg []byte) {
	mode := d.Mode()
	if mode.IsError() {
		d.log.Debug("error mode - ignoring message")
		d.leave()
		return
	}
	if d.si == nil {
		d.log.Error("no sync info - internal error")
		d.leave()
		return
	}
	h, err := DecodeHeader(msg)
	if err != nil {
		d.log.WithError(err).Error("received short message")
		d.leave()
		return
	}
	if h.ProtocolVersion > d.cfg.ProtocolVersion {
		d.log.Errorf("received message with protocol version %d", h.ProtocolVersion)
		d.setMode(ModeVersionError)
		return
	}
	if h.ProtocolVersion < d.cfg.ProtocolVersion {
		d.log.Infof("ignore message with wrong protocol version %d", h.ProtocolVersion)
		return
	}
	m, err := Decode(msg)
	if err != nil {
		d.log.WithError(err).Error("received short message")
		d.leave()
		return
	}
	if m.IsNormal() {
		if mode != ModeSynced {
			if !d.queueMessage(from, m.Count, msg) {
				d.leave()
			}
			return
		}
		result, err := d.app.Deliver(from, m.Subtype, m.Time, m.Payload)
		if from == d.cfg.Self {
			if _, ok := d.app.(Flusher); ok {
				d.unflushed = append(d.unflushed, localResult{m.Count, result, len(d.members) == 1})
			} else {
				d.recordLocalResult(m.Count, result, len(d.members) == 1)
			}
		}
		// A batch is bounded: corosync keeps one dispatch going for as long as messages
		// arrive, and every member, not only the sender, must make a message durable
		// soon, or a crash of all members could lose a write the sender acknowledged.
		if d.dirty++; d.batching && d.dirty >= maxBatch {
			d.flush()
		}
		if err != nil {
			d.log.WithError(err).Error("deliver failed")
			d.leave()
		}
		return
	}
	if m.Type != MsgSyncStart && m.Epoch != d.syncEpoch {
		d.log.Debugf("ignore %s with wrong epoch %s", m.Type, m.Epoch)
		return
	}
	if !d.deliverState(mode, from, &m) {
		d.leave()
	}
}

// deliverState handles a state-class message with a valid epoch; false means
// leave the group.
func (d *DFSM) deliverState(mode Mode, from Member, m *Message) bool {
	switch mode {
	case ModeSynced:
		switch m.Type {
		case MsgUpdateComplete:
			for i := range d.si.Nodes {
				d.si.Nodes[i].Synced = true
			}
			return d.deliverQueue()
		case MsgVerifyRequest:
			return d.onVerifyRequest(from, m)
		case MsgVerify:
			return d.onVerify(m)
		}
		d.log.Debugf("ignore state message %s", m.Type)
		return true
	case ModeStartSync:
		switch m.Type {
		case MsgSyncStart:
			return d.onSyncStart(from, m)
		case MsgState:
			return d.onState(from, m)
		}
	case ModeUpdate:
		switch m.Type {
		case MsgUpdate:
			if err := d.app.ProcessUpdate(d.si, from, m.Payload); err != nil {
				d.log.WithError(err).Error("process update failed")
				return false
			}
			return true
		case MsgUpdateComplete:
			if err := d.app.Commit(d.si); err != nil {
				d.log.WithError(err).Error("commit failed")
				return false
			}
			for i := range d.si.Nodes {
				d.si.Nodes[i].Synced = true
			}
			d.setMode(ModeSynced)
			if !d.deliverSyncQueue() || !d.deliverQueue() {
				return false
			}
			d.releaseSyncResources(nil)
			return true
		}
	default:
		d.log.Errorf("internal error - unknown mode %s", mode)
		return false
	}
	if m.Type == MsgVerifyRequest || m.Type == MsgVerify {
		d.log.Debugf("ignore %s while not synced", m.Type)
		return true
	}
	d.log.Errorf("received unknown state message type %s (%d bytes)", m.Type, len(m.Payload))
	return false
}

func (d *DFSM) onSyncStart(from Member, m *Message) bool {
	if from.NodeID != d.lowestNodeID {
		// Upstream logs this and processes the message anyway.
		d.log.Errorf("ignore sync request from wrong member %s", from)
	}
	d.log.Infof("received sync request (epoch %s)", m.Epoch)
	d.syncEpoch = m.Epoch
	d.releaseSyncResources(nil)
	state, err := d.app.GetState()
	if err != nil || len(state) == 0 {
		d.log.WithError(err).Error("get state failed")
		return false
	}
	return d.sendState(MsgState, state) == nil
}

func (d *DFSM) onState(from Member, m *Message) bool {
	ni := d.member(from)
	if ni == nil {
		d.log.Errorf("received state for non-member %s", from)
		return false
	}
	if ni.State != nil {
		d.log.Errorf("received duplicate state for member %s", from)
		return false
	}
	if len(m.Payload) > 0 {
		// Upstream keeps an empty state as "not received" (g_memdup2 of
		// zero bytes is NULL), so the round waits for the next confchg.
		ni.State = append([]byte(nil), m.Payload...)
	}
	for _, n := range d.si.Nodes {
		if n.State == nil {
			return true
		}
	}
	d.log.Info("received all states")
	if err := d.app.ProcessStateUpdate(d.si); err != nil {
		d.log.WithError(err).Error("process state update failed")
		return false
	}
	if d.si.LocalNode().Synced {
		d.setMode(ModeSynced)
		d.releaseSyncResources(nil)
	} else {
		d.setMode(ModeUpdate)
	}
	return d.deliverQueue()
}

// ---- verification ----

// VerifyTick is the 3600 s timer: the lowest node, when SYNCED and with its
// previous request answered, sends VERIFY_REQUEST.
func (d *DFSM) VerifyTick() error {
	if !d.IsLowestNode() || d.Mode() != ModeSynced {
		return nil
	}
	if d.csumCounter != d.csumID {
		d.log.Infof("delay verify request %016X", d.csumCounter+1)
		return nil
	}
	d.csumCounter++
	err := d.sendState(MsgVerifyRequest, EncodeVerifyRequest(d.csumCounter))
	if err != nil {
		d.log.Error("failed to send VERIFY_REQUEST message")
	}
	return err
}

func (d *DFSM) onVerifyRequest(from Member, m *Message) bool {
	id, err := DecodeVerifyRequest(m.Payload)
	if err != nil {
		d.log.WithError(err).Errorf("verify request from %s", from)
		return false
	}
	cs, ok := d.app.(Checksummer)
	if !ok {
		return true
	}
	sum, err := cs.Checksum()
	if err != nil {
		d.log.WithError(err).Error("unable to compute data checksum")
		return false
	}
	d.csum, d.csumEpoch, d.csumID = sum, m.Epoch, id
	if from == d.cfg.Self {
		return d.sendState(MsgVerify, EncodeVerify(d.csumID, d.csum)) == nil
	}
	return true
}

func (d *DFSM) onVerify(m *Message) bool {
	if _, ok := d.app.(Checksummer); !ok {
		return true
	}
	id, sum, err := DecodeVerify(m.Payload)
	if err != nil {
		d.log.WithError(err).Error("bad verify message")
		return false
	}
	if id != d.csumID || m.Epoch != d.csumEpoch {
		d.log.Info("skip verification - no checksum saved")
		return true
	}
	if sum != d.csum {
		d.log.Errorf("wrong checksum %X != %X - restarting", sum[:8], d.csum[:8])
		return false
	}
	d.log.Info("data verification successful")
	return true
}
