package memdb

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/internal/fixtures"
)

func upstreamSchema(t *testing.T) string {
	b, err := os.ReadFile(fixtures.Path(t, "upstream-9.1.6-local", "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func copyFile(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	must(t, err)
	dst := filepath.Join(t.TempDir(), "config.db")
	must(t, os.WriteFile(dst, b, 0o644))
	return dst
}

// manifestOf lists the tree the way the fixtures' manifest.txt does, without modes.
func manifestOf(t *testing.T, db *DB) []string {
	var out []string
	var walk func(dir, label string)
	walk = func(dir, label string) {
		out = append(out, "dir "+label)
		ents, err := db.ReadDir(dir)
		must(t, err)
		for _, e := range ents {
			p, l := strings.TrimPrefix(dir+"/"+e.Name, "/"), label+"/"+e.Name
			if e.IsDir() {
				walk(p, l)
				continue
			}
			data, err := db.ReadFile(p)
			must(t, err)
			sum := sha256.Sum256(data)
			out = append(out, fmt.Sprintf("%s %d %s", hex.EncodeToString(sum[:]), len(data), l))
		}
	}
	walk("", "MNT")
	sort.Strings(out)
	return out
}

func readManifest(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	must(t, err)
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if f[0] == "dir" {
			out = append(out, "dir "+f[2])
		} else {
			out = append(out, f[0]+" "+f[2]+" "+f[3])
		}
	}
	sort.Strings(out)
	return out
}

func TestUpstreamLocalFixture(t *testing.T) {
	dir := fixtures.Path(t, "upstream-9.1.6-local")
	path := copyFile(t, filepath.Join(dir, "config.db"))
	db, err := Open(path, Options{})
	must(t, err)
	got, want := manifestOf(t, db), readManifest(t, filepath.Join(dir, "manifest.txt"))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tree differs from manifest:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	vl := db.VMList()
	if vl.VMs[100].Node != "node1" || vl.VMs[100].Type != "qemu" || vl.VMs[200].Type != "lxc" || vl.VMs[101].Node != "node2" || len(vl.VMs) != 3 {
		t.Errorf("vmlist %+v", vl)
	}
	if !db.IsLockDir("priv/lock/storage-local-lvm") {
		t.Error("lock dir")
	}
	idx := db.Index()
	// Writing through our code and reloading must give the same tree back.
	must(t, db.Create("new.txt", 0, 5))
	must(t, db.Delete("new.txt", 0, 6))
	idx2 := db.Index()
	must(t, db.Close())
	db2, err := Open(path, Options{})
	must(t, err)
	defer db2.Close()
	if !bytes.Equal(db2.Index(), idx2) || bytes.Equal(idx, idx2) {
		t.Error("index after reload differs")
	}
}

// lastDCDBState returns the index in the last DCDB STATE a node sent (the wire README
// states it equals the index of that node's final config.db).
func lastDCDBState(t *testing.T, trace string) []byte {
	f, err := os.Open(trace)
	must(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	must(t, err)
	var last []byte
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var ev struct {
			Ev, Group, Data string
		}
		must(t, json.Unmarshal(sc.Bytes(), &ev))
		if ev.Ev != "send" || ev.Group != "pve_dcdb_v1" {
			continue
		}
		b, err := hex.DecodeString(ev.Data)
		must(t, err)
		if len(b) >= 32 && b[0] == 2 && b[1] == 0 { // DFSM type 2 = STATE
			last = b[32:]
		}
	}
	must(t, sc.Err())
	return last
}

func TestUpstreamWireFixtures(t *testing.T) {
	dir := fixtures.Path(t, "upstream-9.1.6-wire")
	want := readManifest(t, filepath.Join(dir, "manifest.txt"))
	var first []byte
	for _, node := range []string{"node1", "node2", "node3"} {
		t.Run(node, func(t *testing.T) {
			db, err := Open(copyFile(t, filepath.Join(dir, "config-"+node+".db")), Options{})
			must(t, err)
			defer db.Close()
			if got := manifestOf(t, db); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("tree differs from manifest:\n%s", strings.Join(got, "\n"))
			}
			idx := db.Index()
			if state := lastDCDBState(t, filepath.Join(dir, node+".jsonl.gz")); !bytes.Equal(idx, state) {
				t.Errorf("index differs from the last DCDB STATE (%d vs %d bytes)", len(idx), len(state))
			}
			if first == nil {
				first = idx
			} else if !bytes.Equal(first, idx) {
				t.Error("indexes differ between nodes")
			}
		})
	}
}

// makeDB writes a database with a raw connection, not through our code.
func makeDB(t *testing.T, schema string, rows ...string) string {
	path := filepath.Join(t.TempDir(), "config.db")
	c, err := sql.Open("sqlite3", path)
	must(t, err)
	defer c.Close()
	if _, err := c.Exec(schema); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if _, err := c.Exec("INSERT INTO tree VALUES (" + r + ")"); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
	}
	return path
}

