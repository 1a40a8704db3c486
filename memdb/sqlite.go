package memdb

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// createTableSQL is upstream's statement, byte for byte: `sqlite3 .schema` shows it.
const createTableSQL = "CREATE TABLE IF NOT EXISTS tree (" +
	"  inode INTEGER PRIMARY KEY NOT NULL," +
	"  parent INTEGER NOT NULL CHECK(typeof(parent)=='integer')," +
	"  version INTEGER NOT NULL CHECK(typeof(version)=='integer')," +
	"  writer INTEGER NOT NULL CHECK(typeof(writer)=='integer')," +
	"  mtime INTEGER NOT NULL CHECK(typeof(mtime)=='integer')," +
	"  type INTEGER NOT NULL CHECK(typeof(type)=='integer')," +
	"  name TEXT NOT NULL," +
	"  data BLOB);"

// TreeSchema is the upstream table layout, for tools that write a database directly
// (pmxcfs-db restore); `sqlite3 .schema` shows it as upstream's.
const TreeSchema = createTableSQL

const (
	loadAllSQL = "SELECT inode, parent, version, writer, mtime, type, name, data FROM tree;"
	insertSQL  = "INSERT INTO tree (inode, parent, version, writer, mtime, type, name, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8);"
	replaceSQL = "REPLACE INTO tree (inode, parent, version, writer, mtime, type, name, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8);"
	deleteSQL  = "DELETE FROM tree WHERE inode = ?1;"
)

// backend is the SQLite side: one connection, prepared statements, one transaction
// per change (§2.2).
type backend struct {
	db                      *sql.DB
	insert, replace, delete *sql.Stmt
}

func sqliteURI(path string, query string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?" + query
}

// validateExisting loads an existing file through a read-only connection, so that a
// database we are going to refuse is never touched. It reports whether the file is an
// empty SQLite database (no tables at all), which is initialised like a new one.
func validateExisting(path string) (empty bool, err error) {
	db, err := sql.Open("sqlite3", sqliteURI(path, "mode=ro"))
	if err != nil {
		return false, err
	}
	// A read-only connection to a WAL database creates empty -wal and -shm files it
	// cannot remove; remove the ones that were not there before.
	var created []string
	for _, ext := range []string{"-wal", "-shm"} {
		if _, err := os.Lstat(path + ext); errors.Is(err, fs.ErrNotExist) {
			created = append(created, path+ext)
		}
	}
	defer func() {
		db.Close()
		for _, p := range created {
			if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && (fi.Size() == 0 || strings.HasSuffix(p, "-shm")) {
				os.Remove(p)
			}
		}
	}()
	var tables int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master WHERE type='table'").Scan(&tables); err != nil {
		return false, fmt.Errorf("not a readable SQLite database: %w", err)
	}
	var hasTree int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='tree'").Scan(&hasTree); err != nil {
		return false, err
	}
	if hasTree == 0 {
		if tables == 0 {
			return true, nil
		}
		return false, errors.New("database has tables but no 'tree' table")
	}
	rows, err := loadRows(db)
	if err != nil {
		return false, err
	}
	t, err := buildTree(rows)
	if err != nil {
		return false, err
	}
	if _, err := buildVMList(t, nil); err != nil {
		return false, err
	}
	return false, nil
}

// openBackend opens (creating if needed) the database file with upstream's settings.
func openBackend(path string) (*backend, error) {
	db, err := sql.Open("sqlite3", sqliteURI(path, "mode=rwc&_busy_timeout=10000"))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	fail := func(what string, err error) (*backend, error) {
		db.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := db.Ping(); err != nil {
		return fail("sqlite open", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail("chmod", err)
	}
	if _, err := db.Exec("PRAGMA journal_mode=WAL;"); err != nil {
		return fail("unable to set WAL mode", err)
	}
	if _, err := db.Exec("PRAGMA synchronous=NORMAL"); err != nil {
		return fail("unable to set synchronous mode", err)
	}
	if _, err := db.Exec(createTableSQL); err != nil {
		return fail("init database", err)
	}
	b := &backend{db: db}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{{&b.insert, insertSQL}, {&b.replace, replaceSQL}, {&b.delete, deleteSQL}} {
		if *p.stmt, err = db.Prepare(p.sql); err != nil {
			b.close()
			return nil, fmt.Errorf("prepare %q: %w", p.sql, err)
		}
	}
	return b, nil
}

func (b *backend) close() error {
	for _, s := range []*sql.Stmt{b.insert, b.replace, b.delete} {
		if s != nil {
			s.Close()
		}
	}
	return b.db.Close()
}

type querier interface {
	Query(query string, args ...any) (*sql.Rows, error)
}

// loadRows reads the whole table, converting columns the way upstream does
// (writer and mtime to 32 bits, type to 8 bits, the name up to its first NUL).
func loadRows(q querier) ([]row, error) {
	rs, err := q.Query(loadAllSQL)
	if err != nil {
		return nil, fmt.Errorf("select returned error: %w", err)
	}
	defer rs.Close()
	var rows []row
	for rs.Next() {
		var inode, parent, version, writer, mtime, typ int64
		var name, data []byte
		if err := rs.Scan(&inode, &parent, &version, &writer, &mtime, &typ, &name, &data); err != nil {
			return nil, fmt.Errorf("reading row: %w", err)
		}
		if i := strings.IndexByte(string(name), 0); i >= 0 {
			name = name[:i]
		}
		rows = append(rows, row{inode: uint64(inode), parent: uint64(parent), version: uint64(version),
			writer: uint32(writer), mtime: uint32(mtime), typ: uint8(typ), name: string(name), data: data})
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("select returned error: %w", err)
	}
	return rows, nil
}

// rootState is what the __version__ row holds.
type rootState struct {
	version       uint64
	writer, mtime uint32
}

// blob maps an entry's data to what upstream binds: NULL for a missing buffer,
// an empty blob for a directory that went through mtime or rename.
func blobArg(data []byte) any {
	if data == nil {
		return nil
	}
	return data
}

// write stores one change (§2.2.1): optionally delete an inode, optionally write one
// row, then the version row; in one transaction unless only the version row changes.
func (b *backend) write(r *row, deleteInode uint64, root rootState) (err error) {
	if r == nil && deleteInode == 0 {
		_, err = b.replace.Exec(0, 0, int64(root.version), int64(root.writer), int64(root.mtime), TypeReg, versionRowName, nil)
		return err
	}
	tx, err := b.db.Begin()
	if err != nil {
		return fmt.Errorf("begin transaction failed: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if deleteInode != 0 {
		if _, err = tx.Stmt(b.delete).Exec(int64(deleteInode)); err != nil {
			return fmt.Errorf("delete inode %d: %w", deleteInode, err)
		}
	}
	if r != nil {
		stmt := b.replace
		if r.inode > r.version {
			stmt = b.insert
		}
		res, err := tx.Stmt(stmt).Exec(int64(r.inode), int64(r.parent), int64(r.version), int64(r.writer),
			int64(r.mtime), int64(r.typ), r.name, blobArg(r.data))
		if err != nil {
			return fmt.Errorf("write inode %d: %w", r.inode, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("no such inode %016X", r.inode)
		}
	}
	if _, err = tx.Stmt(b.replace).Exec(0, 0, int64(root.version), int64(root.writer), int64(root.mtime), TypeReg, versionRowName, nil); err != nil {
		return fmt.Errorf("write version row: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit transaction failed: %w", err)
	}
	return nil
}
