package cmap

import (
	"strconv"
	"strings"
)

// Keys pmxcfs reads and tracks (confdb.c).
const (
	KeyClusterName   = "totem.cluster_name"
	KeyConfigVersion = "totem.config_version"
	PrefixNodelist   = "nodelist.node."
)

// Node is one usable nodelist entry.
type Node struct {
	ID    uint32
	Name  string // the name key, or ring0_addr when there is no name
	Votes uint32 // quorum_votes; 0 when absent
}

// Cluster is the part of the corosync configuration pmxcfs shows.
type Cluster struct {
	Name    string
	Version uint64 // totem.config_version, 0 when unreadable
	Nodes   []Node // in cmap key order
}

// ReadCluster reads the cluster configuration with upstream's rules:
// config_version is optional (a failure is logged and reads as 0), the
// cluster name is required, and nodelist entries without a name (or
// ring0_addr) or with nodeid 0 are skipped. Failures to read a single node
// key are logged and the key is ignored, as upstream does.
func (h *Handle) ReadCluster() (*Cluster, error) {
	version, err := h.GetUint64(KeyConfigVersion)
	if err != nil {
		h.conn.Log().Errorf("cmap_get %s failed: %v", KeyConfigVersion, err)
		version = 0
	}
	name, err := h.GetString(KeyClusterName)
	if err != nil {
		return nil, err
	}
	keys, err := h.Keys(PrefixNodelist)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: name, Version: version}

	// Keys come sorted, so the sub-keys of one index are adjacent; an entry
	// is complete when the index changes.
	lastIdx := -1
	var cur Node
	haveName := false
	flush := func() {
		if haveName && cur.ID != 0 {
			c.Nodes = append(c.Nodes, cur)
		}
		cur, haveName = Node{}, false
	}
	for _, k := range keys {
		idx, sub, ok := parseNodeKey(k.Name)
		if !ok {
			continue
		}
		if idx != lastIdx {
			flush()
			lastIdx = idx
		}
		switch sub {
		case "nodeid":
			if v, err := h.GetUint32(k.Name); err != nil {
				h.conn.Log().Errorf("cmap_get %s failed: %v", k.Name, err)
			} else {
				cur.ID = v
			}
		case "quorum_votes":
			if v, err := h.GetUint32(k.Name); err != nil {
				h.conn.Log().Errorf("cmap_get %s failed: %v", k.Name, err)
			} else {
				cur.Votes = v
			}
		case "ring0_addr":
			// name wins over ring0_addr (needed when ring0_addr is an IP)
			if haveName {
				break
			}
			if v, err := h.GetString(k.Name); err != nil {
				h.conn.Log().Errorf("cmap_get %s failed: %v", k.Name, err)
			} else {
				cur.Name, haveName = v, true
			}
		case "name":
			cur.Name, haveName = "", false
			if v, err := h.GetString(k.Name); err != nil {
				h.conn.Log().Errorf("cmap_get %s failed: %v", k.Name, err)
			} else {
				cur.Name, haveName = v, true
			}
		}
	}
	flush()
	return c, nil
}

// parseNodeKey splits "nodelist.node.<idx>.<sub>" the way upstream's
// sscanf("nodelist.node.%d.%s") does: blanks before the number are skipped,
// a sign is allowed, and the sub-key is the following non-blank word.
func parseNodeKey(key string) (idx int, sub string, ok bool) {
	rest, found := strings.CutPrefix(key, PrefixNodelist)
	if !found {
		return 0, "", false
	}
	rest = strings.TrimLeft(rest, " \t\n\v\f\r")
	end := 0
	if end < len(rest) && (rest[end] == '+' || rest[end] == '-') {
		end++
	}
	digits := end
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	if end == digits {
		return 0, "", false
	}
	n, err := strconv.ParseInt(rest[:end], 10, 32)
	if err != nil {
		return 0, "", false
	}
	rest, found = strings.CutPrefix(rest[end:], ".")
	if !found {
		return 0, "", false
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return 0, "", false
	}
	return int(n), fields[0], true
}
