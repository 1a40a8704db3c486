package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// rootNode is upstream's base plugin: the fixed symlinks and generated files, then the
// memdb root minus the names those shadow. It is always 0755 with mtime 0.
type rootNode struct {
	gofs.Inode
	memdbDirOps
	fixedOrder []string
	fixed      map[string]gofs.InodeEmbedder
}

func newRoot(cfg *Config) *rootNode {
	f := &fileSystem{backend: cfg.Backend, gid: cfg.WWWDataGID, cfg: cfg}
	r := &rootNode{memdbDirOps: memdbDirOps{common{f}}, fixed: map[string]gofs.InodeEmbedder{}}
	for _, sub := range []string{"", "/qemu-server", "/openvz", "/lxc"} {
		name := "local"
		if sub != "" {
			name = sub[1:]
		}
		r.add(name, &linkNode{common: common{f}, target: "nodes/" + cfg.NodeName + sub})
	}
	for _, g := range cfg.Generated {
		r.add(g.Name, &genNode{common: common{f}, gen: g})
	}
	return r
}

func (r *rootNode) add(name string, n gofs.InodeEmbedder) {
	r.fixedOrder = append(r.fixedOrder, name)
	r.fixed[name] = n
}

func (r *rootNode) isFixed(name string) bool { _, ok := r.fixed[name]; return ok }

// OnAdd links the fixed entries once; they live as long as the mount.
func (r *rootNode) OnAdd(ctx context.Context) {
	for _, name := range r.fixedOrder {
		n := r.fixed[name]
		mode := uint32(syscall.S_IFREG)
		if _, ok := n.(*linkNode); ok {
			mode = syscall.S_IFLNK
		}
		r.AddChild(name, r.NewPersistentInode(ctx, n, gofs.StableAttr{Mode: mode}), true)
	}
}

func (r *rootNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillCommon(&out.Attr, r.fsys.gid, syscall.S_IFDIR|0o755, 2)
	return 0
}

func (r *rootNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := r.setattr("", in, truncateRefused, utimeRefused); errno != 0 {
		return errno
	}
	return r.Getattr(ctx, f, out)
}

func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n, ok := r.fixed[name]; ok {
		ga := n.(gofs.NodeGetattrer)
		var attr fuse.AttrOut
		if errno := ga.Getattr(ctx, nil, &attr); errno != 0 {
			return nil, errno
		}
		out.Attr = attr.Attr
		return n.EmbeddedInode(), 0
	}
	return r.fsys.lookupMemdb(ctx, &r.Inode, "", name, out)
}

func (r *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var head []fuse.DirEntry
	for _, name := range r.fixedOrder {
		mode := uint32(syscall.S_IFREG)
		if _, ok := r.fixed[name].(*linkNode); ok {
			mode = syscall.S_IFLNK
		}
		head = append(head, fuse.DirEntry{Name: name, Mode: mode})
	}
	return r.fsys.readdirMemdb("", head, r.isFixed), 0
}

// Mutations that name a fixed entry are refused with EACCES, as upstream's dispatch
// finds no memdb sub-path for them.

func (r *rootNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if r.isFixed(name) {
		return nil, syscall.EACCES
	}
	return r.mkdir(ctx, &r.Inode, "", name, out)
}

func (r *rootNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if r.isFixed(name) {
		return nil, nil, 0, syscall.EACCES
	}
	return r.create(ctx, &r.Inode, "", name, out)
}

func (r *rootNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if r.isFixed(name) {
		return nil, syscall.EACCES
	}
	return r.mknod(ctx, &r.Inode, "", name, mode, out)
}

func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if r.isFixed(name) {
		return syscall.EACCES
	}
	if nameTooLong(name) {
		return syscall.ENAMETOOLONG
	}
	return toErrno(r.fsys.backend.Delete(name))
}

func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return r.Unlink(ctx, name)
}

func (r *rootNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if r.isFixed(name) {
		return syscall.EACCES
	}
	return r.rename("", name, newParent, newName, flags)
}
