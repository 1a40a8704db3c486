package tests

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// Mixed clusters with the upstream C daemon (issue 4, item 6). PMXCFS_UPSTREAM_BIN names an
// upstream pmxcfs built by hand from its public source outside this repository (it must not
// live under /tmp, /run, /etc or /var, which are private inside the bench nodes).
func TestMixedClusterWithUpstream(t *testing.T) {
	up := os.Getenv("PMXCFS_UPSTREAM_BIN")
	if up == "" {
		t.Skip("PMXCFS_UPSTREAM_BIN not set")
	}
	ours := pmxcfsBinary()
	for _, layout := range [][]string{
		{ours, up, up}, // Go node lowest: it sends SYNC_START
		{up, ours, ours},
		{up, ours, up},
	} {
		name := make([]string, len(layout))
		for i, bin := range layout {
			name[i] = map[bool]string{true: "go", false: "c"}[bin == ours]
		}
		t.Run(strings.Join(name, "-"), func(t *testing.T) { mixedScenario(t, layout) })
	}
}

func mixedScenario(t *testing.T, bins []string) {
	b := startCluster(t, bins...)
	for i := 1; i <= 3; i++ {
		mustExec(t, b, i, fmt.Sprintf("mkdir -p /etc/pve/nodes/node%d/qemu-server && echo from-%d > /etc/pve/file%d.cfg", i, i, i))
	}
	mustExec(t, b, 1, "echo 'memory: 512' > /etc/pve/nodes/node1/qemu-server/100.conf")
	mustExec(t, b, 2, "mv /etc/pve/nodes/node1/qemu-server/100.conf /etc/pve/nodes/node2/qemu-server/100.conf")
	sameTreeEverywhere(t, b)

	checkStatusPlane(t, b)

	// Every node restarts with an empty database while the others hold data (a node joining
	// a cluster that holds data), then catches up.
	for i := 1; i <= 3; i++ {
		if err := b.Kill(i, bench.Pmxcfs, false); err != nil {
			t.Fatal(err)
		}
		mustExec(t, b, i%3+1, fmt.Sprintf("echo while-%d-down > /etc/pve/down%d.cfg && rm -f /etc/pve/file%d.cfg", i, i, i))
		b.Exec(i, "rm", "-f", "/var/lib/pve-cluster/config.db", "/var/lib/pve-cluster/config.db-wal", "/var/lib/pve-cluster/config.db-shm")
		if err := b.Restart(i, bench.Pmxcfs); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitPmxcfs(30*time.Second, i); err != nil {
			t.Fatal(err)
		}
		sameTreeEverywhere(t, b)
	}

	// A partitioned node misses changes (deletions included) and catches up after the heal.
	if err := b.Partition(2); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitInquorate(inquorateTimeout, 2); err != nil {
		t.Fatal(err)
	}
	mustExec(t, b, 3, "echo partitioned > /etc/pve/part.cfg && rm /etc/pve/down1.cfg")
	if err := b.Heal(2); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitQuorum(quorumTimeout); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		mustExec(t, b, i, fmt.Sprintf("echo after-heal-%d > /etc/pve/heal%d.cfg", i, i))
	}
	sameTreeEverywhere(t, b)
	for i := 1; i <= 3; i++ {
		if out, _ := b.Exec(i, "cat", "/etc/pve/.vmlist"); !strings.Contains(out, `"100": { "node": "node2", "type": "qemu"`) {
			t.Errorf("node %d .vmlist: %s", i, out)
		}
		// Node IPs travel through the kvstore group: every kind of node shows every node's.
		for j := 1; j <= 3; j++ {
			want := fmt.Sprintf(`"node%d": { "id": %d, "online": 1, "ip": "%s"}`, j, j, b.IP(j))
			if !waitFor(10*time.Second, func() bool {
				out, _ := b.Exec(i, "cat", "/etc/pve/.members")
				return strings.Contains(out, want)
			}) {
				out, _ := b.Exec(i, "cat", "/etc/pve/.members")
				t.Errorf("node %d .members lacks %s:\n%s", i, want, out)
			}
		}
		if logs := b.Logs(i); strings.Contains(logs, "wrong checksum") || strings.Contains(logs, "leaving CPG group") || strings.Contains(logs, "serious internal error") {
			t.Errorf("node %d logged a sync failure:\n%s", i, logs)
		}
	}
}
