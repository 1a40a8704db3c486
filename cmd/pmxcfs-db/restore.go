package main

import (
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// restore builds a new database at dbPath from a dump directory. The database is
// built beside the target and only renamed into place after memdb accepted it.
func restore(dbPath, dir string, force bool, out io.Writer) error {
	if fi, err := os.Stat(dir); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if _, err := os.Lstat(dbPath); err == nil {
		if !force {
			return fmt.Errorf("%s exists (use --force to replace it; the old file is kept as .bak-<unix>)", dbPath)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	tmp := dbPath + ".restore-tmp"
	removeDB(tmp)
	defer removeDB(tmp)
	m, err := readMeta(dir)
	if err != nil {
		return err
	}
	if m != nil {
		err = restoreRows(tmp, dir, m)
	} else {
		err = restoreByOps(tmp, dir)
	}
	if err != nil {
		return err
	}
	// Validate exactly as the daemon will load it, and report the checksum.
	db, err := memdb.Open(tmp, memdb.Options{})
	if err != nil {
		return fmt.Errorf("restored database does not load: %w", err)
	}
	sum := db.TreeChecksum()
	if err := db.Close(); err != nil {
		return err
	}

	if _, err := os.Lstat(dbPath); err == nil {
		bak := fmt.Sprintf("%s.bak-%d", dbPath, time.Now().Unix())
		for _, ext := range []string{"", "-wal", "-shm"} {
			if err := os.Rename(dbPath+ext, bak+ext); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		fmt.Fprintf(out, "old database moved to %s\n", bak)
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return err
	}
	fmt.Fprintf(out, "checksum: %s\n", hex.EncodeToString(sum[:]))
	return nil
}

func removeDB(p string) {
	for _, ext := range []string{"", "-wal", "-shm"} {
		os.Remove(p + ext)
	}
}

// readMeta returns the dump's metadata, or nil when there is none or it lacks
// the inode numbers needed to rebuild rows verbatim.
func readMeta(dir string) (*meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", metaName, err)
	}
	for _, e := range m.Entries {
		if e.Inode == 0 || e.Version == 0 {
			return nil, nil
		}
	}
	return &m, nil
}

// restoreRows writes the recorded rows verbatim, so inode numbers, versions and
// hence the tree checksum are those of the dumped database.
func restoreRows(dbFile, dir string, m *meta) error {
	entries := append([]metaEntry(nil), m.Entries...)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Inode < entries[j].Inode })
	sq, err := sql.Open("sqlite3", "file:"+strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(dbFile)+"?mode=rwc")
	if err != nil {
		return err
	}
	defer sq.Close()
	tx, err := sq.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(memdb.TreeSchema); err != nil {
		return err
	}
	const ins = "INSERT INTO tree (inode, parent, version, writer, mtime, type, name, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
	for _, e := range entries {
		if e.Path == "" || path.Clean(e.Path) != e.Path || strings.HasPrefix(e.Path, "/") || strings.HasPrefix(e.Path, "..") {
			return fmt.Errorf("%s: bad path %q", metaName, e.Path)
		}
		typ := memdb.TypeDir
		var data any
		switch e.Type {
		case "dir":
		case "file":
			typ = memdb.TypeReg
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(e.Path)))
			if err != nil {
				return err
			}
			if len(b) > 0 {
				data = b
			}
		default:
			return fmt.Errorf("%s: %s has unknown type %q", metaName, e.Path, e.Type)
		}
		if _, err := tx.Exec(ins, int64(e.Inode), int64(e.Parent), int64(e.Version), int64(e.Writer),
			int64(e.Mtime), typ, path.Base(e.Path), data); err != nil {
			return fmt.Errorf("inode %d (%s): %w", e.Inode, e.Path, err)
		}
	}
	if _, err := tx.Exec(ins, 0, 0, int64(m.Root.Version), int64(m.Root.Writer), int64(m.Root.Mtime),
		memdb.TypeReg, "__version__", nil); err != nil {
		return err
	}
	return tx.Commit()
}

// restoreByOps recreates a plain directory tree through memdb's own operations
// (writer 0, host mtimes), in lexical order; inode numbers are new.
func restoreByOps(dbFile, dir string) error {
	db, err := memdb.Open(dbFile, memdb.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	var dirs []string
	dirMtime := map[string]uint32{}
	err = filepath.WalkDir(dir, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, hp)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == metaName {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		mtime := uint32(fi.ModTime().Unix())
		switch {
		case fi.IsDir():
			dirs = append(dirs, rel)
			dirMtime[rel] = mtime
			return db.Mkdir(rel, 0, mtime)
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(hp)
			if err != nil {
				return err
			}
			if err := db.Create(rel, 0, mtime); err != nil {
				return fmt.Errorf("create /%s: %w", rel, err)
			}
			if len(data) > 0 {
				if _, err := db.Write(rel, 0, data, true, 0, mtime); err != nil {
					return fmt.Errorf("write /%s: %w", rel, err)
				}
			}
			return nil
		default:
			return fmt.Errorf("%s: only directories and regular files can be restored", hp)
		}
	})
	if err != nil {
		return err
	}
	// Deepest first, so a parent's recorded mtime is the last word.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := db.Mtime(dirs[i], 0, dirMtime[dirs[i]]); err != nil {
			return fmt.Errorf("mtime /%s: %w", dirs[i], err)
		}
	}
	return nil
}
