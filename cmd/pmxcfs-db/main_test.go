package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/internal/fixtures"
	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// fixtureCopy copies the upstream-made database into a fresh directory.
func fixtureCopy(t *testing.T) (dbPath, fixtureDir string) {
	t.Helper()
	fixtureDir = filepath.Dir(fixtures.Path(t, "upstream-9.1.6-local", "config.db"))
	dbPath = filepath.Join(t.TempDir(), "config.db")
	if err := copyFile(filepath.Join(fixtureDir, "config.db"), dbPath); err != nil {
		t.Fatal(err)
	}
	return dbPath, fixtureDir
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if rc := run(args, &out, &errb); rc != 0 {
		t.Fatalf("pmxcfs-db %v: exit %d: %s", args, rc, errb.String())
	}
	return out.String()
}

// manifest reads the fixture's listing: path -> "dir" or "<sha256> <size>".
func manifest(t *testing.T, fixtureDir string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtureDir, "manifest.txt"))
	if err != nil {
		t.Skipf("no manifest: %v", err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		switch {
		case len(fl) == 3 && fl[0] == "dir":
			want[fl[2]] = "dir"
		case len(fl) == 4:
			want[fl[3]] = fl[0] + " " + fl[2]
		default:
			t.Fatalf("unexpected manifest line %q", sc.Text())
		}
	}
	delete(want, "MNT")
	return want
}

// listing describes a dump directory in the manifest's terms.
func listing(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == metaName {
			return nil
		}
		key := "MNT/" + filepath.ToSlash(rel)
		if d.IsDir() {
			got[key] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		got[key] = fmt.Sprintf("%s %d", hex.EncodeToString(sum[:]), len(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func compareMaps(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %s = %q, want %q", what, k, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %s", what, k)
		}
	}
}

func openState(t *testing.T, dbPath string) (sum [32]byte, vms memdb.VMList) {
	t.Helper()
	db, cleanup, err := openCopy(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	return db.TreeChecksum(), db.VMList()
}

func TestDumpMatchesUpstreamManifest(t *testing.T) {
	dbPath, fixtureDir := fixtureCopy(t)
	out := filepath.Join(t.TempDir(), "dump")
	runOK(t, "dump", "--db", dbPath, out)
	compareMaps(t, "dump", listing(t, out), manifest(t, fixtureDir))

	// File mtimes come from the entries.
	db, cleanup, err := openCopy(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	e, err := db.Lookup("nodes/node1/qemu-server/100.conf")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(out, "nodes/node1/qemu-server/100.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.ModTime().Unix() != int64(e.Mtime) {
		t.Errorf("mtime %d, want %d", fi.ModTime().Unix(), e.Mtime)
	}

	var errb bytes.Buffer
	if rc := run([]string{"dump", "--db", dbPath, out}, &bytes.Buffer{}, &errb); rc != 1 {
		t.Errorf("dump into a non-empty directory: exit %d, want 1", rc)
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	dbPath, fixtureDir := fixtureCopy(t)
	want := manifest(t, fixtureDir)
	origSum, origVMs := openState(t, dbPath)
	out := filepath.Join(t.TempDir(), "dump")
	runOK(t, "dump", "--db", dbPath, out)

	// With metadata the rows come back verbatim: same inodes, same checksum.
	newDB := filepath.Join(t.TempDir(), "sub", "config.db")
	res := runOK(t, "restore", "--db", newDB, out)
	sum, vms := openState(t, newDB)
	if sum != origSum {
		t.Errorf("restored checksum %x, want %x", sum, origSum)
	}
	if !strings.Contains(res, hex.EncodeToString(origSum[:])) {
		t.Errorf("restore output %q lacks the checksum", res)
	}
	if !reflect.DeepEqual(vms, origVMs) {
		t.Errorf("restored VM list %+v, want %+v", vms, origVMs)
	}
	again := filepath.Join(t.TempDir(), "again")
	runOK(t, "dump", "--db", newDB, again)
	compareMaps(t, "restored", listing(t, again), want)

	// A second restore needs --force and keeps the old file.
	var errb bytes.Buffer
	if rc := run([]string{"restore", "--db", newDB, out}, &bytes.Buffer{}, &errb); rc != 1 {
		t.Errorf("restore over an existing database: exit %d, want 1", rc)
	}

	// Without metadata the tree is rebuilt through memdb's operations.
	if err := os.Remove(filepath.Join(out, metaName)); err != nil {
		t.Fatal(err)
	}
	runOK(t, "restore", "--force", "--db", newDB, out)
	baks, _ := filepath.Glob(newDB + ".bak-*")
	if len(baks) != 1 {
		t.Errorf("backups %v, want one", baks)
	}
	_, vms = openState(t, newDB)
	if len(vms.VMs) != len(origVMs.VMs) {
		t.Errorf("plain restore: %d VMs, want %d", len(vms.VMs), len(origVMs.VMs))
	}
	for id, vm := range origVMs.VMs {
		if got := vms.VMs[id]; got.Node != vm.Node || got.Type != vm.Type {
			t.Errorf("plain restore: VM %d = %+v, want %+v", id, got, vm)
		}
	}
	third := filepath.Join(t.TempDir(), "third")
	runOK(t, "dump", "--db", newDB, third)
	compareMaps(t, "plain restore", listing(t, third), want)
}

func TestCheck(t *testing.T) {
	dbPath, _ := fixtureCopy(t)
	out := runOK(t, "check", "--db", dbPath)
	// The fixture holds VMs 100, 101 and 200 (manifest.txt).
	for _, w := range []string{"vms: 3\n", "\nok\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("check output %q lacks %q", out, w)
		}
	}
}

func TestCheckRefusesCorruptWithoutTouchingIt(t *testing.T) {
	dbPath, _ := fixtureCopy(t)
	good, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": good[:len(good)/3],
		"garbage":   bytes.Repeat([]byte("not a database "), 300),
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.db")
			if err := os.WriteFile(p, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			if rc := run([]string{"check", "--db", p}, &out, &errb); rc != 1 {
				t.Fatalf("exit %d, want 1; out %q", rc, out.String())
			}
			after, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(after, bad) {
				t.Errorf("check modified the file (err %v)", err)
			}
			list, _ := os.ReadDir(filepath.Dir(p))
			if len(list) != 1 {
				t.Errorf("check left files behind: %v", list)
			}
		})
	}
}

func TestRefusesWhileLocked(t *testing.T) {
	dbPath, _ := fixtureCopy(t)
	dumpDir := filepath.Join(t.TempDir(), "dump")
	runOK(t, "dump", "--db", dbPath, dumpDir)

	lock, err := os.OpenFile(lockPath(dbPath), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"dump", "--db", dbPath, filepath.Join(t.TempDir(), "d")},
		{"restore", "--force", "--db", dbPath, dumpDir},
	} {
		var out, errb bytes.Buffer
		if rc := run(args, &out, &errb); rc != 1 || !strings.Contains(errb.String(), errRunning.Error()) {
			t.Errorf("%v while locked: exit %d, stderr %q", args, rc, errb.String())
		}
	}
	if baks, _ := filepath.Glob(dbPath + ".bak-*"); len(baks) != 0 {
		t.Errorf("restore moved the live database: %v", baks)
	}
	out := runOK(t, "check", "--db", dbPath)
	if !strings.Contains(out, "pmxcfs is running") || !strings.Contains(out, "ok") {
		t.Errorf("check on a locked database: %q", out)
	}
}
