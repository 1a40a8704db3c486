package fs

import (
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pmxcfs-go/pmxcfs/internal/errno"
	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// isPrivate is upstream's string rule for private paths (cfs-utils.c:path_is_private):
// "priv", "priv/...", "nodes/<x>/priv" and "nodes/<x>/priv/...". FUSE paths here are
// always canonical.
func isPrivate(path string) bool {
	path = strings.TrimLeft(path, "/")
	if path == "priv" || strings.HasPrefix(path, "priv/") {
		return true
	}
	rest, ok := strings.CutPrefix(path, "nodes/")
	if !ok {
		return false
	}
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return false
	}
	rest = rest[slash:]
	return rest == "/priv" || strings.HasPrefix(rest, "/priv/")
}

// isHookScript is upstream's legacy OpenVZ hook-script rule
// (cfs-plug-memdb.c:name_is_openvz_script): such files get u+x.
// The prefix is "vps" or a number not starting with 0.
func isHookScript(name string) bool {
	prefix, suffix, ok := strings.Cut(name, ".")
	if !ok {
		return false
	}
	if prefix != "vps" {
		if prefix == "" || prefix[0] < '1' || prefix[0] > '9' {
			return false
		}
		if strings.Trim(prefix, "0123456789") != "" {
			return false
		}
	}
	switch suffix {
	case "mount", "umount", "start", "stop", "premount", "postumount":
		return true
	}
	return false
}

// maskMode applies upstream's getattr masking: private paths keep only the owner bits,
// directories and symlinks lose group/other write, other files lose all "other" bits.
func maskMode(path string, mode uint32) uint32 {
	switch {
	case isPrivate(path):
		return mode &^ 0o077
	case mode&syscall.S_IFMT == syscall.S_IFDIR || mode&syscall.S_IFMT == syscall.S_IFLNK:
		return mode &^ 0o022
	default:
		return mode &^ 0o027
	}
}

// fillCommon sets the fields every node shares: owner root:www-data and link count.
func fillCommon(out *fuse.Attr, gid uint32, mode uint32, nlink uint32) {
	out.Mode = mode
	out.Nlink = nlink
	out.Uid = 0
	out.Gid = gid
	// A non-zero block size keeps go-fuse from rewriting st_blocks; 4096 is what the
	// kernel shows for upstream, whose st_blksize is 0.
	out.Blksize = memdb.BlockSize
}

// fillEntryAttr reports a memdb entry the way upstream's tree_entry_stat does.
func fillEntryAttr(out *fuse.Attr, path string, e memdb.Entry, quorate bool, gid uint32) {
	var mode, nlink uint32
	if e.IsDir() {
		mode, nlink = syscall.S_IFDIR|0o777, 2
		if !quorate {
			mode = syscall.S_IFDIR | 0o555
		}
	} else {
		mode, nlink = syscall.S_IFREG|0o666, 1
		if !quorate {
			mode = syscall.S_IFREG | 0o444
		}
		if isHookScript(e.Name) {
			mode |= syscall.S_IXUSR
		}
	}
	fillCommon(out, gid, maskMode(path, mode), nlink)
	out.Size = uint64(e.Size)
	out.Blocks = (out.Size + memdb.BlockSize - 1) / memdb.BlockSize
	out.Atime, out.Mtime, out.Ctime = uint64(e.Mtime), uint64(e.Mtime), uint64(e.Mtime)
	out.Atimensec, out.Mtimensec, out.Ctimensec = 0, 0, 0
}

// chmodAllowed is upstream's chmod rule: nothing changes, but only the canonical mode
// (0600 private, 0640 otherwise) is accepted.
func chmodAllowed(path string, mode uint32) bool {
	want := uint32(0o640)
	if isPrivate(path) {
		want = 0o600
	}
	return mode&0o7777 == want
}

// chownAllowed is upstream's chown rule: only root:www-data (or "unchanged").
func chownAllowed(in *fuse.SetAttrIn, gid uint32) bool {
	if in.Valid&fuse.FATTR_UID != 0 && in.Uid != 0 {
		return false
	}
	if in.Valid&fuse.FATTR_GID != 0 && in.Gid != gid {
		return false
	}
	return true
}

// toErrno turns a backend error into the errno FUSE reports (the daemon's one rule).
var toErrno = errno.From
