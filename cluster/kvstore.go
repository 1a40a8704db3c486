package cluster

import (
	"github.com/pmxcfs-go/pmxcfs/clusterlog"
	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/kvstore"
)

// StatusApp is the kvstore application with its membership recorded for ConfigWatcher.
type StatusApp struct {
	*kvstore.App
	Members *Members
}

// Confchg records the members, then lets the kvstore mark them online.
func (a StatusApp) Confchg(members []dfsm.Member) {
	ids := make([]uint32, len(members))
	for i, m := range members {
		ids[i] = m.NodeID
	}
	a.Members.Set(ids)
	a.App.Confchg(members)
}

// StatusSender sends IPC status and log changes to the other nodes through the kvstore group.
// It never waits for the network, and does nothing before the group's engine exists.
type StatusSender struct {
	App   *kvstore.App
	Group *Group
}

// Broadcast sends a kv UPDATE; like upstream, a failed send is not reported to the client.
func (s StatusSender) Broadcast(key string, value []byte) {
	if s.Group.CurrentEngine() != nil {
		s.App.BroadcastStatus(key, value)
	}
}

// SendLog sends a cluster-log entry.
func (s StatusSender) SendLog(e clusterlog.Entry) {
	if s.Group.CurrentEngine() != nil {
		s.App.BroadcastLog(e)
	}
}
