package memdb

import "syscall"

// mutate runs one change: with the writer lock held, fn validates it, stages its rows
// in the open SQLite transaction and applies it to the tree. With wait, mutate returns
// only once that transaction has committed. It drops the lock between staging and
// committing, so writers that were waiting for the lock stage into the same transaction
// and the first to commit makes all of them durable (group commit). Without wait the
// caller commits later (Deferred). The observer hears of the changed paths after that.
func (db *DB) mutate(wait bool, fn func() (changed []string, err error)) error {
	db.wmu.Lock()
	if db.failed {
		db.wmu.Unlock()
		return syscall.EIO
	}
	changed, err := fn()
	staged, gen := db.be.inTx, db.be.gen
	db.wmu.Unlock()
	if err == nil && wait && staged {
		db.wmu.Lock()
		err = db.commitGen(gen)
		db.wmu.Unlock()
	}
	if err == nil && db.obs != nil {
		for _, p := range changed {
			db.obs.FileChanged(p)
		}
	}
	return err
}

// commitGen makes the transaction of generation gen durable, unless another writer
// already committed it; the caller holds wmu.
func (db *DB) commitGen(gen uint64) error {
	switch {
	case db.be.committed >= gen:
		return nil
	case db.failed:
		return syscall.EIO
	}
	if err := db.be.commitTx(); err != nil {
		db.fail(err)
		return syscall.EIO
	}
	return nil
}

// Commit makes every change staged by a Deferred view durable. After a failure the
// database refuses all later changes, and the deferred changes must be reported failed.
func (db *DB) Commit() error {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if db.failed {
		return syscall.EIO
	}
	if !db.be.inTx {
		return nil
	}
	return db.commitGen(db.be.gen)
}

// fail makes the database refuse every later change (upstream memdb.c: memdb->errors).
// The tree may now be ahead of the file, so only a restart (which reloads the file)
// or a sync from the cluster may bring it back.
func (db *DB) fail(err error) {
	db.be.rollbackTx()
	db.failed = true
	db.log.WithError(err).Error("database write failed; refusing all further changes")
}

// stage writes a change into the open transaction; a SQLite error fails the database.
func (db *DB) stage(r *row, deleteInode uint64, root rootState) error {
	if err := db.be.stage(r, deleteInode, root); err != nil {
		db.fail(err)
		return syscall.EIO
	}
	return nil
}

// Deferred is a view of the database whose changes are applied to the tree and staged
// at once but made durable only by DB.Commit, so a caller applying a burst of changes
// (DCDB delivering the messages of one dispatch) pays for one commit. Readers see a
// deferred change before it is durable; whoever acknowledges it must wait for Commit.
type Deferred struct{ db *DB }

// Deferred returns the deferred view of db.
func (db *DB) Deferred() Deferred { return Deferred{db} }

func (d Deferred) Mkdir(path string, writer, mtime uint32) error {
	return d.db.mkdir(false, path, writer, mtime)
}

func (d Deferred) Create(path string, writer, mtime uint32) error {
	_, err := d.db.pwrite(false, path, 0, nil, false, true, writer, mtime)
	return err
}

func (d Deferred) Write(path string, off uint64, data []byte, truncate bool, writer, mtime uint32) (int, error) {
	return d.db.pwrite(false, path, off, data, truncate, false, writer, mtime)
}

func (d Deferred) Mtime(path string, writer, mtime uint32) error {
	return d.db.mtime(false, path, writer, mtime)
}

func (d Deferred) Delete(path string, writer, mtime uint32) error {
	return d.db.delete(false, path, writer, mtime)
}

func (d Deferred) Rename(from, to string, writer, mtime uint32) error {
	return d.db.rename(false, from, to, writer, mtime)
}

// nextRoot is the root state after one more successful change.
func (db *DB) nextRoot(writer, mtime uint32) rootState {
	return rootState{version: db.t.root.version + 1, writer: writer, mtime: mtime}
}

// setRoot installs the new root state; the caller holds mu.
func (db *DB) setRoot(r rootState) {
	root := db.t.root
	root.version, root.writer, root.mtime = r.version, r.writer, r.mtime
	root.setDigest()
}

// tableRow is the row that stores e, as loadRows reads it: the root is the version row.
func (e *entry) tableRow() row {
	if e.inode == 0 {
		return row{typ: TypeReg, name: versionRowName, version: e.version, writer: e.writer, mtime: e.mtime}
	}
	return *rowOf(e, e.data)
}

func rowOf(e *entry, data []byte) *row {
	return &row{inode: e.inode, parent: e.parent, version: e.version, writer: e.writer,
		mtime: e.mtime, typ: e.typ, name: e.name, data: data}
}

// dirBlob is what upstream stores as a directory's data after mtime or rename: an
// empty blob, where mkdir stores NULL. Only row dumps show the difference.
var dirBlob = []byte{}

