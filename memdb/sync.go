package memdb

import (
	"bytes"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// SyncRecord is one inode as a DCDB state transfer carries it
// (docs/protocol.md#update-record). The root is inode 0 with an empty name.
type SyncRecord struct {
	Parent, Inode, Version uint64
	Writer, Mtime          uint32
	Type                   uint8
	Name                   string
	Data                   []byte
}

// presyncBackups is how many pre-sync copies of the database are kept.
const presyncBackups = 10

// Failed reports the sticky error state (docs/upstream-behaviour.md#sticky-database-errors):
// after a SQLite error every change is refused, and DCDB must stop replicating.
func (db *DB) Failed() bool {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	return db.failed
}

// Record returns the current content of inode for a state transfer.
func (db *DB) Record(inode uint64) (SyncRecord, bool) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	e := db.t.byInode[inode]
	if e == nil {
		return SyncRecord{}, false
	}
	r := SyncRecord{Parent: e.parent, Inode: e.inode, Version: e.version, Writer: e.writer,
		Mtime: e.mtime, Type: e.typ, Name: e.name}
	if e.typ == TypeReg && len(e.data) > 0 {
		r.Data = e.data
	}
	return r, true
}

// row is the table row that stores r.
func (r *SyncRecord) row() row {
	name := r.Name
	if r.Inode == 0 {
		name = versionRowName
	}
	var data []byte
	if r.Type == TypeReg && len(r.Data) > 0 {
		data = r.Data
	}
	return row{inode: r.Inode, parent: r.Parent, version: r.Version, writer: r.Writer, mtime: r.Mtime,
		typ: r.Type, name: name, data: data}
}

// IndexEntry is one (inode, digest) pair of an encoded index.
type IndexEntry struct {
	Inode  uint64
	Digest [32]byte
}

// ParseIndex checks an encoded index (docs/protocol.md#memdb-index) and returns its
// entries. It accepts only what encodeIndex can produce the shape of: consistent byte and
// entry counts and inodes strictly ascending.
func ParseIndex(b []byte) ([]IndexEntry, error) {
	if len(b) < 32 {
		return nil, fmt.Errorf("memdb index too short (%d bytes)", len(b))
	}
	size := binary.LittleEndian.Uint32(b[24:])
	bytesField := binary.LittleEndian.Uint32(b[28:])
	if uint64(bytesField) != uint64(len(b)) || uint64(len(b)) != 32+40*uint64(size) {
		return nil, fmt.Errorf("malformed memdb index (len %d, bytes %d, size %d)", len(b), bytesField, size)
	}
	list := make([]IndexEntry, size)
	for i := range list {
		off := 32 + 40*i
		list[i].Inode = binary.LittleEndian.Uint64(b[off:])
		copy(list[i].Digest[:], b[off+8:off+40])
		if i > 0 && list[i].Inode <= list[i-1].Inode {
			return nil, fmt.Errorf("memdb index not sorted at entry %d", i)
		}
	}
	return list, nil
}

