package status

import (
	"sort"
	"strconv"
)

// Generators of the status files, byte for byte as upstream prints them. Where upstream
// walks a hash table we print in a fixed order (node ids, VMIDs and keys ascending);
// clients parse the JSON, so only the order differs. Names are JSON-escaped, which
// changes nothing for the names PVE allows.

// Version renders .version (IPC GET_FS_VERSION).
func (s *Status) Version() []byte {
	vmVersion := s.vmList().Version // before taking our lock: memdb has its own
	s.mu.Lock()
	defer s.mu.Unlock()
	b := []byte("{\n\"starttime\": ")
	b = strconv.AppendInt(b, s.startTime, 10)
	b = append(b, ",\n\"clinfo\": "...)
	b = strconv.AppendUint(b, uint64(s.clinfoVersion), 10)
	b = append(b, ",\n\"vmlist\": "...)
	b = strconv.AppendUint(b, uint64(uint32(vmVersion)), 10)
	b = append(b, ",\n"...)
	for i, p := range ObservedFiles {
		b = appendQuoted(b, p)
		b = append(b, ": "...)
		b = strconv.AppendUint(b, uint64(s.changes[i]), 10)
		b = append(b, ",\n"...)
	}
	b = append(b, "\"kvstore\": {\n"...)
	b = appendKVVersions(b, s.nodeName, s.kv)
	if s.clinfo != nil {
		for _, cn := range s.clinfo.sortedNodes() {
			if cn.kv != nil {
				b = append(b, ",\n"...)
				b = appendKVVersions(b, cn.Name, cn.kv)
			}
		}
	}
	return append(b, "}\n}\n"...)
}

func appendKVVersions(b []byte, node string, kv map[string]*KV) []byte {
	b = appendQuoted(b, node)
	b = append(b, ": {\n"...)
	for i, k := range sortedKeys(kv) {
		if i > 0 {
			b = append(b, ",\n"...)
		}
		b = appendQuoted(b, k)
		b = append(b, ": "...)
		b = strconv.AppendUint(b, uint64(kv[k].Version), 10)
	}
	return append(b, "}\n"...)
}

// Members renders .members (IPC GET_CLUSTER_INFO): the short form without cluster info
// (local mode), else cluster name, config version, quorum and the node list.
func (s *Status) Members() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := []byte("{\n\"nodename\": ")
	b = appendQuoted(b, s.nodeName)
	b = append(b, ",\n\"version\": "...)
	b = strconv.AppendUint(b, uint64(s.clinfoVersion), 10)
	if s.clinfo == nil || len(s.clinfo.byID) == 0 {
		return append(b, "\n}\n"...)
	}
	ci := s.clinfo
	b = append(b, ",\n\"cluster\": { \"name\": "...)
	b = appendQuoted(b, ci.name)
	b = append(b, ", \"version\": "...)
	b = strconv.AppendInt(b, int64(int32(ci.version)), 10) // upstream prints it with %d
	b = append(b, ", \"nodes\": "...)
	b = strconv.AppendInt(b, int64(len(ci.byID)), 10)
	b = append(b, ", \"quorate\": "...)
	b = appendBool(b, s.quorate)
	b = append(b, " },\n\"nodelist\": {\n"...)
	for i, cn := range ci.sortedNodes() {
		if i > 0 {
			b = append(b, ",\n"...)
		}
		b = append(b, "  "...)
		b = appendQuoted(b, cn.Name)
		b = append(b, ": { \"id\": "...)
		b = strconv.AppendInt(b, int64(int32(cn.ID)), 10)
		b = append(b, ", \"online\": "...)
		b = appendBool(b, cn.online)
		if ip, ok := s.ips[cn.Name]; ok {
			b = append(b, ", \"ip\": "...)
			b = appendQuoted(b, ip)
		}
		b = append(b, '}')
	}
	return append(b, "\n  }\n}\n"...)
}

// VMList renders .vmlist (IPC GET_GUEST_LIST) from the VM list snapshot.
func (s *Status) VMList() []byte {
	l := s.vmList()
	b := []byte("{\n\"version\": ")
	b = strconv.AppendUint(b, uint64(uint32(l.Version)), 10)
	if len(l.VMs) == 0 {
		return append(b, "\n\n}\n"...)
	}
	b = append(b, ",\n\"ids\": {\n"...)
	ids := make([]uint32, 0, len(l.VMs))
	for id := range l.VMs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i, id := range ids {
		vm := l.VMs[id]
		if i > 0 {
			b = append(b, ",\n"...)
		}
		b = append(b, '"')
		b = strconv.AppendUint(b, uint64(id), 10)
		b = append(b, "\": { \"node\": "...)
		b = appendQuoted(b, vm.Node)
		b = append(b, ", \"type\": "...)
		b = appendQuoted(b, vm.Type)
		b = append(b, ", \"version\": "...)
		b = strconv.AppendUint(b, uint64(uint32(vm.Version)), 10)
		b = append(b, " }"...)
	}
	return append(b, "}\n\n}\n"...)
}

// ClusterLogJSON renders .clusterlog: the newest 50 entries.
func (s *Status) ClusterLogJSON() []byte { return s.clog.DumpJSON("", 50) }

// ClusterLogDump serves IPC GET_CLUSTER_LOG: max 0 means 50; a non-empty user filters
// by ident.
func (s *Status) ClusterLogDump(user string, max uint32) []byte {
	if max == 0 {
		max = 50
	}
	return s.clog.DumpJSON(user, max)
}

// RRDDump renders the RRD table (IPC GET_RRD_DUMP) as "<key>:<value>\n" lines followed
// by a NUL byte; the .rrd file is the same without the NUL. Values older than 300 s are
// dropped first, and a dump younger than 2 s is reused as is.
func (s *Status) RRDDump() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	if s.rrdDump != nil && now-s.rrdDumpAt < 2 {
		return append([]byte(nil), s.rrdDump...)
	}
	var b []byte
	for _, k := range sortedKeys(s.rrd) {
		e := s.rrd[k]
		if int32(uint32(now)-uint32(e.time)) > rrdExpiry {
			delete(s.rrd, k)
			continue
		}
		b = append(b, k...)
		b = append(b, ':')
		b = append(b, cstr(e.value)...)
		b = append(b, '\n')
	}
	b = append(b, 0)
	s.rrdDump, s.rrdDumpAt = b, now
	return append([]byte(nil), b...)
}

func (ci *clusterInfo) sortedNodes() []*clusterNode {
	nodes := make([]*clusterNode, 0, len(ci.byID))
	for _, cn := range ci.byID {
		nodes = append(nodes, cn)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	return nodes
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, '1')
	}
	return append(b, '0')
}

// appendQuoted writes s as a JSON string; for ordinary names that is just the quotes.
func appendQuoted(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
