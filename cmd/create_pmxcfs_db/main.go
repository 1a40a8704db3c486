// Command create_pmxcfs_db seeds a pmxcfs database with the regular files at the top level
// of a directory (the Proxmox installer uses it to write the first storage.cfg and friends).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pmxcfs-go/pmxcfs/memdb"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "Usage: create_pmxcfs_db /a/dir /a/filename.db")
		os.Exit(255)
	}
	if err := seed(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(255)
	}
}

func seed(dir, dbPath string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("unable to open dir: %v", err)
	}
	db, err := memdb.Open(dbPath, memdb.Options{})
	if err != nil {
		return fmt.Errorf("unable to open database '%s': %v", dbPath, err)
	}
	defer db.Close()
	now := uint32(time.Now().Unix())
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // upstream skips files it cannot read
		}
		if err := db.Create(e.Name(), 0, now); err != nil {
			return fmt.Errorf("memdb_create '%s' failed: %v", e.Name(), err)
		}
		if n, err := db.Write(e.Name(), 0, data, true, 0, now); err != nil || n != len(data) {
			return fmt.Errorf("memdb_write '%s' failed: %v", e.Name(), err)
		}
	}
	return nil
}
