package memdb

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	sqlite3 "github.com/mattn/go-sqlite3"
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

// backend is the SQLite side: one connection of the driver's own API with prepared
// statements. database/sql is not used on the write path: its per-transaction
// machinery (connection checkout, Tx.Stmt re-preparation, a goroutine watching each
// transaction's context) cost more than the SQLite work of a small change
// (docs/write-path.md). Callers serialise all use (memdb's wmu).
type backend struct {
	conn *sqlite3.SQLiteConn
	// The statements of a change; BEGIN and COMMIT are prepared too, so a change costs
	// no SQL parsing at all.
	insert, replace, del, begin, commit, rollback *sqlite3.SQLiteStmt
	// inTx: a transaction is open. gen numbers the open (or next) transaction and
	// committed is the last one committed, so a writer can tell whether the one it
	// staged into is durable.
	inTx           bool
	gen, committed uint64
}

func sqliteURI(path string, query string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?" + query
}

// openConn opens one driver connection.
func openConn(path, query string) (*sqlite3.SQLiteConn, error) {
	c, err := (&sqlite3.SQLiteDriver{}).Open(sqliteURI(path, query))
	if err != nil {
		return nil, err
	}
	return c.(*sqlite3.SQLiteConn), nil
}

// execSQL runs one statement that returns no rows.
func execSQL(c *sqlite3.SQLiteConn, query string) error {
	_, err := c.Exec(query, nil)
	return err
}

// queryInt runs a query whose first row's first column is an integer.
func queryInt(c *sqlite3.SQLiteConn, query string) (int64, error) {
	rows, err := c.Query(query, nil)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(dest); err != nil {
		return 0, err
	}
	n, ok := dest[0].(int64)
	if !ok {
		return 0, fmt.Errorf("%q: not an integer", query)
	}
	return n, nil
}

// validateExisting loads an existing file through a read-only connection, so that a
// database we are going to refuse is never touched. It reports whether the file is an
// empty SQLite database (no tables at all), which is initialised like a new one.
func validateExisting(path string) (empty bool, err error) {
	// A read-only connection to a WAL database creates empty -wal and -shm files it
	// cannot remove; remove the ones that were not there before.
	var created []string
	for _, ext := range []string{"-wal", "-shm"} {
		if _, err := os.Lstat(path + ext); errors.Is(err, fs.ErrNotExist) {
			created = append(created, path+ext)
		}
	}
	c, err := openConn(path, "mode=ro")
	if err != nil {
		return false, fmt.Errorf("not a readable SQLite database: %w", err)
	}
	defer func() {
		c.Close()
		for _, p := range created {
			if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && (fi.Size() == 0 || strings.HasSuffix(p, "-shm")) {
				os.Remove(p)
			}
		}
	}()
	tables, err := queryInt(c, "SELECT count(*) FROM sqlite_master WHERE type='table'")
	if err != nil {
		return false, fmt.Errorf("not a readable SQLite database: %w", err)
	}
	hasTree, err := queryInt(c, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='tree'")
	if err != nil {
		return false, err
	}
	if hasTree == 0 {
		if tables == 0 {
			return true, nil
		}
		return false, errors.New("database has tables but no 'tree' table")
	}
	rows, err := loadRows(c)
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
	c, err := openConn(path, "mode=rwc&_busy_timeout=10000")
	if err != nil {
		return nil, fmt.Errorf("sqlite open: %w", err)
	}
	b := &backend{conn: c, gen: 1}
	fail := func(what string, err error) (*backend, error) {
		b.close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail("chmod", err)
	}
	if err := execSQL(c, "PRAGMA journal_mode=WAL;"); err != nil {
		return fail("unable to set WAL mode", err)
	}
	if err := execSQL(c, "PRAGMA synchronous=NORMAL"); err != nil {
		return fail("unable to set synchronous mode", err)
	}
	if err := execSQL(c, createTableSQL); err != nil {
		return fail("init database", err)
	}
	for _, p := range []struct {
		stmt **sqlite3.SQLiteStmt
		sql  string
	}{{&b.insert, insertSQL}, {&b.replace, replaceSQL}, {&b.del, deleteSQL},
		{&b.begin, "BEGIN"}, {&b.commit, "COMMIT"}, {&b.rollback, "ROLLBACK"}} {
		s, err := c.Prepare(p.sql)
		if err != nil {
			return fail(fmt.Sprintf("prepare %q", p.sql), err)
		}
		*p.stmt = s.(*sqlite3.SQLiteStmt)
	}
	return b, nil
}

func (b *backend) close() error {
	for _, s := range []*sqlite3.SQLiteStmt{b.insert, b.replace, b.del, b.begin, b.commit, b.rollback} {
		if s != nil {
			s.Close()
		}
	}
	return b.conn.Close()
}

// loadRows reads the whole table, converting columns the way upstream does
// (writer and mtime to 32 bits, type to 8 bits, the name up to its first NUL).
func loadRows(c *sqlite3.SQLiteConn) ([]row, error) {
	rs, err := c.Query(loadAllSQL, nil)
	if err != nil {
		return nil, fmt.Errorf("select returned error: %w", err)
	}
	defer rs.Close()
	var rows []row
	dest := make([]driver.Value, 8)
	for {
		if err := rs.Next(dest); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("select returned error: %w", err)
		}
		var ints [6]int64
		for i := range ints {
			v, ok := dest[i].(int64)
			if !ok {
				return nil, fmt.Errorf("reading row: column %d is %T, not an integer", i, dest[i])
			}
			ints[i] = v
		}
		name, data := bytesOf(dest[6]), bytesOf(dest[7])
		rows = append(rows, row{inode: uint64(ints[0]), parent: uint64(ints[1]), version: uint64(ints[2]),
			writer: uint32(ints[3]), mtime: uint32(ints[4]), typ: uint8(ints[5]), name: cString(string(name)), data: data})
	}
	return rows, nil
}

