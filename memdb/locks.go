package memdb

import (
	"strings"
	"time"
)

// lockInfo is what this node remembers of one lock incarnation
// (docs/upstream-behaviour.md#locks).
type lockInfo struct {
	firstSeen uint32 // node-local seconds
	csum      [32]byte
}

// isLockPath is upstream's path_is_lockdir: priv/lock/ plus at least one character,
// leading slashes ignored; nested paths count too.
func isLockPath(p string) bool {
	p = strings.TrimLeft(p, "/")
	return strings.HasPrefix(p, "priv/lock/") && len(p) > len("priv/lock/")
}

// isDirectLock reports whether dir (a split_path dirname) is exactly priv/lock, the
// test mkdir and mtime use. We compare canonical forms, so "/priv/lock" counts too.
func isDirectLock(dir string) bool { return canonical(dir) == "priv/lock" }

func (db *DB) nowSeconds() uint32 { return uint32(db.now().Unix()) }

// resetLock starts a fresh timer for the lock at path with its current checksum.
func (db *DB) resetLock(path string, csum [32]byte) {
	db.locksMu.Lock()
	db.locks[canonical(path)] = lockInfo{firstSeen: db.nowSeconds(), csum: csum}
	db.locksMu.Unlock()
}

func (db *DB) forgetLock(path string) {
	db.locksMu.Lock()
	delete(db.locks, canonical(path))
	db.locksMu.Unlock()
}

// LockExpired implements memdb.c:memdb_lock_expired.
func (db *DB) LockExpired(path string, csum [32]byte) bool {
	now := db.nowSeconds()
	key := canonical(path)
	db.locksMu.Lock()
	defer db.locksMu.Unlock()
	li, ok := db.locks[key]
	if !ok {
		db.locks[key] = lockInfo{firstSeen: now, csum: csum}
		return false
	}
	if li.csum != csum {
		db.locks[key] = lockInfo{firstSeen: now, csum: csum}
		db.log.Warn("wrong lock csum - reset timeout")
		return false
	}
	return now > li.firstSeen && now-li.firstSeen > uint32(LockTimeout/time.Second)
}

// updateLocks rebuilds the lock table from priv/lock after a load. Unlike upstream
// (memdb.c:memdb_update_locks looks the old times up in the new, empty table, so every
// reload restarts every lock's timer) a lock whose checksum did not change keeps its
// first-seen time.
func (db *DB) updateLocks(t *tree) {
	now := db.nowSeconds()
	db.locksMu.Lock()
	defer db.locksMu.Unlock()
	lockDir, _ := t.lookup("priv/lock")
	if lockDir == nil || lockDir.typ != TypeDir {
		return
	}
	fresh := map[string]lockInfo{}
	for name, e := range lockDir.children {
		if e.typ != TypeDir {
			continue
		}
		key := "priv/lock/" + name
		csum := e.lockChecksum()
		if old, ok := db.locks[key]; ok && old.csum == csum {
			fresh[key] = old
		} else {
			fresh[key] = lockInfo{firstSeen: now, csum: csum}
		}
	}
	db.locks = fresh
}
