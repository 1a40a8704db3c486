package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirNode is a memdb directory. It keeps no state: its path is resolved on every call.
type dirNode struct {
	gofs.Inode
	memdbDirOps
}

func (d *dirNode) path() (string, syscall.Errno) { return nodePath(&d.Inode) }

func (d *dirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.fsys.getattrMemdb(&d.Inode, true, &out.Attr)
}

func (d *dirNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := d.fsys.setattrMemdb(&d.common, &d.Inode, in); errno != 0 {
		return errno
	}
	return d.Getattr(ctx, f, out)
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	dir, errno := d.path()
	if errno != 0 {
		return nil, errno
	}
	return d.fsys.lookupMemdb(ctx, &d.Inode, dir, name, out)
}

func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	dir, errno := d.path()
	if errno != 0 {
		return gofs.NewListDirStream(nil), 0
	}
	return d.fsys.readdirMemdb(dir, nil, nil), 0
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	dir, errno := d.path()
	if errno != 0 {
		return nil, errno
	}
	return d.mkdir(ctx, &d.Inode, dir, name, out)
}

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	dir, errno := d.path()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return d.create(ctx, &d.Inode, dir, name, out)
}

func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	dir, errno := d.path()
	if errno != 0 {
		return nil, errno
	}
	return d.mknod(ctx, &d.Inode, dir, name, mode, out)
}

// Unlink and Rmdir are the same memdb delete, as upstream.
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if nameTooLong(name) {
		return syscall.ENAMETOOLONG
	}
	dir, errno := d.path()
	if errno != 0 {
		return errno
	}
	return toErrno(d.fsys.backend.Delete(joinPath(dir, name)))
}

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno { return d.Unlink(ctx, name) }

func (d *dirNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	dir, errno := d.path()
	if errno != 0 {
		return errno
	}
	return d.rename(dir, name, newParent, newName, flags)
}

// fileNode is a memdb file. Its path is resolved on every call, and opens use direct I/O
// so every read reaches it. Its only state is the writes buffered since the last flush
// (coalesce.go).
type fileNode struct {
	gofs.Inode
	common
	buffered
}

func (n *fileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.fsys.getattrMemdb(&n.Inode, false, &out.Attr); errno != 0 {
		return errno
	}
	if size, ok := n.bufferedSize(); ok {
		out.Size = size
		out.Blocks = (size + 511) / 512
	}
	return 0
}

// Setattr first replicates buffered writes, so a truncate or utime applies after them.
func (n *fileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	unlock, errno := n.flushLocked(n.fsys, &n.Inode, nil)
	defer unlock()
	if errno != 0 {
		return errno
	}
	if errno := n.fsys.setattrMemdb(&n.common, &n.Inode, in); errno != 0 {
		return errno
	}
	return n.Getattr(ctx, f, out)
}

// readOnly is the handle of a file opened for reading only. Its close and release leave
// the file's buffered writes alone: those belong to a writer's handle, whose own close
// replicates them and hears the outcome, and doing it from a reader's close would make
// the reader wait for a cluster round trip (or for the writer's flush in progress, which
// a resync can hold back for seconds).
type readOnly struct{}

// Open checks only that the file exists; permissions are the kernel's, quorum the
// writer's. O_TRUNC arrives before this as a separate truncate. A read-only open asks the
// kernel not to send FLUSH at close (kernels before 5.16 send it anyway; Flush ignores it).
func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	path, errno := nodePath(&n.Inode)
	if errno != 0 {
		return nil, 0, errno
	}
	if _, err := n.fsys.db().Lookup(path); err != nil {
		return nil, 0, toErrno(err)
	}
	// Only a descriptor that can write may have buffered writes for its close to
	// replicate; the others are closed without a FLUSH round trip (kernels that predate
	// FOPEN_NOFLUSH send one anyway, which the readOnly handle answers at once).
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY {
		return readOnly{}, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH, 0
	}
	return &writeHandle{}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *fileNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if data, ok := n.readBuffered(off, len(dest)); ok {
		return fuse.ReadResultData(data), 0
	}
	path, errno := nodePath(&n.Inode)
	if errno != 0 {
		return nil, errno
	}
	data, err := n.fsys.db().Read(path, off, len(dest))
	if err != nil {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(data), 0
}

func (n *fileNode) Write(ctx context.Context, f gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	h, _ := f.(*writeHandle)
	return n.write(n.fsys, &n.Inode, h, data, off)
}

func (n *fileNode) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	if _, ok := f.(readOnly); ok {
		return 0
	}
	h, _ := f.(*writeHandle)
	return n.flush(n.fsys, &n.Inode, h)
}

func (n *fileNode) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	h, _ := f.(*writeHandle)
	return n.flush(n.fsys, &n.Inode, h)
}

// Release normally finds nothing buffered (the close's flush came first); what is left
// has no caller to report to but the log.
func (n *fileNode) Release(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	if _, ok := f.(readOnly); ok {
		return 0
	}
	h, _ := f.(*writeHandle)
	if errno := n.flush(n.fsys, &n.Inode, h); errno != 0 {
		n.fsys.cfg.Log.Warnf("buffered writes dropped at release: %v", errno)
	}
	return 0
}

// getattrMemdb reports the entry at the node's current path. An entry that changed kind
// under this inode (replaced by another node) is reported missing so the kernel looks
// the name up again.
func (f *fileSystem) getattrMemdb(n *gofs.Inode, wantDir bool, out *fuse.Attr) syscall.Errno {
	path, errno := nodePath(n)
	if errno != 0 {
		return errno
	}
	e, err := f.db().Lookup(path)
	if err != nil {
		return toErrno(err)
	}
	if e.IsDir() != wantDir {
		return syscall.ENOENT
	}
	fillEntryAttr(out, path, e, f.backend.Quorate(), f.gid)
	return 0
}

func (f *fileSystem) setattrMemdb(c *common, n *gofs.Inode, in *fuse.SetAttrIn) syscall.Errno {
	path, errno := nodePath(n)
	if errno != 0 {
		return errno
	}
	return c.setattr(path, in,
		func(size uint64) syscall.Errno {
			_, err := f.backend.Write(path, size, nil, true)
			return toErrno(err)
		},
		func(mtime uint32) syscall.Errno { return toErrno(f.backend.Utime(path, mtime)) })
}
