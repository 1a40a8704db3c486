package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// The fault suite (issue 12): real clusters under kill -9, partitions, a full disk, a damaged
// database, over-size and concurrent writes. After every step each daemon must be alive, all
// nodes must show the same tree, every acknowledged write must be there with its content, and a
// partitioned node must refuse writes; each step logs its figures (go test -v). `make test` runs
// a few rounds; `make soak` many (PMXCFS_FAULT_ROUNDS, PMXCFS_FAULT_CYCLES, see faultConfig).

// TestFaultKillDuringWrites kills pmxcfs with SIGKILL on one node (every third round on all
// nodes at once) while every node writes, restarts it and checks.
func TestFaultKillDuringWrites(t *testing.T) {
	cfg := loadFaultConfig(t)
	bin := pmxcfsBinary()
	b := startFaultCluster(t, bin, bin, bin)
	faultKillRounds(t, b, cfg, rand.New(rand.NewSource(cfg.seed)), "fault-kill")
}

// TestFaultPartitionCycles cuts one node off at random (node 1 included) while every node
// writes, requires the cut-off node to refuse writes, heals and checks.
func TestFaultPartitionCycles(t *testing.T) {
	cfg := loadFaultConfig(t)
	bin := pmxcfsBinary()
	b := startFaultCluster(t, bin, bin, bin)
	faultPartitionCycles(t, b, cfg, rand.New(rand.NewSource(cfg.seed)), "fault-part")
}

// TestFaultMixedWithUpstream runs the kill rounds and the partition cycles on clusters that mix
// our daemon with the upstream C daemon named by PMXCFS_UPSTREAM_BIN, the lowest node id once
// ours and once upstream's.
func TestFaultMixedWithUpstream(t *testing.T) {
	up := os.Getenv("PMXCFS_UPSTREAM_BIN")
	if up == "" {
		t.Skip("PMXCFS_UPSTREAM_BIN not set")
	}
	cfg := loadFaultConfig(t)
	ours := pmxcfsBinary()
	for k, layout := range [][]string{{ours, up, ours}, {up, ours, up}} {
		name := make([]string, len(layout))
		for i, bin := range layout {
			name[i] = map[bool]string{true: "go", false: "c"}[bin == ours]
		}
		t.Run(strings.Join(name, "-"), func(t *testing.T) {
			b := startFaultCluster(t, layout...)
			rng := rand.New(rand.NewSource(cfg.seed + int64(k)))
			faultKillRounds(t, b, cfg, rng, "fault-mkill")
			faultPartitionCycles(t, b, cfg, rng, "fault-mpart")
		})
	}
}

// startFaultCluster is startCluster, and when PMXCFS_FAULT_LOGS names a directory it keeps
// every node's daemon logs there (<dir>/<test>/node<i>-*.log), failed or not, for the soak.
func startFaultCluster(t *testing.T, bins ...string) *bench.Bench {
	t.Helper()
	b := startCluster(t, bins...)
	keep := os.Getenv("PMXCFS_FAULT_LOGS")
	if keep == "" {
		return b
	}
	dir := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
	// runs before the bench goes down (cleanups run last-registered first)
	t.Cleanup(func() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Error(err)
			return
		}
		for i := 1; i <= b.N(); i++ {
			for _, name := range []string{"pmxcfs.log", "var-log-corosync/corosync.log"} {
				data, err := os.ReadFile(filepath.Join(b.NodeDir(i), name))
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("node%d-%s", i, filepath.Base(name))), data, 0o644)
				}
				if err != nil && !os.IsNotExist(err) {
					t.Error(err)
				}
			}
		}
		t.Logf("node logs kept in %s", dir)
	})
	return b
}

// faultPause sleeps between min and max milliseconds: how long a storm runs between faults.
func faultPause(rng *rand.Rand, min, max int) {
	time.Sleep(time.Duration(min+rng.Intn(max-min+1)) * time.Millisecond)
}

