// Package status holds the daemon's volatile state — start time, file-change counters,
// key/value status of every node, RRD values, node IPs, cluster membership and the
// cluster log — and renders it as upstream's generated files (.version, .members,
// .vmlist, .clusterlog, .rrd), which are also the IPC replies.
//
// It knows nothing of FUSE or corosync: the cmap, quorum and KVSTORE code call the
// setters, and the FUSE and IPC layers call the generators.
package status

import (
	"bytes"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/pmxcfs-go/pmxcfs/clusterlog"
	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/sirupsen/logrus"
)

// MaxStatusSize is the largest value SetStatus accepts (CFS_MAX_STATUS_SIZE).
const MaxStatusSize = 32 * 1024

// rrdExpiry drops RRD values not refreshed for this long from the dump.
const rrdExpiry = 300

// ObservedFiles are the paths whose change counters .version reports, in upstream's order
// (status.c memdb_change_array). Perl's cfs_read_file caches by these counters.
var ObservedFiles = [...]string{
	"corosync.conf", "corosync.conf.new", "storage.cfg", "user.cfg", "domains.cfg",
	"notifications.cfg", "priv/notifications.cfg", "priv/shadow.cfg",
	"priv/acme/plugins.cfg", "priv/tfa.cfg", "priv/token.cfg", "priv/wg-keys.cfg",
	"datacenter.cfg", "vzdump.cron", "vzdump.conf", "jobs.cfg", "ha/crm_commands",
	"ha/manager_status", "ha/resources.cfg", "ha/rules.cfg", "ha/groups.cfg",
	"ha/fence.cfg", "status.cfg", "replication.cfg", "ceph.conf", "sdn/vnets.cfg",
	"sdn/zones.cfg", "sdn/controllers.cfg", "sdn/subnets.cfg", "sdn/ipams.cfg",
	"sdn/mac-cache.json", "sdn/pve-ipam-state.json", "sdn/dns.cfg", "sdn/fabrics.cfg",
	"sdn/route-maps.cfg", "sdn/prefix-lists.cfg", "sdn/.running-config",
	"virtual-guest/cpu-models.conf", "virtual-guest/profiles.cfg", "firewall/cluster.fw",
	"mapping/directory.cfg", "mapping/pci.cfg", "mapping/usb.cfg",
}

// VMLister gives the current VM list; *memdb.DB implements it.
type VMLister interface{ VMList() memdb.VMList }

// Options configure New.
type Options struct {
	NodeName string // local node name (uname nodename cut at the first '.')
	NodeIP   string // the address resolved at start-up, the default "nodeip"
	PID      uint32 // our pid, for the "starting cluster log" entry
	Now      func() time.Time
	Log      *logrus.Entry
	// RRDUpdate, if set, is called (without locks held) for every accepted RRD value,
	// local or remote, with the key after "rrd/" and the raw value. Writing the RRD files
	// (rrdcached, status.c:update_rrd_data) belongs there; it is not done by this package.
	RRDUpdate func(key string, value []byte)
}

// Node is one entry of the cmap node list.
type Node struct {
	ID    uint32
	Name  string
	Votes uint32
}

// KV is one key/value status entry.
type KV struct {
	Key     string
	Value   []byte
	Version uint32
}

type clusterNode struct {
	Node
	online bool
	kv     map[string]*KV // nil until the node sent a value
}

type clusterInfo struct {
	name    string
	version uint32
	byID    map[uint32]*clusterNode
	byName  map[string]*clusterNode
}

type rrdEntry struct {
	value []byte
	time  int64
}

// Status is the daemon's volatile state. All methods are safe for concurrent use. It
// never calls memdb while holding its mutex.
type Status struct {
	mu        sync.Mutex
	now       func() time.Time
	log       *logrus.Entry
	rrdUpdate func(string, []byte)
	nodeName  string
	nodeIP    string
	startTime int64

	quorate       bool
	quorumNodes   []uint32 // corosync's quorum membership
	clinfo        *clusterInfo
	clinfoVersion uint32
	vms           VMLister
	kv            map[string]*KV
	rrd           map[string]rrdEntry
	ips           map[string]string
	changes       [len(ObservedFiles)]uint32
	rrdDump       []byte
	rrdDumpAt     int64

	clog *clusterlog.Log
}

