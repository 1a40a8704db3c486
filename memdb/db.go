package memdb

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"syscall"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
	"github.com/sirupsen/logrus"
)

// Open loads (or creates) the database at path. It refuses (error, nothing written)
// a corrupt database or one with a duplicate VMID.
func Open(path string, opts Options) (*DB, error) {
	db := &DB{log: opts.Log, obs: opts.Observer, now: opts.Now, locks: map[string]lockInfo{}}
	if db.log == nil {
		db.log = logrus.NewEntry(logrus.StandardLogger()).WithField("domain", "database")
	}
	if db.now == nil {
		db.now = time.Now
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("memdb: %s is not a regular file", path)
	case err == nil && fi.Size() > 0:
		// Validate through a read-only connection first: a database we refuse must be
		// left exactly as it is.
		if _, err := validateExisting(path); err != nil {
			return nil, fmt.Errorf("memdb: DB load failed for %s: %w", path, err)
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("memdb: %w", err)
	}

	be, err := openBackend(path)
	if err != nil {
		return nil, fmt.Errorf("memdb: opening %s: %w", path, err)
	}
	t, err := loadTree(be.conn)
	if err != nil {
		be.close()
		return nil, fmt.Errorf("memdb: DB load failed for %s: %w", path, err)
	}
	if t.root.version == 0 {
		t.root.version, t.root.writer, t.root.mtime = 1, 0, uint32(db.now().Unix())
		t.root.setDigest()
		if err := be.write(nil, 0, rootOf(t.root)); err != nil {
			be.close()
			return nil, fmt.Errorf("memdb: initialising %s: %w", path, err)
		}
	}
	vml, err := buildVMList(t, nil)
	if err != nil {
		be.close()
		return nil, fmt.Errorf("memdb: %s: %w", path, err)
	}
	db.be, db.t, db.vml = be, t, vml
	db.updateLocks(t)
	if db.obs != nil {
		db.obs.Reloaded()
	}
	db.log.Debugf("memdb open %q successful (version = %016X)", path, t.root.version)
	return db, nil
}

// loadTree reads and checks the whole table, at open and inside the DCDB sync commit
// (which rebuilds the tree from the rows it has just written).
func loadTree(c *sqlite3.SQLiteConn) (*tree, error) {
	rows, err := loadRows(c)
	if err != nil {
		return nil, err
	}
	return buildTree(rows)
}

func rootOf(r *entry) rootState {
	return rootState{version: r.version, writer: r.writer, mtime: r.mtime}
}

// Close closes the SQLite backend; later changes fail with EIO.
func (db *DB) Close() error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if db.be == nil {
		return nil
	}
	db.failed = true
	err := db.be.close()
	db.be = nil
	return err
}

// Lookup returns the entry at path ("" "/" "." = root).
func (db *DB) Lookup(path string) (Entry, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	e, _ := db.t.lookup(path)
	if e == nil {
		return Entry{}, syscall.ENOENT
	}
	return e.public(), nil
}

// fileData returns the published (immutable) data slice of a regular file.
func (db *DB) fileData(path string) ([]byte, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	e, _ := db.t.lookup(path)
	if e == nil || e.typ != TypeReg {
		return nil, syscall.ENOENT
	}
	return e.data, nil
}

// Read returns up to n bytes of the file at path from off (EOF: empty, nil).
func (db *DB) Read(path string, off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 {
		return nil, syscall.EINVAL
	}
	data, err := db.fileData(path)
	if err != nil {
		return nil, err
	}
	if off >= int64(len(data)) {
		return []byte{}, nil
	}
	end := int64(len(data))
	if int64(n) < end-off {
		end = off + int64(n)
	}
	return append([]byte(nil), data[off:end]...), nil
}

// ReadFile returns a copy of the whole file at path (ENOENT for a dir or a missing entry).
func (db *DB) ReadFile(path string) ([]byte, error) {
	data, err := db.fileData(path)
	if err != nil {
		return nil, err
	}
	return append([]byte{}, data...), nil
}

// ReadDir lists the directory at path, sorted by name.
func (db *DB) ReadDir(path string) ([]Entry, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	d, _ := db.t.lookup(path)
	if d == nil {
		return nil, syscall.ENOENT
	}
	if d.typ != TypeDir {
		return nil, syscall.ENOTDIR
	}
	list := make([]Entry, 0, len(d.children))
	for _, c := range d.children {
		list = append(list, c.public())
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list, nil
}

// Statfs reports the upstream statfs figures (memdb.c:memdb_statfs).
func (db *DB) Statfs() Statfs {
	db.mu.RLock()
	var size uint64
	for _, e := range db.t.byInode {
		size += uint64(e.size())
	}
	files := uint64(len(db.t.byInode))
	db.mu.RUnlock()
	blocks := uint64(MaxFSSize / BlockSize)
	free := blocks - min(blocks, (size+BlockSize-1)/BlockSize)
	return Statfs{Bsize: BlockSize, Blocks: blocks, Bfree: free, Bavail: free,
		Files: MaxInodes, Ffree: MaxInodes - min(MaxInodes, files), Namemax: 256}
}

// IsLockDir reports whether path names a lock directory (priv/lock/<x>, nested too,
// as upstream's path_is_lockdir) that exists as a dir.
func (db *DB) IsLockDir(path string) bool {
	if !isLockPath(path) {
		return false
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	e, _ := db.t.lookup(path)
	return e != nil && e.typ == TypeDir
}

// EntryChecksum is the lock checksum of one entry (memdb.c:memdb_tree_entry_csum).
func (db *DB) EntryChecksum(path string) ([32]byte, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	e, _ := db.t.lookup(path)
	if e == nil {
		return [32]byte{}, syscall.ENOENT
	}
	return e.lockChecksum(), nil
}

// Index returns the encoded memdb index (docs/protocol.md#memdb-index), the DCDB STATE payload.
func (db *DB) Index() []byte {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.t.encodeIndex()
}

// TreeChecksum is the whole-tree checksum used by VERIFY (memdb.c:memdb_compute_checksum).
// The entries are captured under the read lock and hashed after it, since data slices never
// change.
func (db *DB) TreeChecksum() [32]byte {
	type part struct {
		head []byte
		data []byte
	}
	db.mu.RLock()
	list := db.t.sortedEntries()
	parts := make([]part, len(list))
	for i, e := range list {
		head := binary.LittleEndian.AppendUint64(make([]byte, 0, 40+len(e.name)), e.inode)
		parts[i] = part{head: e.fieldImage(head), data: e.hashedData()}
	}
	db.mu.RUnlock()
	h := sha256.New()
	for _, p := range parts {
		h.Write(p.head)
		h.Write(p.data)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// VMList returns a snapshot of the VM list.
func (db *DB) VMList() VMList {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.vml.snapshot()
}

// Root returns the root entry (global version, writer, mtime).
func (db *DB) Root() Entry {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.t.root.public()
}
