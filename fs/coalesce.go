package fs

import (
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// buffered coalesces the write() calls on one file until it is flushed (close, fsync,
// a truncate or utime, or the last release): the file then changes by one memdb write
// of the written range, which is one DCDB message in a cluster. Upstream changes the
// file, and rewrites its whole blob in SQLite, for every write() call, so a file
// written in 4 KiB chunks costs time and disk in the square of its size
// (docs/write-path.md).
//
// What a write() can know at once it reports at once: no quorum (the backend's
// Writable), a range beyond the 1 MiB limit (EFBIG), a file that is gone. Everything
// else - a refused or failed replication, a full disk - comes back from the close()
// (FLUSH) or fsync() that replicates the buffer. Reads and getattr of the file on this
// node see the buffered content; other nodes see it after the flush.
type buffered struct {
	// flushMu serialises writes with flushes, so a flush replicates a consistent buffer
	// and the writes after it start a new one. Reads never take it: a flush can wait on
	// a cluster round trip.
	flushMu sync.Mutex
	mu      sync.Mutex // guards pend; held only for memory operations
	pend    *pending
}

// pending is the file's content as the buffered writes made it, and the range they
// touched.
type pending struct {
	data   []byte
	lo, hi int64
}

// write buffers one write() call.
func (b *buffered) write(fsys *fileSystem, n *gofs.Inode, data []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if err := fsys.backend.Writable(); err != nil {
		return 0, toErrno(err)
	}
	end := off + int64(len(data))
	if end > memdb.MaxFileSize {
		return 0, syscall.EFBIG
	}
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	p := b.pend
	b.mu.Unlock()
	if p == nil {
		path, errno := nodePath(n)
		if errno != 0 {
			return 0, errno
		}
		base, err := fsys.db().ReadFile(path)
		if err != nil {
			return 0, toErrno(err)
		}
		p = &pending{data: base, lo: off, hi: end}
	}
	// A new slice when the content grows or is still memdb's (published data is
	// immutable); later writes within it modify the buffer in place, under mu since
	// readers copy from it.
	buf := p.data
	if end > int64(len(buf)) || b.pend == nil {
		buf = make([]byte, max(end, int64(len(p.data))))
		copy(buf, p.data)
	}
	b.mu.Lock()
	copy(buf[off:], data)
	p.data = buf
	p.lo, p.hi = min(p.lo, off), max(p.hi, end)
	b.pend = p
	b.mu.Unlock()
	return uint32(len(data)), 0
}

// readBuffered serves a read from the buffer, if there is one.
func (b *buffered) readBuffered(off int64, n int) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pend == nil {
		return nil, false
	}
	data := b.pend.data
	if off >= int64(len(data)) {
		return []byte{}, true
	}
	end := min(int64(len(data)), off+int64(n))
	return append([]byte(nil), data[off:end]...), true
}

// bufferedSize is the size the buffered writes give the file.
func (b *buffered) bufferedSize() (uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pend == nil {
		return 0, false
	}
	return uint64(len(b.pend.data)), true
}

// flush replicates the buffered writes and reports their outcome.
func (b *buffered) flush(fsys *fileSystem, n *gofs.Inode) syscall.Errno {
	unlock, errno := b.flushLocked(fsys, n)
	unlock()
	return errno
}

// flushLocked replicates the buffered writes and returns with flushMu held, so the
// caller's own change follows them before any new write.
func (b *buffered) flushLocked(fsys *fileSystem, n *gofs.Inode) (unlock func(), errno syscall.Errno) {
	b.flushMu.Lock()
	b.mu.Lock()
	p := b.pend
	b.mu.Unlock()
	if p != nil {
		errno = b.replicate(fsys, n, p)
		// The buffer goes either way: on failure the caller was told, as a close()
		// or fsync() reports a failed write-back.
		b.mu.Lock()
		b.pend = nil
		b.mu.Unlock()
	}
	return b.flushMu.Unlock, errno
}

func (b *buffered) replicate(fsys *fileSystem, n *gofs.Inode, p *pending) syscall.Errno {
	path, errno := nodePath(n)
	if errno != 0 {
		// Unlinked while open: the writes went to a file that no longer has a name.
		return 0
	}
	// The range holds only bytes this node wrote or already had, so what another node
	// wrote outside it is kept.
	if _, err := fsys.backend.Write(path, uint64(p.lo), p.data[p.lo:p.hi], false); err != nil {
		return toErrno(err)
	}
	return 0
}