// parentDir resolves the directory that will hold the last component of path.
func (db *DB) parentDir(path string) (parent *entry, dir, base string, err error) {
	dir, base = splitPath(path)
	parent, _ = db.t.lookup(dir)
	switch {
	case parent == nil:
		return nil, dir, base, syscall.ENOENT
	case parent.typ != TypeDir:
		return nil, dir, base, syscall.ENOTDIR
	case badName(base):
		return nil, dir, base, syscall.EACCES
	}
	return parent, dir, base, nil
}

// Mkdir is memdb.c:memdb_mkdir.
func (db *DB) Mkdir(path string, writer, mtime uint32) error {
	return db.mkdir(true, path, writer, mtime)
}

func (db *DB) mkdir(wait bool, path string, writer, mtime uint32) error {
	return db.mutate(wait, func() ([]string, error) {
		parent, dir, base, err := db.parentDir(path)
		if err != nil {
			return nil, err
		}
		if parent.children[base] != nil {
			return nil, syscall.EEXIST
		}
		root := db.nextRoot(writer, mtime)
		e := &entry{inode: root.version, parent: parent.inode, version: root.version, writer: writer,
			mtime: mtime, typ: TypeDir, name: base, children: map[string]*entry{}}
		e.setDigest()
		if err := db.stage(rowOf(e, nil), 0, root); err != nil {
			return nil, err
		}
		db.mu.Lock()
		parent.children[base] = e
		db.t.byInode[e.inode] = e
		db.setRoot(root)
		db.mu.Unlock()
		if isDirectLock(dir) {
			db.resetLock(path, e.lockChecksum())
		}
		return nil, nil
	})
}

// Create is memdb_create: an empty regular file; EEXIST if the name exists.
func (db *DB) Create(path string, writer, mtime uint32) error {
	_, err := db.pwrite(true, path, 0, nil, false, true, writer, mtime)
	return err
}

// Write is memdb.c:memdb_write; truncate=true also shrinks the file to off+len(data),
// so a truncate(n) is Write(path, n, nil, true).
func (db *DB) Write(path string, off uint64, data []byte, truncate bool, writer, mtime uint32) (int, error) {
	return db.pwrite(true, path, off, data, truncate, false, writer, mtime)
}

func (db *DB) pwrite(wait bool, path string, off uint64, data []byte, truncate, create bool, writer, mtime uint32) (int, error) {
	err := db.mutate(wait, func() ([]string, error) {
		if off > MaxFileSize || off+uint64(len(data)) > MaxFileSize {
			return nil, syscall.EFBIG
		}
		parent, _, base, err := db.parentDir(path)
		if err != nil {
			return nil, err
		}
		vmid, node, typ, isVM := vmConfigPath(path)
		if isVM && db.vml.differentVMExists(vmid, node, typ) {
			return nil, syscall.EEXIST
		}
		root := db.nextRoot(writer, mtime)
		old := parent.children[base]
		var oldData []byte
		switch {
		case old != nil && old.typ != TypeReg:
			return nil, syscall.ENOTDIR
		case old != nil && create:
			return nil, syscall.EEXIST
		case old == nil && !create:
			return nil, syscall.ENOENT
		case old != nil:
			oldData = old.data
		}
		newSize := off + uint64(len(data))
		if newSize < uint64(len(oldData)) && !truncate {
			newSize = uint64(len(oldData))
		}
		var newData []byte
		if newSize > 0 {
			newData = make([]byte, newSize)
			copy(newData, oldData)
			copy(newData[off:], data)
		}
		e := &entry{inode: root.version, parent: parent.inode, typ: TypeReg, name: base}
		if old != nil {
			e.inode = old.inode
		}
		e.version, e.writer, e.mtime, e.data = root.version, writer, mtime, newData
		e.setDigest()
		if err := db.stage(rowOf(e, newData), 0, root); err != nil {
			return nil, err
		}
		db.mu.Lock()
		if old != nil {
			old.version, old.writer, old.mtime, old.data, old.digest = e.version, e.writer, e.mtime, e.data, e.digest
		} else {
			parent.children[base] = e
			db.t.byInode[e.inode] = e
		}
		db.setRoot(root)
		if isVM {
			db.vml.register(vmid, node, typ)
		}
		db.mu.Unlock()
		return []string{path}, nil
	})
	if err != nil {
		return 0, err
	}
	return len(data), nil
}

// Mtime is memdb.c:memdb_mtime with the lock-directory rules.
func (db *DB) Mtime(path string, writer, mtime uint32) error {
	return db.mtime(true, path, writer, mtime)
}

func (db *DB) mtime(wait bool, path string, writer, mtime uint32) error {
	return db.mutate(wait, func() ([]string, error) {
		parent, dir, base, err := db.parentDir(path)
		if err != nil {
			return nil, err
		}
		e := parent.children[base]
		if e == nil {
			return nil, syscall.ENOENT
		}
		// utime(0,0) asks for an unlock, so a lock's mtime may only move forward and
		// only its creator may refresh it.
		isLock := isDirectLock(dir) && e.typ == TypeDir
		if isLock && (mtime < e.mtime || writer != e.writer) {
			return nil, syscall.EACCES
		}
		root := db.nextRoot(writer, mtime)
		ne := *e
		ne.version, ne.writer, ne.mtime = root.version, writer, mtime
		ne.setDigest()
		blob := e.data
		if e.typ == TypeDir {
			blob = dirBlob
		}
		if err := db.stage(rowOf(&ne, blob), 0, root); err != nil {
			return nil, err
		}
		db.mu.Lock()
		e.version, e.writer, e.mtime, e.digest = ne.version, ne.writer, ne.mtime, ne.digest
		db.setRoot(root)
		db.mu.Unlock()
		if isLock {
			db.resetLock(path, e.lockChecksum())
		}
		return []string{path}, nil
	})
}

