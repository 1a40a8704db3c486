package tests

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// treeDigest is one line per entry of /etc/pve (generated dot-files excluded): what a node
// shows, for comparing nodes byte for byte.
const treeDigest = `cd /etc/pve && find . -path './.*' -prune -o -print | LC_ALL=C sort | while read -r p; do if [ -f "$p" ]; then sha256sum "$p"; else echo "dir $p"; fi; done`

func startGoCluster(t *testing.T) *bench.Bench {
	t.Helper()
	bin := pmxcfsBinary()
	return startCluster(t, bin, bin, bin)
}

// startCluster runs the given pmxcfs binary on node 1, 2, 3 (any mix of ours and upstream's).
func startCluster(t *testing.T, bins ...string) *bench.Bench {
	t.Helper()
	for _, bin := range bins {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
			t.Skipf("no pmxcfs binary at %s (set PMXCFS_BIN or run make build)", bin)
		}
	}
	b := startBench(t, len(bins))
	if err := b.WaitQuorum(quorumTimeout); err != nil {
		t.Fatal(err)
	}
	for i, bin := range bins {
		if err := b.StartPmxcfs(i+1, bin, "-f"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WaitPmxcfs(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return b
}

// mustExec runs a shell command in node i, retrying while the node is still syncing (its
// writes fail until it is quorate and synced).
func mustExec(t *testing.T, b *bench.Bench, i int, script string) string {
	t.Helper()
	var out string
	var err error
	if !waitFor(20*time.Second, func() bool {
		out, err = b.Exec(i, "sh", "-c", script)
		return err == nil
	}) {
		t.Fatalf("node %d: %s: %v\n%s", i, script, err, out)
	}
	return out
}

func sameTreeEverywhere(t *testing.T, b *bench.Bench) {
	t.Helper()
	var trees [4]string
	if !waitFor(20*time.Second, func() bool {
		for i := 1; i <= 3; i++ {
			trees[i], _ = b.Exec(i, "sh", "-c", treeDigest)
		}
		return trees[1] == trees[2] && trees[2] == trees[3]
	}) {
		t.Fatalf("nodes differ:\nnode1:\n%s\nnode2:\n%s\nnode3:\n%s", trees[1], trees[2], trees[3])
	}
}

// Three Go daemons replicate every kind of change, catch up after a restart and after a
// partition, and end with identical trees (issue 4, item 5).
func TestGoClusterReplication(t *testing.T) {
	b := startGoCluster(t)
	for i := 1; i <= 3; i++ {
		mustExec(t, b, i, "echo hello-from-"+string(rune('0'+i))+" > /etc/pve/test"+string(rune('0'+i))+".txt")
	}
	for i := 1; i <= 3; i++ {
		if out := mustExec(t, b, i, "cat /etc/pve/test1.txt /etc/pve/test2.txt /etc/pve/test3.txt"); out != "hello-from-1\nhello-from-2\nhello-from-3\n" {
			t.Errorf("node %d sees %q", i, out)
		}
	}

	t.Run("status-and-cluster-log", func(t *testing.T) { checkStatusPlane(t, b) })

	t.Run("vm-move-changes-owner", func(t *testing.T) {
		mustExec(t, b, 1, "mkdir -p /etc/pve/nodes/node1/qemu-server /etc/pve/nodes/node2/qemu-server && echo 'memory: 512' > /etc/pve/nodes/node1/qemu-server/100.conf")
		mustExec(t, b, 2, "mv /etc/pve/nodes/node1/qemu-server/100.conf /etc/pve/nodes/node2/qemu-server/")
		for i := 1; i <= 3; i++ {
			if !waitFor(5*time.Second, func() bool {
				out, _ := b.Exec(i, "cat", "/etc/pve/.vmlist")
				return strings.Contains(out, `"100": { "node": "node2", "type": "qemu"`)
			}) {
				out, _ := b.Exec(i, "cat", "/etc/pve/.vmlist")
				t.Errorf("node %d .vmlist: %s", i, out)
			}
		}
	})

	// A corosync.conf with a higher config_version written through /etc/pve reaches every
	// node's /etc/corosync/corosync.conf, and corosync reloads it (.members shows the new
	// cluster version), as upstream's dcdb.c:dcdb_sync_corosync_conf does.
	t.Run("corosync-conf-reaches-hosts", func(t *testing.T) {
		conf := mustExec(t, b, 1, "cat /etc/pve/corosync.conf")
		if !strings.Contains(conf, "config_version: 1") {
			t.Fatalf("unexpected corosync.conf:\n%s", conf)
		}
		newConf := strings.Replace(conf, "config_version: 1", "config_version: 2", 1)
		mustExec(t, b, 1, "cat > /etc/pve/corosync.conf.new <<'EOF'\n"+newConf+"EOF\nmv /etc/pve/corosync.conf.new /etc/pve/corosync.conf")
		for i := 1; i <= 3; i++ {
			if !waitFor(10*time.Second, func() bool {
				host, _ := b.Exec(i, "cat", "/etc/corosync/corosync.conf")
				return host == newConf
			}) {
				host, _ := b.Exec(i, "cat", "/etc/corosync/corosync.conf")
				t.Errorf("node %d /etc/corosync/corosync.conf:\n%s", i, host)
			}
			if !waitFor(15*time.Second, func() bool {
				m, _ := b.Exec(i, "cat", "/etc/pve/.members")
				return strings.Contains(m, `"version": 2, "nodes": 3`)
			}) {
				m, _ := b.Exec(i, "cat", "/etc/pve/.members")
				t.Errorf("node %d did not reload corosync: %s", i, m)
			}
		}
	})

	t.Run("restarted-node-catches-up", func(t *testing.T) {
		if err := b.Kill(3, bench.Pmxcfs, true); err != nil {
			t.Fatal(err)
		}
		mustExec(t, b, 1, "echo while-down > /etc/pve/down.txt && rm /etc/pve/test2.txt && mkdir /etc/pve/newdir")
		if err := b.Restart(3, bench.Pmxcfs); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitPmxcfs(30*time.Second, 3); err != nil {
			t.Fatal(err)
		}
		sameTreeEverywhere(t, b)
	})

	// A corosync crash leaves the daemon running read-only; once corosync is back it
	// reconnects by itself (about 6 s later, as upstream) and catches up.
	t.Run("corosync-restart", func(t *testing.T) {
		if err := b.Kill(2, bench.Corosync, true); err != nil {
			t.Fatal(err)
		}
		if !waitFor(10*time.Second, func() bool {
			_, err := b.Exec(2, "sh", "-c", "echo x > /etc/pve/no-corosync.txt")
			return err != nil
		}) {
			t.Error("node 2 still writable without corosync")
		}
		mustExec(t, b, 1, "echo while-corosync-down > /etc/pve/cs.txt")
		if err := b.StartCorosync(2); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitQuorum(quorumTimeout); err != nil {
			t.Fatal(err)
		}
		mustExec(t, b, 2, "echo back > /etc/pve/corosync-back.txt")
		sameTreeEverywhere(t, b)
	})

	t.Run("partitioned-node-catches-up", func(t *testing.T) {
		if err := b.Partition(3); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitInquorate(inquorateTimeout, 3); err != nil {
			t.Fatal(err)
		}
		if out, err := b.Exec(3, "sh", "-c", "echo x > /etc/pve/minority.txt"); err == nil {
			t.Errorf("write on the inquorate node succeeded: %s", out)
		}
		mustExec(t, b, 1, "echo during-partition > /etc/pve/part.txt && rm /etc/pve/down.txt && mv /etc/pve/test1.txt /etc/pve/renamed.txt")
		if err := b.Heal(3); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitQuorum(quorumTimeout); err != nil {
			t.Fatal(err)
		}
		sameTreeEverywhere(t, b)
		if out := mustExec(t, b, 3, "cat /etc/pve/part.txt; ls /etc/pve"); !strings.Contains(out, "during-partition") || strings.Contains(out, "down.txt") || strings.Contains(out, "test1.txt") {
			t.Errorf("node 3 after heal: %s", out)
		}
	})
}
