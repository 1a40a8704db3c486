package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// TestRecoverNodeFromCopiedDatabase follows the README's recovery of a node whose config.db
// is damaged: the daemon refuses it, `pmxcfs-db check` says so, a copy taken earlier on a
// healthy member (sqlite3 .backup while that daemon runs) is put in its place, and on rejoin
// the cluster brings the stale copy up to date.
func TestRecoverNodeFromCopiedDatabase(t *testing.T) {
	bin, _ := filepath.Abs(pmxcfsBinary())
	dbTool := filepath.Join(filepath.Dir(bin), "pmxcfs-db")
	if _, err := os.Stat(dbTool); err != nil {
		t.Skipf("no %s (run make build)", dbTool)
	}
	b := startGoCluster(t)
	mustExec(t, b, 1, "mkdir -p /etc/pve/nodes/node1/qemu-server && echo 'memory: 512' > /etc/pve/nodes/node1/qemu-server/100.conf && echo before > /etc/pve/before-copy")
	if !waitFor(10*time.Second, func() bool {
		out, _ := b.Exec(2, "cat", "/etc/pve/before-copy")
		return out == "before\n"
	}) {
		t.Fatal("node 2 did not receive the first write")
	}
	mustExec(t, b, 2, `sqlite3 /var/lib/pve-cluster/config.db ".backup /var/lib/pve-cluster/copy.db"`)
	// Changes made after the copy, which the recovered node must get from the cluster.
	mustExec(t, b, 1, "echo after > /etc/pve/after-copy && rm /etc/pve/before-copy")

	if err := b.Kill(3, bench.Pmxcfs, false); err != nil {
		t.Fatal(err)
	}
	node3DB := filepath.Join(b.NodeDir(3), "var-lib-pve-cluster", "config.db")
	f, err := os.OpenFile(node3DB, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte(strings.Repeat("damaged!", 16)), 0)
	f.Close()
	// In the foreground, so its exit status and message are seen (timeout stops a daemon
	// that wrongly starts).
	out, err := b.Exec(3, "timeout", "20", bin, "-f")
	if err == nil || !strings.Contains(err.Error(), "exit status 255") || !strings.Contains(out, "file is not a database") {
		t.Fatalf("pmxcfs on a damaged database: %v\n%s", err, out)
	}
	t.Logf("pmxcfs refuses the damaged database: %s", strings.TrimSpace(out))
	if out, err := b.Exec(3, dbTool, "check"); err == nil {
		t.Errorf("pmxcfs-db check passes a damaged database:\n%s", out)
	}

	copyDB, err := os.ReadFile(filepath.Join(b.NodeDir(2), "var-lib-pve-cluster", "copy.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(node3DB + suffix)
	}
	if err := os.WriteFile(node3DB, copyDB, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Exec(3, dbTool, "check"); err != nil {
		t.Fatalf("pmxcfs-db check of the copy: %v\n%s", err, out)
	}
	if err := b.StartPmxcfs(3, bin, "-f"); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitPmxcfs(30*time.Second, 3); err != nil {
		t.Fatal(err)
	}
	sameTreeEverywhere(t, b)
	if out := mustExec(t, b, 3, "cat /etc/pve/after-copy; test -e /etc/pve/before-copy || echo gone"); out != "after\ngone\n" {
		t.Errorf("node 3 after recovery: %q", out)
	}
	if out := mustExec(t, b, 3, "cat /etc/pve/.vmlist"); !strings.Contains(out, `"100": { "node": "node1", "type": "qemu"`) {
		t.Errorf("node 3 .vmlist after recovery: %s", out)
	}
	if out := mustExec(t, b, 3, "ls /var/lib/pve-cluster/backup/"); !strings.Contains(out, "-presync.db") {
		t.Errorf("no pre-sync copy of the stale database kept: %q", out)
	}
}
