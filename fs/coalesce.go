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
// (FLUSH) or fsync() that replicates the buffer, on every descriptor that wrote into it
// (writeHandle), whichever descriptor's close replicated it. Reads and getattr of the
// file on this node see the buffered content; other nodes see it after the flush.
type buffered struct {
	// flushMu serialises writes with flushes, so a flush replicates a consistent buffer
	// and the writes after it start a new one. Reads never take it: a flush can wait on
	// a cluster round trip.
	flushMu sync.Mutex
	mu      sync.Mutex // guards pend; held only for memory operations
	pend    *pending
	// gen numbers the buffers (guarded by flushMu); failed keeps the error of each
	// buffer whose replication failed until every descriptor that wrote into it has
	// reported it.
	gen    uint64
	failed map[uint64]*failure
}

type failure struct {
	errno   syscall.Errno
	writers int // descriptors that wrote into the buffer and have not reported yet
}

// writeHandle is an open descriptor that may write: it remembers the buffer it wrote
// into, so its close or fsync reports that buffer's outcome, and for the descriptor that
// created the file the confirmation the create still owes (Backend.Create).
type writeHandle struct {
	gen     uint64       // the buffer written into, 0 for none
	confirm func() error // guarded by the file's flushMu once the file is open
}

// takeConfirm waits for the confirmation of the create, once. In a flush it comes after
// the buffer's replication, whose own confirmation covers the create, so it then costs
// nothing.
func (h *writeHandle) takeConfirm() syscall.Errno {
	if h == nil || h.confirm == nil {
		return 0
	}
	confirm := h.confirm
	h.confirm = nil
	return toErrno(confirm())
}

// pending is the file's content as the buffered writes made it, and the range they
// touched.
type pending struct {
	data    []byte
	lo, hi  int64
	writers int // descriptors that wrote into it
}

// write buffers one write() call made through descriptor h (nil: not one of ours).
func (b *buffered) write(fsys *fileSystem, n *gofs.Inode, h *writeHandle, data []byte, off int64) (uint32, syscall.Errno) {
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
	// A new slice when the content is still memdb's (published data is immutable) or
	// outgrows the buffer, which then doubles, so a file written in small chunks is
	// copied a few times, not once per chunk; later writes modify the buffer in place,
	// under mu since readers copy from it. Capacity beyond the length is zero and only
	// ever becomes content by being written.
	buf := p.data
	switch {
	case b.pend == nil || end > int64(cap(buf)):
		size := max(end, int64(len(p.data)))
		capacity := size
		if b.pend != nil {
			capacity = min(max(size, 2*int64(cap(buf))), memdb.MaxFileSize)
		}
		buf = make([]byte, size, capacity)
		copy(buf, p.data)
	case end > int64(len(buf)):
		buf = buf[:end]
	}
	b.mu.Lock()
	copy(buf[off:], data)
	p.data = buf
	p.lo, p.hi = min(p.lo, off), max(p.hi, end)
	if b.pend == nil {
		b.gen++
	}
	b.pend = p
	b.mu.Unlock()
	if h != nil && h.gen != b.gen {
		// This descriptor wrote into an earlier buffer that another descriptor's close
		// replicated: a failure of it is reported now, by this write().
		errno := b.takeFailure(h)
		h.gen = b.gen
		p.writers++
		if errno != 0 {
			return 0, errno
		}
	}
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

// flush replicates the buffered writes and reports to descriptor h (nil: none of ours)
// the outcome of the buffer it wrote into, which an earlier flush may have replicated.
func (b *buffered) flush(fsys *fileSystem, n *gofs.Inode, h *writeHandle) syscall.Errno {
	unlock, errno := b.flushLocked(fsys, n, h)
	unlock()
	return errno
}

// flushLocked flushes like flush and returns with flushMu held, so the caller's own
// change follows the buffered writes before any new write.
func (b *buffered) flushLocked(fsys *fileSystem, n *gofs.Inode, h *writeHandle) (unlock func(), errno syscall.Errno) {
	b.flushMu.Lock()
	b.mu.Lock()
	p := b.pend
	b.mu.Unlock()
	if p != nil {
		if e := b.replicate(fsys, n, p); e != 0 && p.writers > 0 {
			if b.failed == nil {
				b.failed = map[uint64]*failure{}
			}
			b.failed[b.gen] = &failure{errno: e, writers: p.writers}
		} else if e != 0 {
			errno = e
		}
		// The buffer goes either way: on failure its writers are told, as a close()
		// or fsync() reports a failed write-back.
		b.mu.Lock()
		b.pend = nil
		b.mu.Unlock()
	}
	if e := b.takeFailure(h); e != 0 {
		errno = e
	}
	if e := h.takeConfirm(); errno == 0 {
		errno = e
	}
	return b.flushMu.Unlock, errno
}

// takeFailure returns the failure of the buffer h last wrote into, if any, and forgets
// that h wrote into it; the caller holds flushMu.
func (b *buffered) takeFailure(h *writeHandle) (errno syscall.Errno) {
	if h == nil || h.gen == 0 {
		return 0
	}
	if f := b.failed[h.gen]; f != nil {
		errno = f.errno
		if f.writers--; f.writers == 0 {
			delete(b.failed, h.gen)
		}
	}
	h.gen = 0
	return errno
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
