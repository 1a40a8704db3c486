// Package memdb is the in-RAM configuration tree of pmxcfs, written through to the
// upstream-compatible SQLite database (config.db).
//
// The exported names below are the contract other packages (fs, status) build on;
// the operations are in ops.go, reads in db.go.
package memdb

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Entry kinds, the dirent.h values stored in the SQLite "type" column.
const (
	TypeDir = 4
	TypeReg = 8
)

// Limits of upstream memdb.h.
const (
	MaxFileSize = 1024 * 1024
	MaxFSSize   = 128 * 1024 * 1024
	MaxInodes   = 256 * 1024
	BlockSize   = 4096
	LockTimeout = 120 * time.Second
)

// Entry is a copy of one tree entry's metadata (and, from Lookup with data, its bytes).
type Entry struct {
	Inode   uint64
	Parent  uint64
	Version uint64
	Writer  uint32
	Mtime   uint32
	Size    uint32
	Type    uint8
	Name    string
}

// IsDir reports whether the entry is a directory.
func (e Entry) IsDir() bool { return e.Type == TypeDir }

// VM is one guest of the VM list (docs/upstream-behaviour.md#vm-list).
type VM struct {
	Node    string
	Type    string // "qemu", "lxc" or "openvz"
	Version uint64 // per-VM version, the clients' cache key
}

// VMList is a snapshot of the VM list.
type VMList struct {
	Version uint64 // global vmlist version
	VMs     map[uint32]VM
}

// Statfs holds what statfs reports (memdb.c:memdb_statfs).
type Statfs struct {
	Bsize, Blocks, Bfree, Bavail, Files, Ffree, Namemax uint64
}

// Observer is told about changes, for the file-change counters of .version
// (status.c:record_memdb_change, record_memdb_reload).
// Calls happen after the change is durable and visible, never with memdb locks held.
type Observer interface {
	FileChanged(path string) // path exactly as passed to the operation
	Reloaded()               // after a load at open or a sync commit
}

// Options configure Open.
type Options struct {
	Observer Observer
	Log      *logrus.Entry
	Now      func() time.Time // node-local clock for lock expiry; time.Now if nil
}

// DB is the tree plus its SQLite backend. All methods are safe for concurrent use.
// Reads never wait for a writer's SQLite commit: a writer validates and commits while
// holding only wmu, then applies the change under a short write lock of mu.
type DB struct {
	log *logrus.Entry
	obs Observer
	now func() time.Time

	wmu    sync.Mutex // one mutation at a time; guards be and failed
	be     *backend
	failed bool // sticky after any SQLite error (upstream's memdb->errors) or Close

	mu  sync.RWMutex // guards the contents of t and vml
	t   *tree
	vml *vmList

	locksMu sync.Mutex
	locks   map[string]lockInfo
}