func TestCorruptDatabasesAreRefusedUntouched(t *testing.T) {
	const version = "0,0,20,0,1,8,'__version__',NULL"
	lax := "CREATE TABLE tree (inode INTEGER PRIMARY KEY, parent, version, writer, mtime, type, name, data)"
	cases := []struct {
		name, schema, wantErr string
		rows                  []string
	}{
		{"empty name", createTableSQL, "no name", []string{version, "3,0,3,0,1,8,'',NULL"}},
		{"null name", lax, "no name", []string{version, "3,0,3,0,1,8,NULL,NULL"}},
		{"dir with data", createTableSQL, "contains data", []string{version, "3,0,3,0,1,4,'d',X'00'"}},
		{"unknown type", createTableSQL, "unknown type", []string{version, "3,0,3,0,1,5,'x',NULL"}},
		{"bad inode 0 name", createTableSQL, "unexpected name", []string{"0,0,20,0,1,8,'foo',NULL"}},
		{"parent not dir", createTableSQL, "not a directory", []string{version, "3,0,3,0,1,8,'f',NULL", "4,3,4,0,1,8,'x',NULL"}},
		{"parent not dir, child first", createTableSQL, "not a directory", []string{version, "4,3,4,0,1,8,'x',NULL", "3,0,3,0,1,8,'f',NULL"}},
		{"duplicate name in a WAL database", "PRAGMA journal_mode=WAL; " + createTableSQL, "duplicate name", []string{version, "3,0,3,0,1,4,'d',NULL", "4,0,4,0,1,8,'d',NULL"}},
		{"duplicate name", createTableSQL, "duplicate name", []string{version, "3,0,3,0,1,4,'d',NULL", "4,0,4,0,1,8,'d',NULL"}},
		{"missing parent", createTableSQL, "missing directory inode 99", []string{version, "4,99,4,0,1,8,'x',NULL"}},
		{"parent loop", createTableSQL, "not reachable", []string{version, "3,4,3,0,1,4,'a',NULL", "4,3,4,0,1,4,'b',NULL"}},
		{"self parent", createTableSQL, "own parent", []string{version, "3,3,3,0,1,4,'a',NULL"}},
		{"version below inode", createTableSQL, "lower than inode", []string{"0,0,3,0,1,8,'__version__',NULL", "9,0,3,0,1,8,'x',NULL"}},
		{"text column", lax, "reading row", []string{version, "3,'abc',3,0,1,8,'x',NULL"}},
		{"other tables only", "CREATE TABLE other (x)", "no 'tree' table", nil},
		{"duplicate VMID", createTableSQL, "duplicate VMID 100", []string{version,
			"2,0,2,0,1,4,'nodes',NULL", "3,2,3,0,1,4,'n1',NULL", "4,2,4,0,1,4,'n2',NULL",
			"5,3,5,0,1,4,'qemu-server',NULL", "6,4,6,0,1,4,'lxc',NULL",
			"7,5,7,0,1,8,'100.conf',X'61'", "8,6,8,0,1,8,'100.conf',X'62'"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := makeDB(t, tc.schema, tc.rows...)
			checkRefused(t, path, tc.wantErr)
		})
	}
	t.Run("not sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.db")
		must(t, os.WriteFile(path, bytes.Repeat([]byte("not a database\n"), 300), 0o644))
		checkRefused(t, path, "not a readable SQLite database")
	})
}

func checkRefused(t *testing.T, path, wantErr string) {
	t.Helper()
	before, err := os.ReadFile(path)
	must(t, err)
	fi, _ := os.Stat(path)
	db, err := Open(path, Options{})
	if err == nil {
		db.Close()
		t.Fatal("corrupt database was opened")
	}
	if !strings.Contains(err.Error(), wantErr) {
		t.Errorf("error %q does not mention %q", err, wantErr)
	}
	after, _ := os.ReadFile(path)
	fi2, _ := os.Stat(path)
	if !bytes.Equal(before, after) || fi.Mode() != fi2.Mode() {
		t.Error("refused database was modified")
	}
	for _, ext := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Stat(path + ext); err == nil {
			t.Errorf("%s left behind", ext)
		}
	}
}

func TestPlaceholderRowsInAnyOrder(t *testing.T) {
	// Children before parents, the version row last, and a sync-written version row of type 4.
	path := makeDB(t, createTableSQL, "5,4,5,0,1,8,'f',X'6869'", "4,3,4,0,1,4,'c',NULL",
		"3,0,3,0,1,4,'b',X''", "0,0,9,2,77,4,'__version__',NULL")
	db, err := Open(path, Options{})
	must(t, err)
	defer db.Close()
	if d, err := db.ReadFile("b/c/f"); err != nil || string(d) != "hi" {
		t.Fatalf("%q %v", d, err)
	}
	if r := db.Root(); r.Version != 9 || r.Writer != 2 || r.Mtime != 77 {
		t.Errorf("root %+v", r)
	}
}

func TestEmptyFileBecomesNewDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.db")
	must(t, os.WriteFile(path, nil, 0o644))
	db, err := Open(path, Options{})
	must(t, err)
	defer db.Close()
	if db.Root().Version != 1 {
		t.Error("version")
	}
}
