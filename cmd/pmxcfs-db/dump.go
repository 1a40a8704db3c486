package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// metaName is the metadata file a dump writes next to the tree.
const metaName = ".pmxcfs-meta.json"

// meta records what the plain files cannot: the identity and history fields of
// every entry, so that restore reproduces the same tree checksum.
type meta struct {
	Root    metaRoot    `json:"root"`
	Entries []metaEntry `json:"entries"`
}

type metaRoot struct {
	Version uint64 `json:"version"`
	Writer  uint32 `json:"writer"`
	Mtime   uint32 `json:"mtime"`
}

type metaEntry struct {
	Path    string `json:"path"`
	Type    string `json:"type"` // "dir" or "file"
	Inode   uint64 `json:"inode"`
	Parent  uint64 `json:"parent"`
	Version uint64 `json:"version"`
	Writer  uint32 `json:"writer"`
	Mtime   uint32 `json:"mtime"`
}

// dump writes the database's tree into dir, which must be empty or absent.
func dump(dbPath, dir string, out io.Writer) error {
	if err := requireEmptyDir(dir); err != nil {
		return err
	}
	if _, err := os.Stat(dbPath); err != nil {
		return err
	}
	db, cleanup, err := openCopy(dbPath)
	if err != nil {
		return err
	}
	defer cleanup()
	root := db.Root()
	m := meta{Root: metaRoot{Version: root.Version, Writer: root.Writer, Mtime: root.Mtime}}
	if err := dumpDir(db, "", dir, &m); err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, metaName), append(b, '\n'), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(out, "dumped %d entries to %s\n", len(m.Entries), dir)
	return nil
}

func requireEmptyDir(dir string) error {
	list, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return err
	}
	if len(list) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// dumpDir copies the children of the tree directory rel into the host directory
// host; mtimes are set after the contents, since writing children changes them.
func dumpDir(db *memdb.DB, rel, host string, m *meta) error {
	children, err := db.ReadDir(rel)
	if err != nil {
		return fmt.Errorf("reading /%s: %w", rel, err)
	}
	for _, e := range children {
		p := path.Join(rel, e.Name)
		hp := filepath.Join(host, e.Name)
		me := metaEntry{Path: p, Inode: e.Inode, Parent: e.Parent, Version: e.Version, Writer: e.Writer, Mtime: e.Mtime}
		if e.IsDir() {
			me.Type = "dir"
			if err := os.Mkdir(hp, 0o755); err != nil {
				return err
			}
			m.Entries = append(m.Entries, me)
			if err := dumpDir(db, p, hp, m); err != nil {
				return err
			}
		} else {
			me.Type = "file"
			data, err := db.ReadFile(p)
			if err != nil {
				return fmt.Errorf("reading /%s: %w", p, err)
			}
			if err := os.WriteFile(hp, data, 0o640); err != nil {
				return err
			}
			m.Entries = append(m.Entries, me)
		}
		t := time.Unix(int64(e.Mtime), 0)
		if err := os.Chtimes(hp, t, t); err != nil {
			return err
		}
	}
	return nil
}
