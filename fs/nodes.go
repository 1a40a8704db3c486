package fs

import (
	"context"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// fileSystem is the state every node shares.
type fileSystem struct {
	backend Backend
	gid     uint32
	cfg     *Config
}

func (f *fileSystem) db() *memdb.DB { return f.backend.DB() }

// common holds what all node kinds answer the same way: statfs from memdb and no xattrs.
type common struct{ fsys *fileSystem }

func (c *common) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	s := c.fsys.db().Statfs()
	out.Bsize = uint32(s.Bsize)
	out.Blocks = s.Blocks
	out.Bfree = s.Bfree
	out.Bavail = s.Bavail
	out.Files = s.Files
	out.Ffree = s.Ffree
	out.NameLen = uint32(s.Namemax)
	out.Frsize = 0 // upstream leaves f_frsize unset; df falls back to f_bsize
	return 0
}

// Upstream has no xattr operations, so libfuse answers ENOSYS and the kernel stops asking:
// callers get EOPNOTSUPP. Answering ENOSYS too keeps that, and spares the
// security.capability lookup the kernel otherwise makes on every write.
func (c *common) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}
func (c *common) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOSYS
}
func (c *common) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.ENOSYS
}
func (c *common) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// Flush is answered (not ENOSYS) for every kind of node, because ENOSYS would switch it
// off for the whole mount, and a memdb file's buffered writes are replicated at flush
// (fileNode.Flush). Nodes without buffered writes have nothing to do.
func (c *common) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno { return 0 }

// Nodes without buffered writes have nothing to make durable.
func (c *common) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	return 0
}
func (c *common) Release(ctx context.Context, f gofs.FileHandle) syscall.Errno { return 0 }

// setattr applies libfuse2's setattr sequence (chmod, chown, truncate, utimens, stopping
// at the first error) with upstream's rules. truncate and utime are the node kind's own.
func (c *common) setattr(path string, in *fuse.SetAttrIn, truncate func(size uint64) syscall.Errno, utime func(mtime uint32) syscall.Errno) syscall.Errno {
	if in.Valid&fuse.FATTR_MODE != 0 && !chmodAllowed(path, in.Mode) {
		return syscall.EPERM
	}
	if in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0 && !chownAllowed(in, c.fsys.gid) {
		return syscall.EPERM
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		if errno := truncate(in.Size); errno != 0 {
			return errno
		}
	}
	// libfuse2 calls utimens only when both times are set, so "touch -m" and "touch -a"
	// are silently ignored (docs/upstream-behaviour.md#times). Only the mtime is used.
	if in.Valid&fuse.FATTR_ATIME != 0 && in.Valid&fuse.FATTR_MTIME != 0 {
		mtime := uint32(in.Mtime)
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			mtime = uint32(time.Now().Unix())
		}
		return utime(mtime)
	}
	return 0
}

func truncateRefused(uint64) syscall.Errno { return syscall.EACCES }
func utimeRefused(uint32) syscall.Errno    { return syscall.EACCES }

