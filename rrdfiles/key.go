package rrdfiles

import (
	"bytes"
	"errors"
	"strings"
)

// target is where and what one RRD value is written.
type target struct {
	typeDir string   // e.g. "pve-node-9.0", relative to the base directory
	file    string   // e.g. "pve-node-9.0/node1", relative to the base directory
	sources []string // DS list used when the file must be created
	value   string   // the update string: "timestamp:v1:v2:..."
}

var errWrongKey = errors.New("unknown/wrong key")

// kind describes one family of keys: the prefixes naming its old and current
// formats and how its value columns map onto the 9.0 file.
type kind struct {
	oldPrefix  string // pve2 era key prefix, e.g. "pve2-node/"
	newPrefix  string // any version of the new scheme, e.g. "pve-node-"
	typeDir    string // the only directory written, e.g. "pve-node-9.0"
	skip       int    // leading live-only fields (uptime, status, ...) not archived
	oldColumns int    // columns of the old format, padded with U up to the 9.0 count; 0 = same
	sources    []string
	idParts    int // "/"-separated parts of the id: 1 (node, vmid) or 2 (node/storage)
}

var kinds = []kind{
	{"pve2-node/", "pve-node-", "pve-node-9.0", 2, nodeColumnsPVE2, nodeSources, 1},
	{"pve2.3-vm/", "pve-vm-", "pve-vm-9.0", 4, vmColumnsPVE2, vmSources, 1},
	{"pve2-storage/", "pve-storage-", "pve-storage-9.0", 0, 0, storageSources, 2},
}

// parse maps a status key (after "rrd/") and its raw NUL-terminated value to
// the 9.0 file and the update string, fixing the column count for older and
// newer formats.
func parse(key string, raw []byte) (target, error) {
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		raw = raw[:i]
	}
	for _, k := range kinds {
		isOld := strings.HasPrefix(key, k.oldPrefix)
		if !isOld && !strings.HasPrefix(key, k.newPrefix) {
			continue
		}
		_, id, ok := strings.Cut(key, "/")
		if !ok || !validID(id, k.idParts) {
			return target{}, errWrongKey
		}
		value := skipFields(string(raw), k.skip)
		columns := len(k.sources)
		switch {
		case isOld && k.oldColumns > 0:
			value += strings.Repeat(":U", columns-k.oldColumns)
		case !isOld && !strings.HasPrefix(key, k.typeDir+"/"):
			// A newer format than we know: newer versions only append columns,
			// so keep the timestamp and the columns we have DSs for.
			value = keepFields(value, columns+1)
		}
		return target{
			typeDir: k.typeDir,
			file:    k.typeDir + "/" + id,
			sources: k.sources,
			value:   value,
		}, nil
	}
	return target{}, errWrongKey
}

// validID accepts ids of exactly parts non-empty "/"-separated names. "." and
// ".." are refused too so a peer cannot aim a write outside the type directory.
func validID(id string, parts int) bool {
	names := strings.Split(id, "/")
	if len(names) != parts {
		return false
	}
	for _, n := range names {
		if n == "" || n == "." || n == ".." {
			return false
		}
	}
	return true
}

// skipFields drops the first n ":"-separated fields; too few fields leave "".
func skipFields(s string, n int) string {
	for ; n > 0; n-- {
		_, rest, ok := strings.Cut(s, ":")
		if !ok {
			return ""
		}
		s = rest
	}
	return s
}

// keepFields cuts s after its first n ":"-separated fields.
func keepFields(s string, n int) string {
	if n <= 0 {
		return ""
	}
	i := 0
	for ; n > 0; n-- {
		j := strings.IndexByte(s[i:], ':')
		if j < 0 {
			return s
		}
		i += j + 1
	}
	return s[:i-1]
}
