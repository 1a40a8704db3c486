package memdb

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// vmTypeDirs maps the per-node directory to the VM type, in upstream's rebuild order.
var vmTypeDirs = []struct{ dir, typ string }{{"qemu-server", "qemu"}, {"openvz", "openvz"}, {"lxc", "lxc"}}

// vmList is the VM list state; per-VM versions come from one counter
// (status.c:vmlist_hash_insert_vm).
type vmList struct {
	version uint64
	counter uint64
	vms     map[uint32]VM
}

// validNodeName is upstream's LDH rule.
func validNodeName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		alnum := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && !(c == '-' && i != 0 && i != len(n)-1) {
			return false
		}
	}
	return true
}

// vmidOfName parses "<vmid>.conf" the way upstream's strtoul-based check does.
func vmidOfName(name string) (uint32, bool) {
	num, ok := strings.CutSuffix(name, ".conf")
	if !ok || num == "" || num[0] < '1' || num[0] > '9' {
		return 0, false
	}
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(v), true
}

// vmConfigPath reports whether path is nodes/<node>/<type dir>/<vmid>.conf
// (memdb.c:path_contain_vm_config), deciding on upstream's split_path so that odd spellings
// behave the same.
func vmConfigPath(path string) (vmid uint32, node, typ string, ok bool) {
	dir, base := splitPath(path)
	if vmid, ok = vmidOfName(base); !ok {
		return 0, "", "", false
	}
	rest, found := strings.CutPrefix(dir, "nodes/")
	if !found {
		return 0, "", "", false
	}
	node, tdir, found := strings.Cut(rest, "/")
	if !found || !validNodeName(node) {
		return 0, "", "", false
	}
	for _, t := range vmTypeDirs {
		if t.dir == tdir {
			return vmid, node, t.typ, true
		}
	}
	return 0, "", "", false
}

// differentVMExists is upstream's conflict test: the VMID is known with another
// node or type.
func (l *vmList) differentVMExists(vmid uint32, node, typ string) bool {
	vm, ok := l.vms[vmid]
	return ok && (vm.Node != node || vm.Type != typ)
}

func (l *vmList) register(vmid uint32, node, typ string) {
	l.version++
	l.counter++
	l.vms[vmid] = VM{Node: node, Type: typ, Version: l.counter}
}

// removed records that the entry at a config-shaped path went away. The list
// version moves on every such removal, as upstream's (memdb.c:memdb_delete and
// memdb_rename → status.c:vmlist_delete_vm), so a client comparing versions sees
// the same numbers from both daemons. The VMID itself is freed only when the entry
// was the registered config file: upstream also frees it for a directory or an
// unregistered duplicate of that name, which lets a second config of the VMID in.
func (l *vmList) removed(vmid uint32, node, typ string, isFile bool) {
	l.version++
	if vm, known := l.vms[vmid]; isFile && known && vm.Node == node && vm.Type == typ {
		delete(l.vms, vmid)
	}
}

func (l *vmList) snapshot() VMList {
	s := VMList{Version: l.version, VMs: make(map[uint32]VM, len(l.vms))}
	for k, v := range l.vms {
		s.VMs[k] = v
	}
	return s
}

// buildVMList is memdb_recreate_vmlist: it walks nodes/*/{qemu-server,openvz,lxc}
// and fails on a duplicate VMID. prev carries the counters over a reload; the list
// version is bumped only when a nodes directory exists, as upstream does.
func buildVMList(t *tree, prev *vmList) (*vmList, error) {
	l := &vmList{vms: map[uint32]VM{}}
	if prev != nil {
		l.version, l.counter = prev.version, prev.counter
	}
	nodes := t.root.children["nodes"]
	if nodes == nil || nodes.typ != TypeDir {
		if prev != nil {
			l.vms = prev.vms
		}
		return l, nil
	}
	l.version++
	var dup error
	for _, nodeName := range sortedNames(nodes) {
		n := nodes.children[nodeName]
		if n.typ != TypeDir || !validNodeName(n.name) {
			continue
		}
		for _, td := range vmTypeDirs {
			d := n.children[td.dir]
			if d == nil || d.typ != TypeDir {
				continue
			}
			for _, name := range sortedNames(d) {
				f := d.children[name]
				vmid, ok := vmidOfName(name)
				if f.typ != TypeReg || !ok {
					continue
				}
				if _, seen := l.vms[vmid]; seen {
					if dup == nil {
						dup = fmt.Errorf("detected duplicate VMID %d", vmid)
					}
					continue
				}
				l.counter++
				l.vms[vmid] = VM{Node: n.name, Type: td.typ, Version: l.counter}
			}
		}
	}
	return l, dup
}

func sortedNames(d *entry) []string {
	names := make([]string, 0, len(d.children))
	for n := range d.children {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
