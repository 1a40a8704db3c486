package fs

import (
	"time"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// LocalBackend applies every change straight to memdb, as upstream's local mode (-l):
// writer 0, the node clock as mtime, always quorate.
type LocalBackend struct {
	db  *memdb.DB
	now func() time.Time
}

// NewLocalBackend returns a local-mode backend over db.
func NewLocalBackend(db *memdb.DB) *LocalBackend {
	return &LocalBackend{db: db, now: time.Now}
}

func (b *LocalBackend) mtime() uint32 { return uint32(b.now().Unix()) }

func (b *LocalBackend) DB() *memdb.DB   { return b.db }
func (b *LocalBackend) Quorate() bool   { return true }
func (b *LocalBackend) Writable() error { return nil }

// Create stages the new file without committing it: like a cluster create
// (Backend.Create), it is final once confirmed, by the close of the descriptor that
// created it, so a file created, written and closed costs one SQLite commit, not two.
func (b *LocalBackend) Create(path string) (func() error, error) {
	if err := b.db.Deferred().Create(path, 0, b.mtime()); err != nil {
		return nil, err
	}
	return b.db.Commit, nil
}

func (b *LocalBackend) Write(path string, off uint64, data []byte, truncate bool) (int, error) {
	return b.db.Write(path, off, data, truncate, 0, b.mtime())
}

func (b *LocalBackend) Mkdir(path string) error      { return b.db.Mkdir(path, 0, b.mtime()) }
func (b *LocalBackend) Delete(path string) error     { return b.db.Delete(path, 0, b.mtime()) }
func (b *LocalBackend) Rename(from, to string) error { return b.db.Rename(from, to, 0, b.mtime()) }

// Utime with mtime 0 on a lock directory is an unlock request: an expired lock is
// deleted at once; otherwise it falls through to the mtime update, which memdb refuses
// with EACCES for a lock that is still held (cfs-plug-memdb.c:cfs_plug_memdb_utimens).
func (b *LocalBackend) Utime(path string, mtime uint32) error {
	if mtime == 0 && b.db.IsLockDir(path) {
		if csum, err := b.db.EntryChecksum(path); err == nil && b.db.LockExpired(path, csum) {
			return b.db.Delete(path, 0, b.mtime())
		}
	}
	return b.db.Mtime(path, 0, mtime)
}
