package memdb

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// syncFrom returns what a leader would send to bring a database with none of
// its entries up to date: its index and every record.
func syncFrom(leader *DB) ([]byte, []SyncRecord) {
	idx := leader.Index()
	entries, _ := ParseIndex(idx)
	var recs []SyncRecord
	for _, e := range entries {
		r, _ := leader.Record(e.Inode)
		recs = append(recs, r)
	}
	return idx, recs
}

// reopenedIndex closes db and returns the index of the database file at path, opened anew.
func reopenedIndex(t *testing.T, db *DB, path string) []byte {
	t.Helper()
	db.Close()
	re, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	return re.Index()
}

func TestApplySyncReplacesAndDeletes(t *testing.T) {
	rec := &recorder{}
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	leader, _ := openTemp(t, Options{})
	local, path := openTemp(t, Options{Observer: rec, Now: clk.now})
	must(t, local.Mkdir("only-local", 9, 1))
	must(t, leader.Mkdir("nodes", 1, 2))
	must(t, leader.Create("nodes/f", 1, 3))
	if _, err := leader.Write("nodes/f", 0, []byte("hello"), false, 1, 4); err != nil {
		t.Fatal(err)
	}
	idx, recs := syncFrom(leader)
	before := rec.reloaded
	if err := local.ApplySync(idx, recs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(local.Index(), idx) || local.TreeChecksum() != leader.TreeChecksum() {
		t.Fatal("index differs from the leader's after sync")
	}
	if rec.reloaded != before+1 {
		t.Fatal("observer not told about the reload")
	}
	if got, _ := local.ReadFile("nodes/f"); string(got) != "hello" {
		t.Fatalf("nodes/f = %q", got)
	}
	backups, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "backup", "config-1800000000-presync.db"))
	if len(backups) != 1 {
		t.Fatalf("no pre-sync backup: %v", backups)
	}
	if !bytes.Equal(reopenedIndex(t, local, path), idx) {
		t.Fatal("database on disk differs from the synced tree")
	}
}

// A sync that sends only what differs keeps the other entries: the tree after it holds
// both, equals the leader's, and is what the table holds.
func TestApplySyncKeepsEntriesNotSent(t *testing.T) {
	leader, _ := openTemp(t, Options{})
	local, path := openTemp(t, Options{})
	must(t, leader.Mkdir("d", 1, 1))
	for _, f := range []string{"d/kept", "d/changed", "d/gone"} {
		must(t, leader.Create(f, 1, 2))
		if _, err := leader.Write(f, 0, []byte("v1 "+f), false, 1, 3); err != nil {
			t.Fatal(err)
		}
	}
	idx, recs := syncFrom(leader)
	must(t, local.ApplySync(idx, recs))

	if _, err := leader.Write("d/changed", 0, []byte("v2"), true, 2, 4); err != nil {
		t.Fatal(err)
	}
	must(t, leader.Delete("d/gone", 2, 5))
	must(t, leader.Create("d/new", 2, 6))
	mine := map[uint64][32]byte{}
	entries, _ := ParseIndex(local.Index())
	for _, e := range entries {
		mine[e.Inode] = e.Digest
	}
	idx = leader.Index()
	entries, _ = ParseIndex(idx)
	var differing []SyncRecord
	for _, e := range entries {
		if d, ok := mine[e.Inode]; !ok || d != e.Digest {
			r, _ := leader.Record(e.Inode)
			differing = append(differing, r)
		}
	}
	if len(differing) >= len(entries)-1 {
		t.Fatalf("%d of %d entries differ: the test sends no less than a full sync", len(differing), len(entries))
	}
	must(t, local.ApplySync(idx, differing))
	if !bytes.Equal(local.Index(), idx) {
		t.Fatal("index differs from the leader's after sync")
	}
	for f, want := range map[string]string{"d/kept": "v1 d/kept", "d/changed": "v2", "d/new": ""} {
		if got, err := local.ReadFile(f); err != nil || string(got) != want {
			t.Fatalf("%s = %q, %v; want %q", f, got, err, want)
		}
	}
	if _, err := local.Lookup("d/gone"); err == nil {
		t.Fatal("d/gone survived the sync")
	}
	if !bytes.Equal(reopenedIndex(t, local, path), idx) {
		t.Fatal("database on disk differs from the synced tree")
	}
}

func TestApplySyncMismatchRollsBack(t *testing.T) {
	leader, _ := openTemp(t, Options{})
	local, path := openTemp(t, Options{})
	must(t, leader.Mkdir("a", 1, 2))
	must(t, local.Mkdir("b", 2, 2))
	idx, recs := syncFrom(leader)
	want := local.Index()
	// Drop one record: the new tree's index cannot match.
	if err := local.ApplySync(idx, recs[:len(recs)-1]); err == nil {
		t.Fatal("sync with a missing record succeeded")
	}
	if !local.Failed() || !bytes.Equal(local.Index(), want) {
		t.Fatal("failed sync must keep the old tree and refuse changes")
	}
	if err := local.Mkdir("c", 1, 1); err == nil {
		t.Fatal("change accepted after a failed sync")
	}
	if !bytes.Equal(reopenedIndex(t, local, path), want) {
		t.Fatal("failed sync changed the database file")
	}
}

func TestParseIndexRejectsMalformed(t *testing.T) {
	db, _ := openTemp(t, Options{})
	must(t, db.Mkdir("a", 1, 2))
	idx := db.Index()
	if _, err := ParseIndex(idx); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"short":     idx[:31],
		"truncated": idx[:len(idx)-1],
		"unsorted":  append(append(append([]byte(nil), idx[:32]...), idx[72:112]...), idx[32:72]...),
	} {
		if _, err := ParseIndex(b); err == nil {
			t.Errorf("%s index accepted", name)
		}
	}
}

func TestPruneBackupsKeepsNewest(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 13; i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("config-%d-presync.db", 1000+i*7)), nil, 0o600)
	}
	pruneBackups(dir)
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != presyncBackups || filepath.Base(left[0]) != "config-1021-presync.db" {
		t.Fatalf("kept %v", left)
	}
}

// Readers must not wait for a sync commit: while ApplySync is about to commit (held in
// the test hook, as a slow disk would hold it), the old tree stays readable.
func TestReadersDoNotWaitForSyncCommit(t *testing.T) {
	leader, _ := openTemp(t, Options{})
	local, _ := openTemp(t, Options{})
	must(t, leader.Mkdir("nodes", 1, 2))
	must(t, leader.Create("nodes/f", 1, 3))
	must(t, local.Mkdir("mine", 2, 2))
	idx, recs := syncFrom(leader)

	inCommit, release := make(chan struct{}), make(chan struct{})
	syncCommitHook = func() {
		close(inCommit)
		<-release
	}
	defer func() { syncCommitHook = nil }()
	done := make(chan error, 1)
	go func() { done <- local.ApplySync(idx, recs) }()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	<-inCommit
	readDone := make(chan error, 1)
	go func() {
		_, err := local.Lookup("mine")
		if err == nil {
			_, err = local.ReadDir("")
		}
		local.Index()
		local.TreeChecksum()
		local.Statfs()
		local.VMList()
		readDone <- err
	}()
	// The bound only keeps a hang from lasting until the test binary's timeout.
	select {
	case err := <-readDone:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("reader blocked by the sync commit")
	}
	close(release)
	must(t, <-done)
	if !bytes.Equal(local.Index(), idx) {
		t.Fatal("index differs from the leader's after the sync")
	}
}
