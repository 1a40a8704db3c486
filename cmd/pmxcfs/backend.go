package main

import (
	"syscall"

	"github.com/pmxcfs-go/pmxcfs/cluster"
	"github.com/pmxcfs-go/pmxcfs/dcdb"
	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/pmxcfs-go/pmxcfs/status"
)

// clusterBackend sends every change through the DCDB group and returns once this node has
// applied its own message; reads stay local (fs reads memdb directly).
type clusterBackend struct {
	db     *memdb.DB
	app    *dcdb.App
	group  *cluster.Group
	status *status.Status
}

func (b *clusterBackend) DB() *memdb.DB { return b.db }

// Quorate is what the mode bits show: writable only with quorum and a running engine.
func (b *clusterBackend) Quorate() bool { return b.status.Quorate() && b.group.CurrentEngine() != nil }

func (b *clusterBackend) Writable() error { return b.ready() }

// ready refuses changes before the first connection to corosync: without quorum with
// EACCES like upstream, otherwise with EBUSY, upstream's "message never processed".
func (b *clusterBackend) ready() error {
	if !b.status.Quorate() {
		return syscall.EACCES
	}
	if b.group.CurrentEngine() == nil {
		return syscall.EBUSY
	}
	if ok, _ := b.app.CaughtUp(); !ok {
		return syscall.EACCES
	}
	return nil
}

func (b *clusterBackend) Create(path string) (func() error, error) {
	if err := b.ready(); err != nil {
		return nil, err
	}
	return b.app.Create(path)
}

func (b *clusterBackend) Write(path string, off uint64, data []byte, truncate bool) (int, error) {
	if err := b.ready(); err != nil {
		return 0, err
	}
	if off+uint64(len(data)) > memdb.MaxFileSize {
		return 0, syscall.EFBIG // the wire offset is 32 bits; memdb would refuse it anyway
	}
	return b.app.Write(path, uint32(off), data, truncate)
}

func (b *clusterBackend) Mkdir(path string) error {
	if err := b.ready(); err != nil {
		return err
	}
	return b.app.Mkdir(path)
}

func (b *clusterBackend) Delete(path string) error {
	if err := b.ready(); err != nil {
		return err
	}
	return b.app.Delete(path)
}

func (b *clusterBackend) Rename(from, to string) error {
	if err := b.ready(); err != nil {
		return err
	}
	return b.app.Rename(from, to)
}

// Utime with mtime 0 on a lock directory asks the lowest node to remove the lock if it has
// expired, then sends the MTIME(0), which normally fails with EACCES
// (cfs-plug-memdb.c:cfs_plug_memdb_utimens, docs/protocol.md#unlock-messages).
func (b *clusterBackend) Utime(path string, mtime uint32) error {
	if err := b.ready(); err != nil {
		return err
	}
	if mtime == 0 && b.db.IsLockDir(path) {
		if err := b.app.RequestUnlock(path); err != nil {
			return err
		}
	}
	return b.app.Mtime(path, mtime)
}
