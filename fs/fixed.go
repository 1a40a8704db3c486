package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// linkNode is one of the root's relative symlinks into nodes/<local node>. Its mode is
// the quorum indicator clients test (0755 quorate, 0555 not); mtime is 0.
type linkNode struct {
	gofs.Inode
	common
	target string
}

func (l *linkNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	mode := uint32(syscall.S_IFLNK | 0o777)
	if !l.fsys.backend.Quorate() {
		mode = syscall.S_IFLNK | 0o555
	}
	fillCommon(&out.Attr, l.fsys.gid, maskMode("local", mode), 1)
	out.Size = uint64(len(l.target))
	return 0
}

func (l *linkNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := l.setattr("local", in, truncateRefused, utimeRefused); errno != 0 {
		return errno
	}
	return l.Getattr(ctx, f, out)
}

func (l *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(l.target), 0
}

func (l *linkNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.EACCES
}

// genNode is a generated file (.version, .members, ...). Unlike upstream, each open
// takes one snapshot of the content and serves that handle's reads from it, so readers
// never see stale or torn content; getattr reports the current size.
type genNode struct {
	gofs.Inode
	common
	gen GeneratedFile
}

type genHandle struct{ data []byte }

func (g *genNode) mode() uint32 {
	if g.gen.Write != nil {
		return syscall.S_IFREG | 0o640
	}
	return syscall.S_IFREG | 0o440
}

func (g *genNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillCommon(&out.Attr, g.fsys.gid, g.mode(), 1)
	if h, ok := f.(*genHandle); ok {
		out.Size = uint64(len(h.data))
	} else {
		out.Size = uint64(len(g.gen.Read()))
	}
	return 0
}

func (g *genNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	truncate := truncateRefusedEIO
	if g.gen.Write != nil {
		truncate = func(uint64) syscall.Errno { return 0 }
	}
	if errno := g.setattr(g.gen.Name, in, truncate, utimeRefused); errno != 0 {
		return errno
	}
	return g.Getattr(ctx, nil, out)
}

func truncateRefusedEIO(uint64) syscall.Errno { return syscall.EIO }

func (g *genNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// Writes to a generated file take effect at once: its close needs no FLUSH.
	return &genHandle{data: g.gen.Read()}, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH, 0
}

func (g *genNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*genHandle)
	if !ok {
		h = &genHandle{data: g.gen.Read()}
	}
	if off < 0 || off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}

// Write accepts only whole writes at offset 0 to a writable file (upstream: else EIO).
func (g *genNode) Write(ctx context.Context, f gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off != 0 || g.gen.Write == nil {
		return 0, syscall.EIO
	}
	n, err := g.gen.Write(data)
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(n), 0
}

// DebugFile is the generated .debug file: it reads "0\n" or "1\n", and a write must start
// with exactly "0\n" or "1\n" (else EIO) and reports 2 bytes written whatever its
// length, as upstream. set is called with the new setting (and should log it).
func DebugFile(get func() bool, set func(on bool)) GeneratedFile {
	return GeneratedFile{
		Name: ".debug",
		Read: func() []byte {
			if get() {
				return []byte("1\n")
			}
			return []byte("0\n")
		},
		Write: func(data []byte) (int, error) {
			if len(data) < 2 {
				return 0, syscall.EIO
			}
			switch string(data[:2]) {
			case "0\n":
				set(false)
			case "1\n":
				set(true)
			default:
				return 0, syscall.EIO
			}
			return 2, nil
		},
	}
}