// New records the start time and creates the cluster log with upstream's first entry
// (ident root, tag cluster, our pid, priority 6, "starting cluster log").
func New(opts Options) *Status {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	s := &Status{
		now: opts.Now, log: opts.Log, rrdUpdate: opts.RRDUpdate,
		nodeName: opts.NodeName, nodeIP: opts.NodeIP,
		kv: map[string]*KV{}, rrd: map[string]rrdEntry{}, ips: map[string]string{},
		clog: clusterlog.New(opts.Log),
	}
	s.startTime = s.now().Unix()
	if _, err := s.clog.Add(opts.NodeName, "root", "cluster", opts.PID, uint32(s.startTime), 6, "starting cluster log"); err != nil {
		s.log.Errorf("cluster log: %v", err)
	}
	return s
}

// ClusterLog is the cluster log, for the KVSTORE state exchange and LOG messages.
func (s *Status) ClusterLog() *clusterlog.Log { return s.clog }

// SetVMList tells status where the VM list lives (memdb, once it is open).
func (s *Status) SetVMList(v VMLister) {
	s.mu.Lock()
	s.vms = v
	s.mu.Unlock()
}

func (s *Status) vmList() memdb.VMList {
	s.mu.Lock()
	v := s.vms
	s.mu.Unlock()
	if v == nil {
		return memdb.VMList{}
	}
	return v.VMList()
}

// FileChanged implements memdb.Observer: bump the counter of an observed path (exact
// match, no leading slash).
func (s *Status) FileChanged(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range ObservedFiles {
		if p == path {
			s.changes[i]++
			return
		}
	}
}

// Reloaded implements memdb.Observer: every counter moves on a load or sync commit.
func (s *Status) Reloaded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.changes {
		s.changes[i]++
	}
}

// SetQuorate records the quorum state (local mode: always true).
func (s *Status) SetQuorate(q bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q != s.quorate {
		if q {
			s.log.Info("node has quorum")
		} else {
			s.log.Info("node lost quorum")
		}
	}
	s.quorate = q
}

// SetQuorumNodes records the node ids of corosync's quorum membership.
func (s *Status) SetQuorumNodes(nodes []uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quorumNodes = append([]uint32(nil), nodes...)
}

// QuorumNodes returns the node ids of corosync's quorum membership.
func (s *Status) QuorumNodes() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint32(nil), s.quorumNodes...)
}

// Quorate reports the quorum state.
func (s *Status) Quorate() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quorate
}