// nodePath is the memdb path of a node, resolved now from the kernel-visible tree so
// that renames are followed. An inode no longer linked into the tree gives ENOENT.
func nodePath(n *gofs.Inode) (string, syscall.Errno) {
	var parts []string
	for !n.IsRoot() {
		name, parent := n.Parent()
		if parent == nil {
			return "", syscall.ENOENT
		}
		parts = append(parts, name)
		n = parent
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/"), 0
}

// maxNameLen is the longest name upstream's mount accepts: the kernel's FUSE limit for
// a server that does not negotiate max_pages (libfuse2, which upstream links) is 1024
// bytes, and the kernel answers ENAMETOOLONG before the server sees the request. go-fuse
// negotiates max_pages, which lets recent kernels pass names up to PATH_MAX-1, so the
// same boundary is drawn here. A longer name would replicate to C nodes that can
// neither look it up nor remove it.
const maxNameLen = 1024

func nameTooLong(name string) bool { return len(name) > maxNameLen }

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// lookupMemdb finds name under the memdb directory dir and returns its inode, reusing
// the existing child when it is still of the same kind so that inode numbers stay stable.
func (f *fileSystem) lookupMemdb(ctx context.Context, parent *gofs.Inode, dir, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if nameTooLong(name) {
		return nil, syscall.ENAMETOOLONG
	}
	path := joinPath(dir, name)
	e, err := f.db().Lookup(path)
	if err != nil {
		return nil, toErrno(err)
	}
	fillEntryAttr(&out.Attr, path, e, f.backend.Quorate(), f.gid)
	mode := uint32(syscall.S_IFREG)
	if e.IsDir() {
		mode = syscall.S_IFDIR
	}
	if ch := parent.GetChild(name); ch != nil && ch.Mode() == mode {
		return ch, 0
	}
	var node gofs.InodeEmbedder = &fileNode{common: common{f}}
	if e.IsDir() {
		node = &dirNode{memdbDirOps: memdbDirOps{common{f}}}
	}
	return parent.NewInode(ctx, node, gofs.StableAttr{Mode: mode}), 0
}

// readdirMemdb lists a memdb directory like upstream: ".", "..", then the entries; a
// missing directory lists as empty. hide drops names the root's own entries shadow.
func (f *fileSystem) readdirMemdb(path string, head []fuse.DirEntry, hide func(string) bool) gofs.DirStream {
	list := append([]fuse.DirEntry{{Name: ".", Mode: syscall.S_IFDIR}, {Name: "..", Mode: syscall.S_IFDIR}}, head...)
	entries, err := f.db().ReadDir(path)
	if err == nil {
		for _, e := range entries {
			if hide != nil && hide(e.Name) {
				continue
			}
			mode := uint32(syscall.S_IFREG)
			if e.IsDir() {
				mode = syscall.S_IFDIR
			}
			list = append(list, fuse.DirEntry{Name: e.Name, Mode: mode})
		}
	}
	return gofs.NewListDirStream(list)
}

// memdbParentPath is the memdb directory a rename target lives in, or EACCES when the
// target is not in memdb (upstream: both paths must resolve to the memdb plugin).
func memdbParentPath(p gofs.InodeEmbedder, name string) (string, syscall.Errno) {
	switch d := p.(type) {
	case *rootNode:
		if d.isFixed(name) {
			return "", syscall.EACCES
		}
		return name, 0
	case *dirNode:
		dir, errno := nodePath(d.EmbeddedInode())
		if errno != 0 {
			return "", errno
		}
		return joinPath(dir, name), 0
	}
	return "", syscall.EACCES
}

// memdbDirOps are the directory operations shared by the root (for names it does not
// own) and memdb directories.
type memdbDirOps struct{ common }

func (d *memdbDirOps) mkdir(ctx context.Context, parent *gofs.Inode, dir, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if nameTooLong(name) {
		return nil, syscall.ENAMETOOLONG
	}
	if errno := toErrno(d.fsys.backend.Mkdir(joinPath(dir, name))); errno != 0 {
		return nil, errno
	}
	return d.fsys.lookupMemdb(ctx, parent, dir, name, out)
}

func (d *memdbDirOps) create(ctx context.Context, parent *gofs.Inode, dir, name string, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if nameTooLong(name) {
		return nil, nil, 0, syscall.ENAMETOOLONG
	}
	confirm, err := d.fsys.backend.Create(joinPath(dir, name))
	if errno := toErrno(err); errno != 0 {
		return nil, nil, 0, errno
	}
	ch, errno := d.fsys.lookupMemdb(ctx, parent, dir, name, out)
	// Like libfuse2 for upstream, a file opened by create is not direct I/O (only open sets
	// it), which decides where the kernel splits writes that cross the 1 MiB limit.
	return ch, &writeHandle{confirm: confirm}, 0, errno
}

// mknod of a regular file creates it, as libfuse2 does without a mknod handler; every
// other kind is unsupported.
func (d *memdbDirOps) mknod(ctx context.Context, parent *gofs.Inode, dir, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if mode&syscall.S_IFMT != syscall.S_IFREG && mode&syscall.S_IFMT != 0 {
		return nil, syscall.ENOSYS
	}
	ch, h, _, errno := d.create(ctx, parent, dir, name, out)
	if errno != 0 {
		return nil, errno
	}
	// No descriptor will report the outcome later: mknod does.
	if errno := h.(*writeHandle).takeConfirm(); errno != 0 {
		return nil, errno
	}
	return ch, 0
}

func (d *memdbDirOps) rename(dir, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.EINVAL // libfuse2 has no rename2
	}
	if nameTooLong(name) || nameTooLong(newName) {
		return syscall.ENAMETOOLONG
	}
	to, errno := memdbParentPath(newParent, newName)
	if errno != 0 {
		return errno
	}
	return toErrno(d.fsys.backend.Rename(joinPath(dir, name), to))
}

func (d *memdbDirOps) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.ENOSYS
}

func (d *memdbDirOps) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