// cString is name up to its first NUL, as upstream reads a name from the table.
func cString(name string) string {
	if i := strings.IndexByte(name, 0); i >= 0 {
		return name[:i]
	}
	return name
}

// bytesOf is a TEXT or BLOB column as bytes (nil for NULL), as upstream reads both.
func bytesOf(v driver.Value) []byte {
	switch v := v.(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	case nil:
		return nil
	default:
		return []byte(fmt.Sprint(v))
	}
}

// rootState is what the __version__ row holds.
type rootState struct {
	version       uint64
	writer, mtime uint32
}

// blob maps an entry's data to what upstream binds: NULL for a missing buffer,
// an empty blob for a directory that went through mtime or rename.
func blobArg(data []byte) driver.Value {
	if data == nil {
		return nil
	}
	return data
}

func (b *backend) exec(s *sqlite3.SQLiteStmt, args ...driver.Value) (int64, error) {
	res, err := s.Exec(args)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// beginTx opens the transaction that following stage calls write into.
func (b *backend) beginTx() error {
	if b.inTx {
		return nil
	}
	if _, err := b.exec(b.begin); err != nil {
		return fmt.Errorf("begin transaction failed: %w", err)
	}
	b.inTx = true
	return nil
}

// commitTx commits the open transaction, if any.
func (b *backend) commitTx() error {
	if !b.inTx {
		return nil
	}
	b.inTx = false
	b.gen++
	if _, err := b.exec(b.commit); err != nil {
		b.exec(b.rollback)
		return fmt.Errorf("commit transaction failed: %w", err)
	}
	b.committed = b.gen - 1
	return nil
}

// rollbackTx abandons the open transaction, if any.
func (b *backend) rollbackTx() {
	if b.inTx {
		b.inTx = false
		b.gen++
		b.exec(b.rollback)
	}
}

// stage writes one change into the open transaction (upstream database.c:
// db_backend_write): optionally delete an inode, optionally write one row, then the
// version row.
func (b *backend) stage(r *row, deleteInode uint64, root rootState) error {
	if err := b.beginTx(); err != nil {
		return err
	}
	if deleteInode != 0 {
		if _, err := b.exec(b.del, int64(deleteInode)); err != nil {
			return fmt.Errorf("delete inode %d: %w", deleteInode, err)
		}
	}
	if r != nil {
		if err := b.putRow(r, r.inode > r.version); err != nil {
			return err
		}
	}
	if _, err := b.exec(b.replace, int64(0), int64(0), int64(root.version), int64(root.writer), int64(root.mtime),
		int64(TypeReg), versionRowName, nil); err != nil {
		return fmt.Errorf("write version row: %w", err)
	}
	return nil
}

// putRow writes one row; insert (refusing an existing inode) or replace.
func (b *backend) putRow(r *row, insert bool) error {
	stmt := b.replace
	if insert {
		stmt = b.insert
	}
	n, err := b.exec(stmt, int64(r.inode), int64(r.parent), int64(r.version), int64(r.writer),
		int64(r.mtime), int64(r.typ), r.name, blobArg(r.data))
	if err != nil {
		return fmt.Errorf("write inode %d: %w", r.inode, err)
	}
	if n != 1 {
		return fmt.Errorf("no such inode %016X", r.inode)
	}
	return nil
}

// write stores one change in a transaction of its own.
func (b *backend) write(r *row, deleteInode uint64, root rootState) error {
	if err := b.stage(r, deleteInode, root); err != nil {
		b.rollbackTx()
		return err
	}
	return b.commitTx()
}

// fileName is the path of the main database file.
func (b *backend) fileName() (string, error) {
	rows, err := b.conn.Query("PRAGMA database_list", nil)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	dest := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(dest); err != nil {
		return "", err
	}
	if f := bytesOf(dest[2]); len(f) > 0 {
		return string(f), nil
	}
	return "", errors.New("database has no file name")
}
