package tests

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// Generous deadlines: they bound a wait, they do not measure anything. With a
// 1000 ms token a 3-node partition is noticed within a few seconds.
const (
	quorumTimeout    = 30 * time.Second
	inquorateTimeout = 20 * time.Second
)

// startBench brings up n nodes running corosync and registers their removal.
func startBench(t *testing.T, n int) *bench.Bench {
	t.Helper()
	return startBenchWith(t, n, bench.Options{}, nil, nil)
}

// startBenchWith brings up n nodes with opts and registers their removal; on failure it logs
// each node's logs and the named per-node files (relative to its NodeDir), and beforeDown runs
// just before the bench is taken down.
func startBenchWith(t *testing.T, n int, opts bench.Options, nodeFiles []string, beforeDown func(b *bench.Bench)) *bench.Bench {
	t.Helper()
	if err := bench.Available(); err != nil {
		t.Skip(err)
	}
	opts.Dir = t.TempDir()
	opts.Share = append(opts.Share, benchShares()...)
	b, err := bench.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after t.TempDir, so it runs before the directory goes away.
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= b.N(); i++ {
				t.Log(b.Logs(i))
				for _, f := range nodeFiles {
					data, _ := os.ReadFile(filepath.Join(b.NodeDir(i), f))
					t.Logf("node%d %s:\n%s", i, f, lastBytes(data, 3000))
				}
			}
		}
		if beforeDown != nil {
			beforeDown(b)
		}
		if err := b.Down(); err != nil {
			t.Errorf("bench down: %v", err)
		}
	})
	if err := b.Up(n); err != nil {
		t.Fatalf("bench up: %v", err)
	}
	return b
}

