package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
)

// The resync database is built without any daemon: a tree in the dump format of
// `pmxcfs-db dump` (plain files plus .pmxcfs-meta.json with every entry's inode, parent and
// version), turned into a config.db by `pmxcfs-db restore` in one transaction.

const resyncTop = "bench-resync"

type dumpMeta struct {
	Root    dumpRoot    `json:"root"`
	Entries []dumpEntry `json:"entries"`
}

type dumpRoot struct {
	Version uint64 `json:"version"`
	Writer  uint32 `json:"writer"`
	Mtime   uint32 `json:"mtime"`
}

type dumpEntry struct {
	Path    string `json:"path"`
	Type    string `json:"type"`
	Inode   uint64 `json:"inode"`
	Parent  uint64 `json:"parent"`
	Version uint64 `json:"version"`
	Writer  uint32 `json:"writer"`
	Mtime   uint32 `json:"mtime"`
}

// resyncLayout plans a tree of exactly entries entries: corosync.conf, the directory
// resyncTop, and below it directories of about 500 files of size bytes each. Inodes are handed
// out in creation order and every version equals its inode, as a daemon creating the tree
// one entry at a time would leave them.
type resyncLayout struct {
	meta     dumpMeta
	files    []string // paths of the regular files below resyncTop, in inode order
	below    int      // entries below resyncTop
	marker   string   // the file with the highest inode: the last one a resync sends
	markerIx int
}

func planResync(entries int, mtime uint32) (resyncLayout, error) {
	if entries < 4 {
		return resyncLayout{}, fmt.Errorf("resync needs at least 4 entries, not %d", entries)
	}
	var l resyncLayout
	inode := uint64(0)
	add := func(p, typ string, parent uint64) uint64 {
		inode++
		l.meta.Entries = append(l.meta.Entries, dumpEntry{Path: p, Type: typ, Inode: inode, Parent: parent, Version: inode, Writer: 1, Mtime: mtime})
		return inode
	}
	add("corosync.conf", "file", 0)
	top := add(resyncTop, "dir", 0)
	rest := entries - 2
	dirs := max(1, rest/501)
	files := rest - dirs
	perDir := (files + dirs - 1) / dirs
	for d := range dirs {
		dp := path.Join(resyncTop, fmt.Sprintf("d%03d", d))
		dino := add(dp, "dir", top)
		for k := 0; k < perDir && len(l.files) < files; k++ {
			fp := path.Join(dp, fmt.Sprintf("f%05d.cfg", len(l.files)))
			add(fp, "file", dino)
			l.files = append(l.files, fp)
		}
	}
	l.meta.Root = dumpRoot{Version: inode, Writer: 1, Mtime: mtime}
	l.below = entries - 2
	l.markerIx = len(l.files) - 1
	l.marker = l.files[l.markerIx]
	return l, nil
}

// buildResyncDB writes the planned tree to work/dump and restores it into work/config.db
// with dbtool; corosync.conf holds conf, the bench's own, so that no daemon replaces it.
func buildResyncDB(work, dbtool string, l resyncLayout, size int, conf []byte) (string, error) {
	dump := filepath.Join(work, "dump")
	if err := os.MkdirAll(dump, 0o755); err != nil {
		return "", err
	}
	for _, e := range l.meta.Entries {
		hp := filepath.Join(dump, filepath.FromSlash(e.Path))
		switch {
		case e.Type == "dir":
			if err := os.Mkdir(hp, 0o755); err != nil {
				return "", err
			}
		case e.Path == "corosync.conf":
			if err := os.WriteFile(hp, conf, 0o640); err != nil {
				return "", err
			}
		}
	}
	for i, p := range l.files {
		if err := os.WriteFile(filepath.Join(dump, filepath.FromSlash(p)), content(size, i), 0o640); err != nil {
			return "", err
		}
	}
	meta, err := json.Marshal(l.meta)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dump, ".pmxcfs-meta.json"), meta, 0o600); err != nil {
		return "", err
	}
	db := filepath.Join(work, "db", "config.db")
	if out, err := exec.Command(dbtool, "restore", "--db", db, dump).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s restore: %v\n%s", dbtool, err, out)
	}
	// Workloads copy the database file alone.
	if fi, err := os.Stat(db + "-wal"); err == nil && fi.Size() > 0 {
		return "", fmt.Errorf("%s restore left a write-ahead log beside %s", dbtool, db)
	}
	return db, os.RemoveAll(dump)
}