func faultKillRounds(t *testing.T, b *bench.Bench, cfg faultConfig, rng *rand.Rand, tag string) {
	t.Helper()
	l := newFaultLedger()
	storm := newFaultStorm(t, b, l, rng, tag, cfg.writers, 2048)
	victims := faultOrder(rng, cfg.rounds, b.N())
	for r := 0; r < cfg.rounds; r++ {
		nodes := []int{victims[r]}
		if r%3 == 2 {
			nodes = []int{1, 2, 3}
		}
		step := fmt.Sprintf("kill round %d/%d (kill -9 pmxcfs on node %v)", r+1, cfg.rounds, nodes)
		storm.start(step)
		faultPause(rng, 800, 1500)
		for _, v := range nodes {
			if err := b.Kill(v, bench.Pmxcfs, true); err != nil {
				t.Fatal(err)
			}
		}
		faultPause(rng, 300, 1000)
		for _, v := range nodes {
			if err := b.Restart(v, bench.Pmxcfs); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.WaitPmxcfs(30*time.Second, nodes...); err != nil {
			t.Fatal(err)
		}
		faultPause(rng, 800, 1500)
		storm.halt(t)
		l.settle(t, b, step)
	}
}

func faultPartitionCycles(t *testing.T, b *bench.Bench, cfg faultConfig, rng *rand.Rand, tag string) {
	t.Helper()
	l := newFaultLedger()
	storm := newFaultStorm(t, b, l, rng, tag, cfg.writers, 2048)
	mustExec(t, b, 1, "mkdir -p /etc/pve/"+tag+"/probe")
	roots := faultPveRoots(t, b)
	probes := 0
	for c, p := range faultOrder(rng, cfg.cycles, b.N()) {
		step := fmt.Sprintf("partition cycle %d/%d (node %d cut off)", c+1, cfg.cycles, p)
		storm.start(step)
		faultPause(rng, 300, 1000)
		if err := b.Partition(p); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitInquorate(inquorateTimeout, p); err != nil {
			t.Fatal(err)
		}
		var probe *faultOp
		if !waitFor(30*time.Second, func() bool {
			probes++
			name := fmt.Sprintf("%s/probe/p%d.cfg", tag, probes)
			data := fmt.Sprintf("probe %d on partitioned node %d\n", probes, p)
			probe = l.do(p, "probe", name, data, true, func() error { return faultWriteFile(filepath.Join(roots[p], name), []byte(data)) })
			return probe.err != nil
		}) {
			t.Errorf("%s: node %d, cut off and inquorate, still acknowledges writes: %s", step, p, probe)
		} else {
			l.mustRefuse(p, probe.end)
		}
		faultPause(rng, 800, 1500)
		l.mayAccept(p)
		if err := b.Heal(p); err != nil {
			t.Fatal(err)
		}
		if err := b.WaitQuorum(quorumTimeout); err != nil {
			t.Fatal(err)
		}
		faultPause(rng, 300, 1000)
		storm.halt(t)
		l.settle(t, b, step)
	}
}

// TestFaultDatabase: many concurrent writers, over-size writes, a damaged database at start
// and a full disk under the database, one after the other on one cluster, every step checked
// against everything acknowledged before.
func TestFaultDatabase(t *testing.T) {
	cfg := loadFaultConfig(t)
	bin := pmxcfsBinary()
	b := startFaultCluster(t, bin, bin, bin)
	rng := rand.New(rand.NewSource(cfg.seed))
	l := newFaultLedger()
	roots := faultPveRoots(t, b)
	const tag = "fault-db"
	mustExec(t, b, 1, "mkdir -p /etc/pve/"+tag)

	t.Run("concurrent-writers", func(t *testing.T) {
		for k := 0; k < cfg.concWriters; k++ {
			mustExec(t, b, k%b.N()+1, fmt.Sprintf("mkdir -p /etc/pve/%s/conc/w%d", tag, k))
		}
		var wg sync.WaitGroup
		begin := make(chan struct{})
		for k := 0; k < cfg.concWriters; k++ {
			node := k%b.N() + 1
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				<-begin
				for f := 0; f < cfg.concFiles; f++ {
					name := fmt.Sprintf("%s/conc/w%d/f%d.cfg", tag, k, f)
					data := fmt.Sprintf("writer %d file %d on node %d\n%s", k, f, node, strings.Repeat("x", f))
					l.do(node, "write", name, data, true, func() error { return faultWriteFile(filepath.Join(roots[node], name), []byte(data)) })
				}
			}(k)
		}
		close(begin)
		wg.Wait()
		// nothing is wrong with this cluster: every write must have been acknowledged
		if n := l.stepRefusals(); n != 0 {
			t.Errorf("%d of %d writes refused on a healthy cluster", n, cfg.concWriters*cfg.concFiles)
		}
		l.settle(t, b, fmt.Sprintf("%d×%d concurrent writers", cfg.concWriters, cfg.concFiles))
	})

	t.Run("oversize-writes", func(t *testing.T) {
		const mib = 1 << 20
		const node = 2
		mustExec(t, b, node, "mkdir -p /etc/pve/"+tag+"/big")
		host := func(name string) string { return filepath.Join(roots[node], name) }
		pattern := func(n int) string {
			var s strings.Builder
			for k := 0; s.Len() < n; k++ {
				fmt.Fprintf(&s, "%07d\n", k)
			}
			return s.String()[:n]
		}
		exact := tag + "/big/exact.cfg"
		if op := l.do(node, "write", exact, pattern(mib), true, func() error { return faultWriteFile(host(exact), []byte(pattern(mib))) }); op.err != nil {
			t.Errorf("a 1 MiB file is refused: %s", op)
		}
		// One write(2) of 1 MiB + 1: the kernel writes what the daemon takes (1 MiB, as
		// upstream) and the rest is refused with EFBIG.
		over := tag + "/big/over.cfg"
		data := pattern(mib + 1)
		op := &faultOp{node: node, kind: "write 1 MiB + 1", path: over, content: data, start: time.Now()}
		op.err = faultWriteFile(host(over), []byte(data))
		op.end = time.Now()
		l.note(op)
		if errnoName(op.err) != "EFBIG" {
			t.Errorf("want EFBIG: %s", op)
		}
		l.pin(&faultOp{node: node, kind: "first 1 MiB of a write of 1 MiB + 1", path: over, content: data[:mib], start: op.start, end: op.end})
		// A pwrite crossing 1 MiB is refused whole, and so is a truncate past it.
		op = &faultOp{node: node, kind: "pwrite crossing 1 MiB", path: exact, start: time.Now()}
		op.err = func() error {
			f, err := os.OpenFile(host(exact), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteAt(make([]byte, 100), mib-50)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}()
		op.end = time.Now()
		l.note(op)
		if errnoName(op.err) != "EFBIG" {
			t.Errorf("want EFBIG: %s", op)
		}
		op = &faultOp{node: node, kind: "truncate to 1 MiB + 1", path: exact, start: time.Now()}
		op.err = os.Truncate(host(exact), mib+1)
		op.end = time.Now()
		l.note(op)
		if errnoName(op.err) != "EFBIG" {
			t.Errorf("want EFBIG: %s", op)
		}
		l.settle(t, b, "over-size writes")
	})

	t.Run("corrupt-database-at-start", func(t *testing.T) {
		const node = 3
		db := filepath.Join(b.NodeDir(node), "var-lib-pve-cluster", "config.db")
		var treeRoot int // page number, read before each damage
		damages := []struct {
			name   string
			damage func(db []byte) []byte
		}{
			{"garbage header", func(db []byte) []byte {
				copy(db, strings.Repeat("damaged!", 12))
				return db
			}},
			{"truncated to half", func(db []byte) []byte { return db[:len(db)/2] }},
			{"tree table's root page zeroed", func(db []byte) []byte {
				size := int(binary.BigEndian.Uint16(db[16:18]))
				if size == 1 {
					size = 65536
				}
				copy(db[(treeRoot-1)*size:treeRoot*size], make([]byte, size))
				return db
			}},
		}
		writes := 0
		for k, d := range damages {
			step := "damaged database at start: " + d.name
			if err := b.Kill(node, bench.Pmxcfs, false); err != nil {
				t.Fatal(err)
			}
			// Everything in the main file, so that damaging it damages the database.
			out := mustExec(t, b, node, "sqlite3 /var/lib/pve-cluster/config.db 'PRAGMA wal_checkpoint(TRUNCATE);' \"SELECT rootpage FROM sqlite_master WHERE name='tree'\" && rm -f /var/lib/pve-cluster/config.db-wal /var/lib/pve-cluster/config.db-shm")
			if f := strings.Fields(out); len(f) != 2 || f[0] != "0|0|0" {
				t.Fatalf("checkpoint of node %d's database: %q", node, out)
			} else if _, err := fmt.Sscan(f[1], &treeRoot); err != nil || treeRoot < 2 {
				t.Fatalf("root page of the tree table: %q", out)
			}
			good, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			// the cluster goes on without the node
			for i := 1; i <= 3; i++ {
				if i == node {
					continue
				}
				writes++
				name := fmt.Sprintf("%s/while-damaged-%d.cfg", tag, writes)
				data := fmt.Sprintf("written on node %d while node %d is down with %s\n", i, node, d.name)
				if op := l.do(i, "write", name, data, true, func() error { return faultWriteFile(filepath.Join(roots[i], name), []byte(data)) }); op.err != nil {
					t.Errorf("%s", op)
				}
			}
			damaged := d.damage(append([]byte(nil), good...))
			if err := os.WriteFile(db, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			// In the foreground, to see its exit status and message; timeout ends a daemon
			// that wrongly starts.
			out, err = b.Exec(node, "timeout", "30", pmxcfsBinary(), "-f")
			switch {
			case err == nil || strings.Contains(err.Error(), "exit status 124"):
				t.Errorf("%s: pmxcfs ran on it (%v):\n%s", step, err, out)
			case strings.Contains(out, "panic") || strings.Contains(out, "goroutine "):
				t.Errorf("%s: pmxcfs crashed:\n%s", step, out)
			default:
				lines := strings.Split(strings.TrimSpace(out), "\n")
				t.Logf("%s: refused: %s", step, lines[len(lines)-1])
			}
			if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, damaged) {
				t.Errorf("%s: the refused database was changed or removed (%v)", step, err)
			}
			// Recovery: the copy from before the damage (stale now), or no database at all.
			if k%2 == 0 {
				err = os.WriteFile(db, good, 0o600)
			} else {
				err = os.Remove(db)
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, ext := range []string{"-wal", "-shm"} {
				os.Remove(db + ext)
			}
			restartPmxcfs(t, b, node)
			l.settle(t, b, step)
		}
	})

	t.Run("full-disk", func(t *testing.T) {
		const node = 3
		if err := b.Kill(node, bench.Pmxcfs, false); err != nil {
			t.Fatal(err)
		}
		if err := b.MountTmpfs(node, "/var/lib/pve-cluster", "64m"); err != nil {
			t.Fatal(err)
		}
		restartPmxcfs(t, b, node)
		l.settle(t, b, "database on a small tmpfs")

		storm := newFaultStorm(t, b, l, rng, tag+"/full", 1, 64<<10)
		mustExec(t, b, 1, "mkdir -p /etc/pve/"+tag+"/full/probe")
		step := fmt.Sprintf("full disk on node %d", node)
		storm.start(step)
		faultPause(rng, 500, 1000)
		df, _ := b.Exec(node, "sh", "-c", "dd if=/dev/zero of=/var/lib/pve-cluster/filler bs=64k 2>&1 | tail -1; df -k /var/lib/pve-cluster | tail -1")
		t.Logf("node %d filled: %s", node, strings.Join(strings.Fields(df), " "))
		// Once SQLite cannot grow its files the node must refuse changes (upstream refuses every
		// change from the first failed commit until it restarts); whatever it acknowledged, before
		// or after, must stay.
		probes := 0
		var probe *faultOp
		if !waitFor(60*time.Second, func() bool {
			probes++
			name := fmt.Sprintf("%s/full/probe/p%d.cfg", tag, probes)
			data := strings.Repeat(fmt.Sprintf("probe %d on the full node\n", probes), 2000)
			probe = l.do(node, "probe", name, data, true, func() error { return faultWriteFile(filepath.Join(roots[node], name), []byte(data)) })
			return probe.err != nil
		}) {
			t.Errorf("%s: node %d never refused a write (%d probes acknowledged)", step, node, probes)
		} else {
			t.Logf("%s: refused after %d probes: %s", step, probes, probe)
		}
		faultPause(rng, 1000, 1500)
		storm.halt(t)
		if b.Pid(node, bench.Pmxcfs) == 0 {
			t.Fatalf("%s: the daemon died:\n%s", step, b.Logs(node))
		}
		t.Logf("%s: %s", step, l.figures(0))
		// Space again; the daemon catches up after a restart.
		freeDiskAndRestart(t, b, node)
		name := path.Join(tag, "full", "after.cfg")
		mustExec(t, b, node, "true > /etc/pve/"+name) // once the node has synced
		if op := l.do(node, "write", name, "writable again\n", true, func() error {
			return faultWriteFile(filepath.Join(roots[node], name), []byte("writable again\n"))
		}); op.err != nil {
			t.Errorf("%s: node %d refuses writes after space was freed and it restarted: %s", step, node, op)
		}
		l.settle(t, b, step+", freed and restarted")

		// The disk is all but full before the daemon starts, and the cluster moved on meanwhile:
		// the daemon may refuse to start or run, but must neither crash nor lose anything.
		step = fmt.Sprintf("full disk on node %d at start, with a resync to take", node)
		if err := b.Kill(node, bench.Pmxcfs, false); err != nil {
			t.Fatal(err)
		}
		storm.start(step)
		faultPause(rng, 1000, 1500)
		storm.halt(t)
		// room to open the database, not to take the resync
		df, _ = b.Exec(node, "sh", "-c", "dd if=/dev/zero of=/var/lib/pve-cluster/filler bs=64k 2>&1 | tail -1; truncate -s -256k /var/lib/pve-cluster/filler; df -k /var/lib/pve-cluster | tail -1")
		t.Logf("node %d filled but 256 KiB: %s", node, strings.Join(strings.Fields(df), " "))
		if err := b.Restart(node, bench.Pmxcfs); err == nil {
			waitFor(30*time.Second, func() bool { return b.Pid(node, bench.Pmxcfs) == 0 || b.PveMounted(node) })
		}
		logTail := func() string {
			data, _ := os.ReadFile(filepath.Join(b.NodeDir(node), "pmxcfs.log"))
			return string(lastBytes(data, 600))
		}
		if out := logTail(); strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
			t.Errorf("%s: pmxcfs crashed:\n%s", step, out)
		}
		if b.Pid(node, bench.Pmxcfs) == 0 {
			t.Logf("%s: pmxcfs refused to start:\n%s", step, logTail())
		} else {
			t.Logf("%s: pmxcfs runs", step)
			storm.start(step + " (running)")
			faultPause(rng, 1000, 1500)
			storm.halt(t)
			if b.Pid(node, bench.Pmxcfs) == 0 {
				t.Errorf("%s: the daemon died:\n%s", step, logTail())
			}
		}
		t.Logf("%s: %s", step, l.figures(0))
		freeDiskAndRestart(t, b, node)
		l.settle(t, b, step+", freed and restarted")
	})
}

// TestFaultStaggeredRestart: pmxcfs stops on nodes 1 and 2 while corosync stays up, so node 3
// alone is still quorate and writes on; then node 3 stops, 1 and 2 come back and write, and node
// 3 returns with the highest version. Whatever any node acknowledged on the way must survive
// the resync that follows. (Upstream 9.1.6 loses the writes of nodes 1 and 2 here: the sync
// leader is the member with the highest version, and nothing merges.)
func TestFaultStaggeredRestart(t *testing.T) {
	bin := pmxcfsBinary()
	b := startFaultCluster(t, bin, bin, bin)
	l := newFaultLedger()
	roots := faultPveRoots(t, b)
	const tag = "fault-stagger"
	mustExec(t, b, 1, "mkdir -p /etc/pve/"+tag)
	sameTreeEverywhere(t, b)
	write := func(node int, name string) *faultOp {
		p := path.Join(tag, name)
		data := fmt.Sprintf("%s written on node %d\n", name, node)
		return l.do(node, "write", p, data, true, func() error { return faultWriteFile(filepath.Join(roots[node], p), []byte(data)) })
	}
	for _, i := range []int{1, 2} {
		if err := b.Kill(i, bench.Pmxcfs, true); err != nil {
			t.Fatal(err)
		}
	}
	for k := 1; k <= 30; k++ {
		write(3, fmt.Sprintf("alone-on-3-%d.cfg", k))
	}
	if err := b.Kill(3, bench.Pmxcfs, true); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if err := b.Restart(i, bench.Pmxcfs); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WaitPmxcfs(30*time.Second, 1, 2); err != nil {
		t.Fatal(err)
	}
	// the first write that nodes 1 and 2 accept, then a few more
	if !waitFor(20*time.Second, func() bool { return write(1, "on-1-and-2-0.cfg").err == nil }) {
		t.Log("nodes 1 and 2 without node 3 refuse writes")
	}
	for k := 1; k <= 4; k++ {
		write(1, fmt.Sprintf("on-1-and-2-%d.cfg", k))
	}
	restartPmxcfs(t, b, 3)
	l.settle(t, b, "staggered restart")
}

// restartPmxcfs starts node's pmxcfs again and waits until it serves /etc/pve.
func restartPmxcfs(t *testing.T, b *bench.Bench, node int) {
	t.Helper()
	if err := b.Restart(node, bench.Pmxcfs); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitPmxcfs(30*time.Second, node); err != nil {
		t.Fatal(err)
	}
}

// freeDiskAndRestart removes the file that filled node's database tmpfs and restarts its
// pmxcfs, which then catches up.
func freeDiskAndRestart(t *testing.T, b *bench.Bench, node int) {
	t.Helper()
	if _, err := b.Exec(node, "rm", "/var/lib/pve-cluster/filler"); err != nil {
		t.Fatal(err)
	}
	restartPmxcfs(t, b, node)
}