// SetClusterInfo installs the cmap cluster name, config version and node list
// (cfs_status_set_clinfo). Nodes keep their online flag and kv table by nodeid.
func (s *Status) SetClusterInfo(name string, configVersion uint32, nodes []Node) {
	ci := &clusterInfo{name: name, version: configVersion,
		byID: map[uint32]*clusterNode{}, byName: map[string]*clusterNode{}}
	for _, n := range nodes {
		cn := &clusterNode{Node: n}
		ci.byID[n.ID] = cn
		ci.byName[n.Name] = cn
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clinfoVersion++
	s.log.Infof("update cluster info (cluster name  %s, version = %d)", name, configVersion)
	if old := s.clinfo; old != nil {
		for id, cn := range ci.byID {
			if o := old.byID[id]; o != nil {
				cn.online, cn.kv = o.online, o.kv
			}
		}
	}
	s.clinfo = ci
}

// SetMembers marks online exactly the nodes whose ids are in the KVSTORE CPG member list
// (dfsm_confchg); it bumps the cluster-info version when cluster info exists.
func (s *Status) SetMembers(nodeids []uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clinfo == nil {
		return
	}
	for _, cn := range s.clinfo.byID {
		cn.online = false
	}
	for _, id := range nodeids {
		if cn := s.clinfo.byID[id]; cn != nil {
			cn.online = true
		}
	}
	s.clinfoVersion++
}

// SetStatus stores a local value (IPC SET_STATUS, status.c:cfs_status_set): EFBIG above
// 32768 bytes; "rrd/<id>" and "nodeip" go to their tables (ENOMEM if the value is empty,
// too long or not NUL-terminated); anything else goes to the local kv table, where an empty
// value deletes. The caller broadcasts key and value to KVSTORE afterwards in every case but
// EFBIG, as upstream does.
func (s *Status) SetStatus(key string, value []byte) error {
	if len(value) > MaxStatusSize {
		return syscall.EFBIG
	}
	s.mu.Lock()
	var ok bool
	var rrdKey string
	switch {
	case len(key) >= 4 && key[:4] == "rrd/":
		rrdKey = key[4:]
		ok = s.setRRD(rrdKey, value)
	case key == "nodeip":
		ok = s.setIP(s.nodeName, value)
	default:
		setKV(s.kv, key, value)
		ok = true
	}
	s.mu.Unlock()
	if !ok {
		return syscall.ENOMEM
	}
	if rrdKey != "" && s.rrdUpdate != nil {
		s.rrdUpdate(rrdKey, value)
	}
	return nil
}

// SetNodeStatus applies a KVSTORE UPDATE from another node (cfs_kvstore_node_set).
// Updates from nodeids not in the cmap node list are ignored, as are invalid rrd/nodeip
// values.
func (s *Status) SetNodeStatus(nodeid uint32, key string, value []byte) {
	s.mu.Lock()
	var rrdKey string
	var cn *clusterNode
	if s.clinfo != nil {
		cn = s.clinfo.byID[nodeid]
	}
	switch {
	case cn == nil:
	case len(key) >= 4 && key[:4] == "rrd/":
		if s.setRRD(key[4:], value) {
			rrdKey = key[4:]
		}
	case key == "nodeip":
		s.setIP(cn.Name, value)
	default:
		if cn.kv == nil {
			cn.kv = map[string]*KV{}
		}
		setKV(cn.kv, key, value)
	}
	s.mu.Unlock()
	if rrdKey != "" && s.rrdUpdate != nil {
		s.rrdUpdate(rrdKey, value)
	}
}

func setKV(m map[string]*KV, key string, value []byte) {
	if len(value) == 0 {
		delete(m, key)
		return
	}
	v := append([]byte(nil), value...)
	if e := m[key]; e != nil {
		e.Value = v
		e.Version++
		return
	}
	m[key] = &KV{Key: key, Value: v}
}

func nulTerminated(v []byte, limit int) bool {
	return len(v) > 0 && len(v) < limit && v[len(v)-1] == 0
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func (s *Status) setRRD(key string, value []byte) bool {
	if !nulTerminated(value, 4096) {
		return false
	}
	s.rrd[key] = rrdEntry{value: append([]byte(nil), value...), time: s.now().Unix()}
	return true
}

func (s *Status) setIP(node string, value []byte) bool {
	if !nulTerminated(value, 256) {
		return false
	}
	ip := cstr(value)
	if old, ok := s.ips[node]; !ok || old != ip {
		s.clinfoVersion++
		s.ips[node] = ip
	}
	return true
}

// GetStatus returns a stored kv value (IPC GET_STATUS): node "" or the local name reads
// the local table, another name that node's table; ENOENT if node or key is unknown.
func (s *Status) GetStatus(node, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m map[string]*KV
	if node == "" || node == s.nodeName {
		m = s.kv
	} else if s.clinfo != nil {
		if cn := s.clinfo.byName[node]; cn != nil {
			m = cn.kv
		}
	}
	if e := m[key]; e != nil {
		return append([]byte(nil), e.Value...), nil
	}
	return nil, syscall.ENOENT
}

// LocalKV lists the local kv entries (sorted by key), which KVSTORE re-broadcasts after
// every sync (cfs_kvstore_sync).
func (s *Status) LocalKV() []KV {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]KV, 0, len(s.kv))
	for _, k := range sortedKeys(s.kv) {
		e := s.kv[k]
		out = append(out, KV{Key: e.Key, Value: append([]byte(nil), e.Value...), Version: e.Version})
	}
	return out
}

// SyncedNodeIP is the "nodeip" value (with NUL) to broadcast when KVSTORE becomes synced:
// the table value if one was set, else the address resolved at start-up.
func (s *Status) SyncedNodeIP() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	ip, ok := s.ips[s.nodeName]
	if !ok {
		ip = s.nodeIP
	}
	return append([]byte(ip), 0)
}

// LogMessage adds a local cluster-log entry (IPC LOG_CLUSTER_MSG: our node, time now,
// the client's pid) and returns it for sending as KVSTORE LOG.
func (s *Status) LogMessage(ident, tag string, pid uint32, priority uint8, msg string) (clusterlog.Entry, error) {
	return s.clog.Add(s.nodeName, ident, tag, pid, uint32(s.now().Unix()), priority, msg)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var _ memdb.Observer = (*Status)(nil)