// pathOf builds the path of e from its parent links; the caller holds mu.
func (t *tree) pathOf(e *entry) string {
	var parts []string
	for n := 0; e != nil && e.inode != 0 && n < MaxInodes; n++ {
		parts = append(parts, e.name)
		e = t.byInode[e.parent]
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// ApplySync is the DCDB commit (database.c:bdb_backend_commit_update,
// docs/protocol.md#commit): in one SQLite transaction it deletes
// every inode missing from the leader's index, writes the received records,
// builds the new tree (the records and the entries kept) and requires its index
// to equal leaderIndex byte for byte. Only then is the transaction committed
// and the new tree swapped in. Before local data is replaced or deleted, each
// affected path is logged and the database file is copied to
// <dir>/backup/config-<unix>-presync.db.
// Any failure leaves the database refusing further changes (upstream sets
// memdb->errors), since our tree may no longer match the cluster.
func (db *DB) ApplySync(leaderIndex []byte, records []SyncRecord) error {
	leader, err := ParseIndex(leaderIndex)
	if err != nil {
		return err
	}
	inLeader := make(map[uint64]bool, len(leader))
	for _, ie := range leader {
		inLeader[ie.Inode] = true
	}
	db.wmu.Lock()
	if db.failed {
		db.wmu.Unlock()
		return syscall.EIO
	}
	t, err := db.applySyncLocked(leaderIndex, inLeader, records)
	if err != nil {
		db.failed = true
		db.wmu.Unlock()
		return err
	}
	db.wmu.Unlock()
	if db.obs != nil {
		db.obs.Reloaded()
	}
	db.log.Infof("sync commit successful (version = %016X, %d entries)", t.root.version, len(t.byInode))
	return nil
}

func (db *DB) applySyncLocked(leaderIndex []byte, inLeader map[uint64]bool, records []SyncRecord) (*tree, error) {
	// Changes staged by a Deferred view belong before the sync (and the backup
	// cannot run inside a transaction): commit them on their own.
	if err := db.commitGen(db.be.gen); err != nil {
		return nil, err
	}
	// What is lost locally: entries deleted, and existing entries overwritten with
	// different content. The root changes with every sync and is not data.
	var deletes []uint64
	lossy := false
	db.mu.RLock()
	for _, e := range db.t.sortedEntries() {
		if !inLeader[e.inode] {
			deletes = append(deletes, e.inode)
			if e.inode != 0 {
				lossy = true
				db.log.Warnf("sync: deleting %q (inode %d, version %d, checksum %s)",
					db.t.pathOf(e), e.inode, e.version, shortSum(e.lockChecksum()))
			}
		}
	}
	for _, r := range records {
		if e := db.t.byInode[r.Inode]; e != nil && r.Inode != 0 {
			lossy = true
			db.log.Warnf("sync: replacing %q (inode %d, version %d, checksum %s) with version %d",
				db.t.pathOf(e), e.inode, e.version, shortSum(e.lockChecksum()), r.Version)
		}
	}
	db.mu.RUnlock()
	if lossy {
		if err := db.backupPresync(); err != nil {
			return nil, fmt.Errorf("pre-sync backup failed, not committing: %w", err)
		}
	}

	be := db.be
	if err := be.beginTx(); err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			be.rollbackTx()
		}
	}()
	for _, ino := range deletes {
		if _, err := be.exec(be.del, int64(ino)); err != nil {
			return nil, fmt.Errorf("delete inode %d: %w", ino, err)
		}
	}
	rows := make([]row, 0, len(inLeader))
	replaced := make(map[uint64]int, len(records)) // inode -> its row in rows
	for i := range records {
		rw := records[i].row()
		if err := be.putRow(&rw, false); err != nil {
			return nil, err
		}
		if j, ok := replaced[rw.inode]; ok {
			rows[j] = rw // written again: the table holds the last
			continue
		}
		replaced[rw.inode] = len(rows)
		rows = append(rows, rw)
	}
	// The new tree is built from the rows the table now holds, as upstream rebuilds it
	// by reading the table back (database.c:bdb_backend_commit_update): the records and
	// the entries kept, whose rows are unchanged. Built from memory, it shares the
	// records' data instead of reading all of it back into a second copy, which for a
	// node joining empty is the whole database. The index check below still compares
	// the result with the leader's.
	db.mu.RLock()
	for ino, e := range db.t.byInode {
		if _, ok := replaced[ino]; inLeader[ino] && !ok {
			rows = append(rows, e.tableRow())
		}
	}
	db.mu.RUnlock()
	for i := range rows {
		rows[i].name = cString(rows[i].name)
	}
	t, err := buildTree(rows)
	if err != nil {
		return nil, fmt.Errorf("tree after sync: %w", err)
	}
	if t.root.version == 0 {
		return nil, errors.New("new index has version 0 - internal error")
	}
	if !bytes.Equal(t.encodeIndex(), leaderIndex) {
		return nil, errors.New("new index does not match master index - internal error")
	}
	db.mu.RLock()
	prev := db.vml
	db.mu.RUnlock()
	vml, err := buildVMList(t, prev)
	if err != nil {
		return nil, fmt.Errorf("vm list after sync: %w", err)
	}
	committed = true
	if syncCommitHook != nil {
		syncCommitHook()
	}
	if err := be.commitTx(); err != nil {
		return nil, err
	}
	db.mu.Lock()
	db.t, db.vml = t, vml
	db.mu.Unlock()
	db.updateLocks(t)
	return t, nil
}

// syncCommitHook, when set by a test, runs inside ApplySync just before the commit.
var syncCommitHook func()

func shortSum(s [32]byte) string { return hex.EncodeToString(s[:8]) }

// backupPresync copies the database to backup/config-<unix>-presync.db next to
// it (VACUUM INTO gives a consistent copy) and keeps the newest ones only.
func (db *DB) backupPresync() error {
	file, err := db.be.fileName()
	if err != nil {
		return err
	}
	dir := filepath.Join(filepath.Dir(file), "backup")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := db.now().Unix()
	target := filepath.Join(dir, fmt.Sprintf("config-%d-presync.db", now))
	for n := 1; ; n++ {
		if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
			break
		}
		target = filepath.Join(dir, fmt.Sprintf("config-%d.%d-presync.db", now, n))
	}
	if _, err := db.be.conn.Exec("VACUUM INTO ?", []driver.Value{target}); err != nil {
		return err
	}
	if err := os.Chmod(target, 0o600); err != nil {
		return err
	}
	db.log.Warnf("sync: saved previous database as %s", target)
	pruneBackups(dir)
	return nil
}

func pruneBackups(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, "config-*-presync.db"))
	key := func(p string) float64 {
		s := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "config-"), "-presync.db")
		f, _ := strconv.ParseFloat(s, 64)
		return f
	}
	sort.Slice(matches, func(i, j int) bool { return key(matches[i]) > key(matches[j]) })
	for _, p := range matches[min(len(matches), presyncBackups):] {
		os.Remove(p)
	}
}
