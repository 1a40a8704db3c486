// Package dcdb replicates the configuration database across the cluster: it is
// the dfsm application of the pve_dcdb_v1 group, applying file-system
// operations in total order to a memdb and bringing joining nodes up to date
// from the leader's data (upstream dcdb.c; docs/protocol.md#dcdb).
package dcdb

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/internal/errno"
	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// Group identity of the DCDB CPG group.
const (
	GroupName       = "pve_dcdb_v1"
	ProtocolVersion = 1
)

// corosyncConf is the replicated cluster configuration whose changes must be
// copied to the host (dcdb.c:dcdb_sync_corosync_conf).
const corosyncConf = "corosync.conf"

// Config configures an App.
type Config struct {
	DB *memdb.DB
	// Quorate reports cluster quorum; nil means always quorate.
	Quorate func() bool
	// QuorateAtDelivery, if set, replaces Quorate for delivered messages: whether quorum is
	// known for the membership the message was delivered in (ringquorum.Gate.Quorate). It
	// runs on the dispatch goroutine and may wait briefly for corosync's notification.
	QuorateAtDelivery func() bool
	// CorosyncConfChanged is called after corosync.conf changed through a
	// delivered message (notify = the message came from this process) and
	// after every sync commit (notify = false).
	CorosyncConfChanged func(notify bool)
	// QuorumNodes, if set, returns the node ids of corosync's quorum membership; then
	// this node accepts local changes only once, since it (re)joined the group, it has
	// synced with a group holding a pmxcfs of every one of them (CaughtUp).
	QuorumNodes func() []uint32
	Log         logrus.FieldLogger
}

// App is the DCDB application. Create it, build the engine with it, then
// Attach the engine before the engine starts.
type App struct {
	db       *memdb.DB
	quorate  func() bool
	confHook func(bool)
	log      logrus.FieldLogger
	engine   *dfsm.DFSM

	// deliveryQuorate guards applying a delivered message.
	deliveryQuorate func() bool

	// The catch-up rule (CaughtUp): the group's nodes as of the last Confchg since the
	// last (re)join, and whether local changes are open (latched until the next rejoin).
	quorumNodes func() []uint32
	members     atomic.Pointer[map[uint32]bool]
	caughtUp    atomic.Bool
}

// syncData is what a sync round keeps in SyncInfo.Data.
type syncData struct {
	leaderIndex []byte
	updates     []memdb.SyncRecord
}

var (
	_ dfsm.Application = (*App)(nil)
	_ dfsm.Checksummer = (*App)(nil)
	_ dfsm.Flusher     = (*App)(nil)
	_ dfsm.Confirmer   = (*App)(nil)
	_ dfsm.Starter     = (*App)(nil)
)

// New returns the application for cfg.DB.
func New(cfg Config) *App {
	a := &App{db: cfg.DB, quorate: cfg.Quorate, confHook: cfg.CorosyncConfChanged, log: cfg.Log,
		quorumNodes: cfg.QuorumNodes}
	a.caughtUp.Store(cfg.QuorumNodes == nil)
	if a.quorate == nil {
		a.quorate = func() bool { return true }
	}
	a.deliveryQuorate = cfg.QuorateAtDelivery
	if a.deliveryQuorate == nil {
		a.deliveryQuorate = a.quorate
	}
	if a.log == nil {
		a.log = logrus.StandardLogger().WithField("domain", "dcdb")
	}
	return a
}

// Attach gives the application its engine (needed to send and to know who is
// local and lowest).
func (a *App) Attach(e *dfsm.DFSM) { a.engine = e }

func (a *App) corosyncChanged(notify bool) {
	if a.confHook != nil {
		a.confHook(notify)
	}
}

// result is upstream's result for a memdb outcome: 0 or the negative errno.
func result(err error) int { return -int(errno.From(err)) }

// notApplied is the local writer's result when a delivered message is not applied and the
// node leaves the group: upstream's dcdb.c:dcdb_deliver returns without setting the result,
// which dfsm.c:dfsm_cpg_deliver_callback initialised to -1, so dcdb.c:dcdb_send_fuse_message
// hands the FUSE caller -1, i.e. EPERM.
const notApplied = -int(syscall.EPERM)

// Deliver applies one NORMAL message (dcdb.c:dcdb_deliver, docs/protocol.md#applying-a-message).
func (a *App) Deliver(from dfsm.Member, subtype uint16, msgTime uint32, payload []byte) (int, error) {
	if subtype < MsgWrite || subtype > MsgUnlock {
		return notApplied, fmt.Errorf("received unknown message type (msg_type == %d)", subtype)
	}
	if !a.deliveryQuorate() {
		return notApplied, errors.New("received write while not quorate - trigger resync")
	}
	res, err := a.apply(from, subtype, msgTime, payload)
	if err != nil {
		return notApplied, err
	}
	if a.db.Failed() {
		if a.engine != nil {
			a.engine.SetErrorMode()
		}
		return res, errors.New("database is in error state")
	}
	return res, nil
}

