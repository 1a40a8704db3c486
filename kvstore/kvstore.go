// Package kvstore is the dfsm application of the pve_kvstore_v1 group: it
// spreads every node's status values (kv entries, RRD data, node IP) and
// cluster-log entries to the other nodes and merges the cluster logs when the
// membership changes (upstream's status.c: kvstore_dfsm_callbacks, cfs_kvstore_sync, and
// logger.c:clusterlog_merge).
package kvstore

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/clusterlog"
	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/status"
)

// Group identity of the KVSTORE CPG group.
const (
	GroupName       = "pve_kvstore_v1"
	ProtocolVersion = 0
)

// Config configures an App.
type Config struct {
	Status *status.Status
	Log    logrus.FieldLogger
}

// App is the KVSTORE application. Create it, build the engine with it, then
// Attach the engine before the engine starts.
type App struct {
	status *status.Status
	log    logrus.FieldLogger
	engine atomic.Pointer[dfsm.DFSM]
}

var _ dfsm.Application = (*App)(nil)

// New returns the application over cfg.Status.
func New(cfg Config) *App {
	a := &App{status: cfg.Status, log: cfg.Log}
	if a.log == nil {
		a.log = logrus.StandardLogger().WithField("domain", "kvstore")
	}
	return a
}

// Attach gives the application its engine: it is needed to send and to tell
// our own messages apart.
func (a *App) Attach(e *dfsm.DFSM) { a.engine.Store(e) }

// ---- senders ----

// send multicasts one NORMAL message without waiting for its delivery.
// Like upstream, every failure, including having no engine, is EACCES.
func (a *App) send(subtype uint16, payload []byte) error {
	e := a.engine.Load()
	if e == nil {
		return syscall.EACCES
	}
	if err := e.Send(subtype, payload); err != nil {
		a.log.WithError(err).Debugf("sending kvstore message %d failed", subtype)
		return syscall.EACCES
	}
	return nil
}

// BroadcastStatus sends a local status value (already stored with
// status.SetStatus) to the other nodes as UPDATE. An empty value deletes the
// key there.
func (a *App) BroadcastStatus(key string, value []byte) error {
	return a.send(MsgUpdate, EncodeUpdate(key, value))
}

// BroadcastLog sends a local cluster-log entry (already inserted locally) to
// the other nodes as LOG.
func (a *App) BroadcastLog(e clusterlog.Entry) error {
	b, err := e.Marshal()
	if err != nil {
		return fmt.Errorf("kvstore: %w", err)
	}
	return a.send(MsgLog, b)
}

// ---- dfsm.Application ----

// Deliver applies a status value or cluster-log entry from another node.
// Malformed payloads are logged and ignored; an unknown subtype gives
// EACCES to its sender, and the group carries on either way.
func (a *App) Deliver(from dfsm.Member, subtype uint16, _ uint32, payload []byte) (int, error) {
	if e := a.engine.Load(); e != nil && e.IsLocal(from) {
		// Applied locally before it was sent.
		return 0, nil
	}
	switch subtype {
	case MsgUpdate:
		key, value, err := DecodeUpdate(payload)
		if err != nil {
			a.log.WithError(err).Error("cant parse update message")
			return 0, nil
		}
		a.status.SetNodeStatus(from.NodeID, key, value)
	case MsgLog:
		a.log.Debug("received log")
		entry, err := clusterlog.Unmarshal(payload)
		if err != nil {
			a.log.WithError(err).Error("cant parse log message")
			return 0, nil
		}
		a.status.ClusterLog().Insert(entry)
	default:
		a.log.Errorf("received unknown message type %d", subtype)
		return -int(syscall.EACCES), nil
	}
	return 0, nil
}

// Confchg marks the nodes of the member list online.
func (a *App) Confchg(members []dfsm.Member) {
	ids := make([]uint32, len(members))
	for i, m := range members {
		ids[i] = m.NodeID
	}
	a.status.SetMembers(ids)
}

// GetState is the sorted cluster-log ring.
func (a *App) GetState() ([]byte, error) { return a.status.ClusterLog().State(), nil }

// ProcessStateUpdate merges the members' cluster logs and re-sends our local
// kv entries, which the members that just joined have not seen. Every member
// is synced: the group never enters UPDATE mode.
func (a *App) ProcessStateUpdate(si *dfsm.SyncInfo) error {
	states := make([][]byte, len(si.Nodes))
	for i := range si.Nodes {
		si.Nodes[i].Synced = true
		states[i] = si.Nodes[i].State
	}
	if err := a.status.ClusterLog().Merge(states, si.Local); err != nil {
		a.log.WithError(err).Error("unable to merge log files")
	}
	for _, kv := range a.status.LocalKV() {
		if err := a.BroadcastStatus(kv.Key, kv.Value); err != nil {
			a.log.WithError(err).Errorf("re-sending status %q failed", kv.Key)
		}
	}
	return nil
}

// ProcessUpdate refuses: KVSTORE has no leader updates.
func (a *App) ProcessUpdate(*dfsm.SyncInfo, dfsm.Member, []byte) error {
	return errors.New("received unexpected update message")
}

// Commit has nothing to apply.
func (a *App) Commit(*dfsm.SyncInfo) error { return nil }

// Cleanup has nothing to free.
func (a *App) Cleanup(*dfsm.SyncInfo) {}

// Synced announces our IP each time the group becomes synced: the value set
// through IPC, or the address resolved at start-up. It is stored locally too,
// as upstream's status set does.
func (a *App) Synced() {
	ip := a.status.SyncedNodeIP()
	if err := a.status.SetStatus("nodeip", ip); err != nil {
		a.log.WithError(err).Errorf("invalid node ip %q", ip)
	}
	if err := a.BroadcastStatus("nodeip", ip); err != nil {
		a.log.WithError(err).Error("broadcasting node ip failed")
	}
}
