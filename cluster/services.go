// Package cluster runs the daemon's corosync services (quorum and configuration watchers, and
// the two DFSM groups pve_dcdb_v1 and pve_kvstore_v1), restarting each one after a failure the
// way upstream's service loop does, so a corosync that is down or restarted is survived
// without intervention.
package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/cmap"
	"github.com/pmxcfs-go/pmxcfs/ringquorum"
	"github.com/pmxcfs-go/pmxcfs/status"
	"github.com/pmxcfs-go/pmxcfs/votequorum"
)

// RetryInterval is how long a failed service waits before it connects again; upstream's
// loop retries when more than 5 s have passed, checked every second.
const RetryInterval = 6 * time.Second

// retryInterval is RetryInterval, shortened by tests.
var retryInterval = RetryInterval

// Service connects to corosync and serves until the connection fails or ctx ends.
type Service interface {
	Name() string
	Run(ctx context.Context) error
}

// Supervise runs svc until ctx ends, reconnecting after every failure. The specific error is
// logged on every attempt, "can't initialize service" once per failure streak, as upstream.
func Supervise(ctx context.Context, log *logrus.Entry, svc Service) {
	failing := false
	for ctx.Err() == nil {
		err := svc.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Errorf("%s: %v", svc.Name(), err)
			if !failing {
				log.Errorf("can't initialize service")
				failing = true
			}
		} else {
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryInterval):
		}
	}
}

// QuorumWatcher follows libquorum's quorate flag into the status tables and, per totem
// ring, into Gate.
type QuorumWatcher struct {
	Status *status.Status
	Log    *logrus.Entry
	Gate   *ringquorum.Gate // optional
	// Lag delays every notification (fault injection for tests: a quorum goroutine that
	// runs late).
	Lag time.Duration
}

// Members remembers the latest kvstore group membership ("online" in .members), so that a
// node list read from cmap after the membership change still gets its online flags.
type Members struct {
	mu    sync.Mutex
	nodes []uint32
}

// Set records the node ids of the current members.
func (m *Members) Set(nodes []uint32) {
	m.mu.Lock()
	m.nodes = append([]uint32(nil), nodes...)
	m.mu.Unlock()
}

func (m *Members) get() []uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]uint32(nil), m.nodes...)
}

func (w *QuorumWatcher) Name() string { return "quorum" }

func (w *QuorumWatcher) Run(ctx context.Context) error {
	q, err := votequorum.OpenQuorum(func(n votequorum.Notification) {
		if w.Lag > 0 {
			time.Sleep(w.Lag)
		}
		w.Status.SetQuorumNodes(n.Nodes)
		w.Status.SetQuorate(n.Quorate)
		if w.Gate != nil {
			w.Gate.Notify(n.RingSeq, n.Quorate)
		}
	})
	if err != nil {
		return err
	}
	defer func() {
		q.Close()
		w.Status.SetQuorate(false) // a lost connection means unknown, which counts as no quorum
		w.Status.SetQuorumNodes(nil)
		if w.Gate != nil {
			w.Gate.Disconnected()
		}
	}()
	q.SetLogger(w.Log)
	if err := q.TrackStart(); err != nil {
		return err
	}
	return q.Run(ctx)
}

// ConfigWatcher keeps the cluster name, config version and node list from cmap current in
// the status tables (.members), re-reading them after every change of the node list or of
// totem.config_version (for example after `corosync-cfgtool -R`).
type ConfigWatcher struct {
	Status  *status.Status
	Log     *logrus.Entry
	Members *Members
}

func (w *ConfigWatcher) Name() string { return "confdb" }

func (w *ConfigWatcher) Run(ctx context.Context) error {
	h, err := cmap.Initialize()
	if err != nil {
		return err
	}
	defer h.Close()
	h.SetLogger(w.Log)
	reread := func(cmap.Change) { w.update(h) }
	if _, err := h.Track("nodelist.node.", cmap.TrackAll|cmap.TrackPrefix, reread); err != nil {
		return err
	}
	if _, err := h.Track(cmap.KeyConfigVersion, cmap.TrackAll, reread); err != nil {
		return err
	}
	w.update(h)
	return h.Run(ctx)
}

func (w *ConfigWatcher) update(h *cmap.Handle) {
	c, err := h.ReadCluster()
	if err != nil {
		w.Log.Errorf("unable to read the cluster configuration: %v", err)
		return
	}
	nodes := make([]status.Node, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		nodes = append(nodes, status.Node{ID: n.ID, Name: n.Name, Votes: n.Votes})
	}
	w.Status.SetClusterInfo(c.Name, uint32(c.Version), nodes) // logs "update cluster info"
	w.Status.SetMembers(w.Members.get())
}