func (a *App) apply(from dfsm.Member, subtype uint16, msgTime uint32, payload []byte) (int, error) {
	if subtype == MsgUnlockRequest || subtype == MsgUnlock {
		m, err := DecodeUnlock(payload)
		if err != nil {
			return 0, err
		}
		return a.unlock(from, subtype, msgTime, m), nil
	}
	m, err := DecodeFuse(payload)
	if err != nil {
		return 0, err
	}
	// Upstream hands a missing path to memdb as NULL, which refuses it.
	if !m.HasPath || (subtype == MsgRename && !m.HasTo) {
		return -int(syscall.EINVAL), nil
	}
	writer := from.NodeID
	local := a.engine != nil && a.engine.IsLocal(from)
	db := a.db.Deferred() // made durable by Flush, before any writer hears of it
	switch subtype {
	case MsgWrite:
		n, err := db.Write(m.Path, uint64(m.Offset), m.Data, m.Flags&1 != 0, writer, msgTime)
		if err != nil {
			return result(err), nil
		}
		if m.Path == corosyncConf {
			a.corosyncChanged(local)
		}
		return n, nil
	case MsgCreate:
		err := db.Create(m.Path, writer, msgTime)
		if err == nil && m.Path == corosyncConf {
			a.corosyncChanged(local)
		}
		return result(err), nil
	case MsgMkdir:
		return result(db.Mkdir(m.Path, writer, msgTime)), nil
	case MsgDelete:
		return result(db.Delete(m.Path, writer, msgTime)), nil
	case MsgRename:
		err := db.Rename(m.Path, m.To, writer, msgTime)
		if err == nil && m.To == corosyncConf {
			a.corosyncChanged(local)
		}
		return result(err), nil
	default: // MsgMtime: the new mtime travels in the offset field
		return result(db.Mtime(m.Path, writer, m.Offset)), nil
	}
}

// unlock handles UNLOCK_REQUEST and UNLOCK (docs/protocol.md#unlock-messages); the result
// is always 0 unless the delete itself fails.
func (a *App) unlock(from dfsm.Member, subtype uint16, msgTime uint32, m UnlockMessage) int {
	if !a.db.IsLockDir(m.Path) {
		return 0
	}
	cur, err := a.db.EntryChecksum(m.Path)
	if err != nil || cur != m.Csum {
		return 0
	}
	if subtype == MsgUnlock {
		return result(a.db.Deferred().Delete(m.Path, from.NodeID, msgTime))
	}
	if a.engine != nil && a.engine.IsLowestNode() && a.db.LockExpired(m.Path, m.Csum) {
		a.log.Infof("lock %s expired - sending unlock", m.Path)
		if err := a.engine.Send(MsgUnlock, m.Encode()); err != nil {
			a.log.WithError(err).Error("sending unlock message failed")
		}
	}
	return 0
}

// Flush commits the changes of the messages delivered since the last Flush in one
// SQLite transaction (the engine calls it once per dispatch).
func (a *App) Flush() error { return a.db.Commit() }

// ConfirmMessage is the engine's confirmation of local changes (dfsm.Confirmer): an
// UNLOCK_REQUEST for the root, which is no lock directory, so every node (upstream's too,
// dcdb.c:dcdb_deliver) applies it without a change.
func (a *App) ConfirmMessage() (uint16, []byte) {
	m := UnlockMessage{}
	return MsgUnlockRequest, m.Encode()
}

// Starting forgets what this node knew of the group: after a (re)join it may have missed
// changes that a node whose pmxcfs is absent from the group acknowledged, and which a
// later sync with that node would prefer over ours (highest version wins,
// dcdb.c:dcdb_select_leader). So local changes wait until CaughtUp.
func (a *App) Starting() {
	if a.quorumNodes != nil {
		a.caughtUp.Store(false)
	}
	a.members.Store(nil)
}

// Confchg records which nodes have a pmxcfs in the group.
func (a *App) Confchg(members []dfsm.Member) {
	m := make(map[uint32]bool, len(members))
	for _, mb := range members {
		m[mb.NodeID] = true
	}
	a.members.Store(&m)
	a.CaughtUp()
}