// Delete is memdb.c:memdb_delete, serving both unlink and rmdir.
func (db *DB) Delete(path string, writer, mtime uint32) error {
	return db.delete(true, path, writer, mtime)
}

func (db *DB) delete(wait bool, path string, writer, mtime uint32) error {
	return db.mutate(wait, func() ([]string, error) {
		e, parent := db.t.lookup(path)
		switch {
		case e == nil:
			return nil, syscall.ENOENT
		case parent == nil:
			return nil, syscall.EACCES
		case e.typ == TypeDir && len(e.children) > 0:
			return nil, syscall.ENOTEMPTY
		}
		root := db.nextRoot(writer, mtime)
		if err := db.stage(nil, e.inode, root); err != nil {
			return nil, err
		}
		db.mu.Lock()
		delete(parent.children, e.name)
		delete(db.t.byInode, e.inode)
		db.setRoot(root)
		if vmid, node, typ, ok := vmConfigPath(path); ok {
			db.vml.removed(vmid, node, typ, e.typ == TypeReg)
		}
		db.mu.Unlock()
		if e.typ == TypeDir {
			db.forgetLock(path)
		}
		return []string{path}, nil
	})
}

// Rename is memdb.c:memdb_rename: the entry keeps its inode and gets a new version;
// an existing target is replaced in the same transaction.
func (db *DB) Rename(from, to string, writer, mtime uint32) error {
	return db.rename(true, from, to, writer, mtime)
}

func (db *DB) rename(wait bool, from, to string, writer, mtime uint32) error {
	return db.mutate(wait, func() ([]string, error) {
		src, srcParent := db.t.lookup(from)
		if src == nil {
			return nil, syscall.ENOENT
		}
		if srcParent == nil {
			return nil, syscall.EACCES
		}
		fromVMID, fromNode, fromType, fromIsVM := vmConfigPath(from)
		toVMID, toNode, toType, toIsVM := vmConfigPath(to)
		toIsVM = toIsVM && src.typ == TypeReg
		// Moving a config onto its own VMID elsewhere is how migration works.
		if toIsVM && db.vml.differentVMExists(toVMID, toNode, toType) && !(fromIsVM && fromVMID == toVMID) {
			return nil, syscall.EEXIST
		}
		if src.typ == TypeDir && isLockPath(from) {
			return nil, syscall.EACCES
		}
		dst, dstParent := db.t.lookup(to)
		var target *entry
		var base string
		if dst != nil {
			switch {
			case dstParent == nil:
				return nil, syscall.EACCES
			case dst.typ == TypeDir && len(dst.children) > 0:
				return nil, syscall.ENOTEMPTY
			}
			target, base = dstParent, dst.name
		} else {
			var dir string
			dir, base = splitPath(to)
			if target, _ = db.t.lookup(dir); target == nil {
				return nil, syscall.ENOENT
			}
			if target.typ != TypeDir {
				return nil, syscall.ENOTDIR
			}
			// Upstream does not check; a kernel never sends such names.
			if badName(base) {
				return nil, syscall.EACCES
			}
		}
		if src.typ == TypeDir && len(src.children) > 0 {
			return nil, syscall.ENOTEMPTY
		}
		// An (empty) directory moved into itself would leave the tree; upstream
		// corrupts its tree here, the kernel answers EINVAL.
		if target == src {
			return nil, syscall.EINVAL
		}
		var deleteInode uint64
		if dst != nil && dst != src {
			deleteInode = dst.inode
		}
		root := db.nextRoot(writer, mtime)
		ne := *src
		ne.parent, ne.name, ne.version, ne.writer, ne.mtime = target.inode, base, root.version, writer, mtime
		ne.setDigest()
		blob := src.data
		if src.typ == TypeDir {
			blob = dirBlob
		}
		if err := db.stage(rowOf(&ne, blob), deleteInode, root); err != nil {
			return nil, err
		}
		db.mu.Lock()
		delete(srcParent.children, src.name)
		if deleteInode != 0 {
			delete(target.children, base)
			delete(db.t.byInode, deleteInode)
		}
		src.parent, src.name, src.version, src.writer, src.mtime, src.digest = ne.parent, ne.name, ne.version, ne.writer, ne.mtime, ne.digest
		target.children[base] = src
		db.setRoot(root)
		if src.typ == TypeReg {
			if fromIsVM {
				db.vml.removed(fromVMID, fromNode, fromType, true)
			}
			if toIsVM {
				db.vml.register(toVMID, toNode, toType)
			}
		}
		db.mu.Unlock()
		return []string{from, to}, nil
	})
}