func TestThreeNodeQuorum(t *testing.T) {
	b := startBench(t, 3)

	t.Run("nodes", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			name := bench.NodeName(i)
			if out, err := b.Exec(i, "hostname"); err != nil || strings.TrimSpace(out) != name {
				t.Errorf("node %d: hostname %q, %v; want %s", i, out, err, name)
			}
			// upstream pmxcfs insists that the node name resolves to a non-loopback address
			out, err := b.Exec(i, "getent", "hosts", name)
			if f := strings.Fields(out); err != nil || len(f) == 0 || f[0] != b.IP(i) {
				t.Errorf("node %d: getent hosts %s = %q, %v; want %s", i, name, out, err, b.IP(i))
			}
			// corosync's own check that this node finds itself in the nodelist
			if out, err := b.Exec(i, "sh", "-c", "corosync -t; echo rc=$?"); err != nil || !strings.Contains(out, "rc=0") {
				t.Errorf("node %d: corosync -t: %q, %v", i, out, err)
			}
		}
	})

	t.Run("isolated", func(t *testing.T) {
		marker := "/etc/pmxcfs-bench-" + b.ID()
		if _, err := b.Exec(1, "touch", marker, "/var/lib/pve-cluster/marker"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(marker); !os.IsNotExist(err) {
			os.Remove(marker)
			t.Errorf("a write to %s inside node 1 reached the host", marker)
		}
		if _, err := os.Stat(filepath.Join(b.NodeDir(1), "var-lib-pve-cluster", "marker")); err != nil {
			t.Errorf("node 1 /var/lib/pve-cluster is not its private dir: %v", err)
		}
		if _, err := b.Exec(2, "test", "-e", "/var/lib/pve-cluster/marker"); err == nil {
			t.Error("node 2 sees node 1's /var/lib/pve-cluster")
		}
		if _, err := b.Exec(1, "touch", "/etc/pve/x"); err == nil {
			t.Error("/etc/pve is writable without pmxcfs; want the read-only placeholder")
		}
	})

	t.Run("quorate", func(t *testing.T) {
		if err := b.WaitQuorum(quorumTimeout); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("partition", func(t *testing.T) {
		start := time.Now()
		if err := b.Partition(3); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitInquorate(inquorateTimeout, 3); err != nil {
			t.Fatal(err)
		}
		t.Logf("node 3 inquorate %v after the partition", time.Since(start).Round(time.Millisecond))
		for _, i := range []int{1, 2} {
			if q, err := b.Quorate(i); err != nil || !q {
				t.Errorf("node %d: quorate=%v, %v; want quorate (2 of 3 votes)", i, q, err)
			}
		}
		start = time.Now()
		if err := b.Heal(3); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitQuorum(quorumTimeout); err != nil {
			t.Fatal(err)
		}
		t.Logf("all quorate %v after healing", time.Since(start).Round(time.Millisecond))
	})

	t.Run("kill-restart-corosync", func(t *testing.T) {
		if err := b.Kill(2, bench.Corosync, true); err != nil {
			t.Fatal(err)
		}
		if b.Pid(2, bench.Corosync) != 0 {
			t.Fatal("corosync of node 2 still runs after a hard kill")
		}
		if _, err := b.Quorate(2); err == nil {
			t.Error("corosync-quorumtool on node 2 answers without corosync")
		}
		if err := b.WaitQuorum(quorumTimeout, 1, 3); err != nil {
			t.Fatal(err)
		}
		if err := b.StartCorosync(2); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitQuorum(quorumTimeout); err != nil {
			t.Fatal(err)
		}
		// graceful stop and start again
		if err := b.Restart(1, bench.Corosync); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitQuorum(quorumTimeout); err != nil {
			t.Fatal(err)
		}
	})
}

// benchShares are the host directories whose files the tests run inside nodes: the
// checkout (bin/, tests/testdata) and the directories of PMXCFS_BIN and
// PMXCFS_UPSTREAM_BIN. The bench binds those a node would not see (a checkout under
// /tmp, say) at the same path.
func benchShares() []string {
	_, file, _, _ := runtime.Caller(0)
	dirs := []string{filepath.Join(filepath.Dir(file), "..")}
	for _, env := range []string{"PMXCFS_BIN", "PMXCFS_UPSTREAM_BIN"} {
		if bin := os.Getenv(env); bin != "" {
			if fi, err := os.Stat(filepath.Dir(bin)); err == nil && fi.IsDir() {
				dirs = append(dirs, filepath.Dir(bin))
			}
		}
	}
	return dirs
}

// pmxcfsBinary is PMXCFS_BIN, or the repository's bin/pmxcfs.
func pmxcfsBinary() string {
	if bin := os.Getenv("PMXCFS_BIN"); bin != "" {
		return bin
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "bin", "pmxcfs")
}

// TestPmxcfsMountsOnEveryNode starts a pmxcfs (ours or upstream's, chosen by
// PMXCFS_BIN; arguments from PMXCFS_ARGS, default "-f") on three nodes and
// checks that each mounts /etc/pve. It skips while the binary does not exist.
func TestPmxcfsMountsOnEveryNode(t *testing.T) {
	bin := pmxcfsBinary()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		t.Skipf("no pmxcfs binary at %s (set PMXCFS_BIN or run make build)", bin)
	}
	args := strings.Fields(os.Getenv("PMXCFS_ARGS"))
	if len(args) == 0 {
		args = []string{"-f"}
	}
	b := startBench(t, 3)
	if err := b.WaitQuorum(quorumTimeout); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := b.StartPmxcfs(i, bin, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WaitPmxcfs(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if b.Pid(i, bench.Pmxcfs) == 0 {
			t.Errorf("node %d: pmxcfs exited after mounting", i)
		}
	}
	// Upstream imports each node's /etc/corosync/corosync.conf into an empty
	// database on first start, byte-identical (pmxcfs.c:main).
	t.Run("imports-corosync-conf", func(t *testing.T) {
		want, err := os.ReadFile(filepath.Join(b.NodeDir(1), "etc-corosync", "corosync.conf"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			var got string
			if !waitFor(10*time.Second, func() bool {
				got, err = b.Exec(i, "cat", "/etc/pve/corosync.conf")
				return err == nil
			}) || got != string(want) {
				t.Errorf("node %d: /etc/pve/corosync.conf = %q, %v; want the node's corosync.conf", i, got, err)
			}
		}
	})

	// .members carries corosync's view: cluster name, node list and the quorate flag, which
	// follows a partition and its heal (status.c:cfs_create_memberlist_msg).
	t.Run("members-follow-quorum", func(t *testing.T) {
		members := func(i int) string {
			out, _ := b.Exec(i, "cat", "/etc/pve/.members")
			return out
		}
		for i := 1; i <= 3; i++ {
			if !waitFor(15*time.Second, func() bool {
				m := members(i)
				return strings.Contains(m, `"nodes": 3, "quorate": 1 }`) &&
					strings.Contains(m, `"node3": { "id": 3, "online": 1, "ip": "`+b.IP(3)+`"}`)
			}) {
				t.Fatalf("node %d: .members = %s", i, members(i))
			}
		}
		if err := b.Partition(3); err != nil {
			t.Fatal(err)
		}
		if !waitFor(20*time.Second, func() bool { return strings.Contains(members(3), `"quorate": 0`) }) {
			t.Errorf("node 3 partitioned: .members = %s", members(3))
		}
		if !strings.Contains(members(1), `"quorate": 1`) {
			t.Errorf("node 1 lost quorum with node 3 partitioned: %s", members(1))
		}
		// `pmxcfs --status` says why a node is read-only (our extension; upstream has none).
		if strings.HasSuffix(bin, "/bin/pmxcfs") {
			var out string
			if !waitFor(5*time.Second, func() bool {
				out, _ = b.Exec(3, bin, "--status")
				return strings.Contains(out, "no quorum")
			}) {
				t.Errorf("node 3 --status: %q", out)
			}
			// The status is rewritten once a second, and node 1 may have caught up with node
			// 2 only just before the partition when the rings formed slowly.
			if !waitFor(5*time.Second, func() bool {
				out, _ = b.Exec(1, bin, "--status")
				return strings.HasPrefix(out, "ready: cluster mode")
			}) {
				t.Errorf("node 1 --status: %q", out)
			}
		}
		if err := b.Heal(3); err != nil {
			t.Fatal(err)
		}
		if !waitFor(20*time.Second, func() bool { return strings.Contains(members(3), `"quorate": 1`) }) {
			t.Errorf("node 3 healed: .members = %s", members(3))
		}
	})

	// A hard kill leaves a dead FUSE mount; the bench must put the read-only
	// placeholder back and be able to start the daemon again.
	if err := b.Kill(3, bench.Pmxcfs, true); err != nil {
		t.Fatal(err)
	}
	if b.PveMounted(3) {
		t.Error("node 3: /etc/pve still a FUSE mount after pmxcfs was killed")
	}
	if _, err := b.Exec(3, "touch", "/etc/pve/x"); err == nil {
		t.Error("node 3: /etc/pve writable without pmxcfs")
	}
	if err := b.Restart(3, bench.Pmxcfs); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitPmxcfs(30*time.Second, 3); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