// CaughtUp reports whether local changes are accepted, and otherwise the quorate nodes
// whose pmxcfs this node has not synced with since it (re)joined. Upstream accepts
// changes as soon as it is quorate; a node that restarts while another node's pmxcfs is
// down would then acknowledge changes that the other node's return can drop, so ours
// waits for it: for a sync (mode SYNCED) in a group holding a pmxcfs of every node of
// corosync's quorum membership. Safe from any goroutine.
func (a *App) CaughtUp() (bool, []uint32) {
	if a.caughtUp.Load() {
		return true, nil
	}
	mp := a.members.Load()
	nodes := a.quorumNodes()
	if len(nodes) == 0 {
		return false, nil // no quorum notification yet: nothing is known of the others
	}
	var missing []uint32
	for _, n := range nodes {
		if mp == nil || !(*mp)[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 || a.engine == nil || a.engine.Mode() != dfsm.ModeSynced {
		return false, missing
	}
	if a.caughtUp.CompareAndSwap(false, true) {
		a.log.Info("synced with the pmxcfs of every quorate node - accepting local changes")
	}
	return true, nil
}

// GetState returns the memdb index (dcdb.c:dcdb_get_state).
func (a *App) GetState() ([]byte, error) { return a.db.Index(), nil }

// Checksum is the whole-tree checksum VERIFY compares (docs/protocol.md#verify).
func (a *App) Checksum() ([dfsm.ChecksumLen]byte, error) { return a.db.TreeChecksum(), nil }

// Synced checks the catch-up rule (for its log line; writers check it themselves).
func (a *App) Synced() { a.CaughtUp() }

// SelectLeader returns the index in states of the leader (dcdb.c:dcdb_select_leader): highest
// version, then highest root mtime, then the first.
func SelectLeader(states [][]byte) int {
	leader := 0
	for i := 1; i < len(states); i++ {
		v, lv := le.Uint64(states[i]), le.Uint64(states[leader])
		if v > lv || (v == lv && le.Uint32(states[i][20:]) > le.Uint32(states[leader][20:])) {
			leader = i
		}
	}
	return leader
}

// DifferingInodes is the union, over every member index, of the leader's
// entries that member lacks or has with another digest, sorted (the walk of
// dcdb.c:dcdb_create_and_send_updates).
func DifferingInodes(leader []memdb.IndexEntry, members [][]memdb.IndexEntry) []uint64 {
	set := map[uint64]bool{}
	for _, m := range members {
		j := 0
		for _, le := range leader {
			for j < len(m) && m[j].Inode < le.Inode {
				j++
			}
			if j < len(m) && m[j] == le {
				continue
			}
			set[le.Inode] = true
		}
	}
	out := make([]uint64, 0, len(set))
	for ino := range set {
		out = append(out, ino)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ProcessStateUpdate validates the states, picks the leader, marks the synced
// members and, on the leader, sends the updates (docs/protocol.md#leader-selection).
func (a *App) ProcessStateUpdate(si *dfsm.SyncInfo) error {
	states := make([][]byte, len(si.Nodes))
	parsed := make([][]memdb.IndexEntry, len(si.Nodes))
	for i, n := range si.Nodes {
		idx, err := memdb.ParseIndex(n.State)
		if err != nil {
			return fmt.Errorf("state of %s: %w", n.Member, err)
		}
		states[i], parsed[i] = n.State, idx
	}
	leader := SelectLeader(states)
	leaderIdx := states[leader]
	a.log.Infof("leader is %s", si.Nodes[leader].Member)
	synced := si.Nodes[leader].Member.String()
	var others [][]memdb.IndexEntry
	for i := range si.Nodes {
		switch {
		case i == leader:
			si.Nodes[i].Synced = true
		case bytes.Equal(states[i], leaderIdx):
			si.Nodes[i].Synced = true
			synced += ", " + si.Nodes[i].Member.String()
		default:
			others = append(others, parsed[i])
		}
	}
	a.log.Infof("synced members: %s", synced)
	si.Data = &syncData{leaderIndex: append([]byte(nil), leaderIdx...)}
	if si.Local != leader {
		return nil
	}
	return a.sendUpdates(parsed[leader], others)
}

func (a *App) sendUpdates(leader []memdb.IndexEntry, others [][]memdb.IndexEntry) error {
	inodes := DifferingInodes(leader, others)
	records := make([]memdb.SyncRecord, 0, len(inodes))
	for _, ino := range inodes {
		r, ok := a.db.Record(ino)
		if !ok {
			return fmt.Errorf("cannot get inode data for inode %016X", ino)
		}
		records = append(records, r)
	}
	a.log.Info("start sending inode updates")
	for i := range records {
		if err := a.engine.SendUpdate(EncodeRecord(&records[i])); err != nil {
			a.log.WithError(err).Errorf("sending update inode failed %016X", records[i].Inode)
		}
	}
	a.log.Infof("sent all (%d) updates", len(records))
	if err := a.engine.SendUpdateComplete(); err != nil {
		return fmt.Errorf("failed to send UPDATE_COMPLETE message: %w", err)
	}
	return nil
}

// ProcessUpdate collects one inode record from the leader.
func (a *App) ProcessUpdate(si *dfsm.SyncInfo, from dfsm.Member, payload []byte) error {
	sd, ok := si.Data.(*syncData)
	if !ok {
		return errors.New("update without sync round data")
	}
	r, err := DecodeRecord(payload)
	if err != nil {
		return err
	}
	sd.updates = append(sd.updates, r)
	return nil
}

// Commit applies the collected records in one transaction (dcdb.c:dcdb_commit,
// docs/protocol.md#commit).
func (a *App) Commit(si *dfsm.SyncInfo) error {
	sd, ok := si.Data.(*syncData)
	if !ok {
		return errors.New("commit without sync round data")
	}
	a.log.Infof("update complete - trying to commit (got %d inode updates)", len(sd.updates))
	if err := a.db.ApplySync(sd.leaderIndex, sd.updates); err != nil {
		return err
	}
	a.corosyncChanged(false)
	return nil
}

// Cleanup drops the round's records.
func (a *App) Cleanup(si *dfsm.SyncInfo) { si.Data = nil }

// ---- local writers ----

// send replicates one operation and waits for this node's own result
// (dcdb.c:dcdb_send_fuse_message, docs/protocol.md#synchronous-sends): EACCES
// without sending when not quorate, EBUSY when the wait was aborted or the send
// failed.
func (a *App) send(subtype uint16, m FuseMessage) (int, error) {
	if !a.quorate() {
		return 0, syscall.EACCES
	}
	res, err := a.engine.SendSync(subtype, m.Encode())
	if err != nil {
		return 0, err
	}
	if res < 0 {
		return 0, syscall.Errno(-res)
	}
	return res, nil
}

// Write replicates a write of data at off (truncate: the file is cut at off
// first, as a FUSE truncate sends it with no data) and returns the byte count.
func (a *App) Write(path string, off uint32, data []byte, truncate bool) (int, error) {
	m := FuseMessage{Path: path, HasPath: true, Offset: off, Data: data}
	if truncate {
		m.Flags = 1
	}
	return a.send(MsgWrite, m)
}

// Create replicates creating an empty file. It returns once this node applied the
// create, before the other members are known to have it: confirm waits for that, and
// the caller must call it before it reports the file written (the close of the
// descriptor that created it). A write replicated meanwhile confirms the create with
// itself, so a file created, written and closed costs one confirmation, not two.
func (a *App) Create(path string) (confirm func() error, err error) {
	if !a.quorate() {
		return nil, syscall.EACCES
	}
	m := FuseMessage{Path: path, HasPath: true}
	res, count, err := a.engine.SendSyncLater(MsgCreate, m.Encode())
	if err != nil {
		return nil, err
	}
	if res < 0 {
		return nil, syscall.Errno(-res)
	}
	return func() error { return a.engine.Confirm(count) }, nil
}

// Mkdir replicates creating a directory.
func (a *App) Mkdir(path string) error {
	_, err := a.send(MsgMkdir, FuseMessage{Path: path, HasPath: true})
	return err
}

// Delete replicates unlink and rmdir.
func (a *App) Delete(path string) error {
	_, err := a.send(MsgDelete, FuseMessage{Path: path, HasPath: true})
	return err
}

// Rename replicates a rename.
func (a *App) Rename(from, to string) error {
	_, err := a.send(MsgRename, FuseMessage{Path: from, HasPath: true, To: to, HasTo: true})
	return err
}

// Mtime replicates setting the mtime (0 on a lock directory asks for an unlock).
func (a *App) Mtime(path string, mtime uint32) error {
	_, err := a.send(MsgMtime, FuseMessage{Path: path, HasPath: true, Offset: mtime})
	return err
}

// RequestUnlock sends UNLOCK_REQUEST for the lock directory at path with its
// current checksum; only while quorate, without waiting (dcdb.c:dcdb_send_unlock).
func (a *App) RequestUnlock(path string) error {
	if !a.quorate() {
		return syscall.EACCES
	}
	csum, err := a.db.EntryChecksum(path)
	if err != nil {
		return err
	}
	m := UnlockMessage{Csum: csum, Path: path}
	return a.engine.Send(MsgUnlockRequest, m.Encode())
}
