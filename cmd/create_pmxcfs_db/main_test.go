package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// Like upstream, only regular files at the top level of the directory are imported.
func TestSeedImportsTopLevelFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "storage.cfg"), []byte("dir: local\n"), 0644)
	os.WriteFile(filepath.Join(dir, "empty.cfg"), nil, 0644)
	os.Mkdir(filepath.Join(dir, "sub"), 0755)
	os.WriteFile(filepath.Join(dir, "sub", "x.cfg"), []byte("x"), 0644)
	dbPath := filepath.Join(t.TempDir(), "config.db")
	if err := seed(dir, dbPath); err != nil {
		t.Fatal(err)
	}
	db, err := memdb.Open(dbPath, memdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	entries, err := db.ReadDir("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if len(names) != 2 || names[0] != "empty.cfg" || names[1] != "storage.cfg" {
		t.Fatalf("imported %v, want [empty.cfg storage.cfg]", names)
	}
	if data, err := db.ReadFile("storage.cfg"); err != nil || string(data) != "dir: local\n" {
		t.Errorf("storage.cfg = %q, %v", data, err)
	}
	if e, _ := db.Lookup("storage.cfg"); e.Writer != 0 {
		t.Errorf("writer %d, want 0", e.Writer)
	}
	if err := seed(filepath.Join(dir, "missing"), dbPath); err == nil {
		t.Error("a missing directory was accepted")
	}
}
