package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/internal/corotest"
	"github.com/pmxcfs-go/pmxcfs/internal/fixtures"
	"github.com/pmxcfs-go/pmxcfs/qb/qbclient"
)

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-df", "--local", "--mount=/x", "--db", "/y/config.db"})
	if err != nil || !o.debug || !o.foreground || !o.local || o.mount != "/x" || o.db != "/y/config.db" {
		t.Fatalf("got %+v, %v", o, err)
	}
	if _, err := parseOptions([]string{"-x"}); err == nil || errors.Is(err, errTooManyArgs) {
		t.Fatalf("unknown option: %v", err)
	}
	if _, err := parseOptions([]string{"-f", "extra"}); !errors.Is(err, errTooManyArgs) {
		t.Fatalf("extra argument: %v", err)
	}
	o, _ = parseOptions([]string{"--run-dir", "/tmp/r1"})
	o.makeAbsolute()
	if o.pidFile != "/tmp/r1.pid" {
		t.Fatalf("pid file follows the run dir: %s", o.pidFile)
	}
}

var daemonBin string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "pmxcfs-bin-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		daemonBin = filepath.Join(dir, "pmxcfs")
		if out, err := exec.Command("go", "build", "-o", daemonBin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building pmxcfs: %v\n%s", err, out)
			return 1
		}
		// Our daemons' IPC socket "pve2" is abstract and scoped to the network namespace: run
		// in a private one, away from any pmxcfs or bench on this machine.
		return corotest.Main(m)
	}()
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// node is one daemon's private paths.
type node struct {
	dir, mount, db, runDir string
}

func newNode(t *testing.T) *node {
	dir := t.TempDir()
	n := &node{dir: dir, mount: filepath.Join(dir, "pve"), db: filepath.Join(dir, "lib", "config.db"), runDir: filepath.Join(dir, "run")}
	os.MkdirAll(filepath.Dir(n.db), 0750)
	return n
}

func (n *node) args(extra ...string) []string {
	return append([]string{"--mount", n.mount, "--db", n.db, "--run-dir", n.runDir, "--nodename", "node1",
		"--node-ip", "192.0.2.10", "--rrd-dir", filepath.Join(n.dir, "rrd")}, extra...)
}

func (n *node) command(extra ...string) *exec.Cmd {
	cmd := exec.Command(daemonBin, n.args(extra...)...)
	cmd.Env = append(os.Environ(), envNoSyslog+"=1")
	return cmd
}

func (n *node) pid(t *testing.T) int {
	data, err := os.ReadFile(n.runDir + ".pid")
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("pid file %q: %v", data, err)
	}
	return pid
}

// start runs the daemon the way scripts do (no -f): the command must return 0 only once the
// mount is usable, leaving the daemon running.
func (n *node) start(t *testing.T, extra ...string) int {
	t.Helper()
	out, err := n.command(extra...).CombinedOutput()
	if err != nil {
		t.Fatalf("pmxcfs start: %v\n%s", err, out)
	}
	if !isMounted(n.mount) {
		t.Fatalf("pmxcfs returned before %s was mounted", n.mount)
	}
	pid := n.pid(t)
	t.Cleanup(func() { stopPid(pid, n.mount) })
	return pid
}

func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; it only waits for its parent (init) to reap it.
	fields := strings.Fields(string(data))
	return len(fields) > 2 && fields[2] != "Z"
}

func waitExit(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// stopPid ends a test daemon and removes whatever mount it left, so no test leaks a mount.
func stopPid(pid int, mount string) {
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitExit(pid, 10*time.Second) {
			syscall.Kill(pid, syscall.SIGKILL)
			waitExit(pid, 5*time.Second)
		}
	}
	if isMounted(mount) {
		syscall.Unmount(mount, syscall.MNT_DETACH)
	}
}

func TestDetachedStartAndCleanStop(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	pid := n.start(t, "-l")
	if pid == os.Getpid() || !alive(pid) {
		t.Fatalf("daemon pid %d not running", pid)
	}
	if out, err := n.command("--status").Output(); err != nil || string(out) != "ready: local mode\n" {
		t.Errorf("--status: %q %v", out, err)
	}
	members, err := os.ReadFile(filepath.Join(n.mount, ".members"))
	if err != nil || string(members) != "{\n\"nodename\": \"node1\",\n\"version\": 0\n}\n" {
		t.Fatalf(".members = %q, %v", members, err)
	}
	if err := os.WriteFile(filepath.Join(n.mount, "storage.cfg"), []byte("dir: local\n"), 0640); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !waitExit(pid, 10*time.Second) {
		t.Fatal("daemon did not exit on SIGTERM")
	}
	if isMounted(n.mount) {
		t.Error("mount left behind after SIGTERM")
	}
	if _, err := os.Stat(n.runDir + ".pid"); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
	if out, err := n.command("--status").Output(); err == nil || !strings.HasPrefix(string(out), "not running") || strings.Contains(string(out), "lock") {
		t.Errorf("--status after stop: %q %v", out, err)
	}
	// A lock holder other than the daemon (pmxcfs-db, a daemon with another pid file) is named.
	lock, err := os.OpenFile(filepath.Join(filepath.Dir(n.db), ".pmxcfs.lockfile"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
	if out, _ := n.command("--status").Output(); !strings.Contains(string(out), "database lock") || !strings.Contains(string(out), "is held") {
		t.Errorf("--status while another process holds the lock: %q", out)
	}
	lock.Close()
	st, err := os.Stat(filepath.Join(n.runDir, "cfs-restart-flag"))
	if err != nil || st.Mode().Perm() != 0440 {
		t.Errorf("restart flag: %v %v", st, err)
	}
	if _, err := os.Stat(n.db + "-wal"); !os.IsNotExist(err) {
		t.Errorf("a clean stop leaves no -wal file: %v", err)
	}
	if st, err := os.Stat(n.db); err != nil || st.Mode().Perm() != 0600 {
		t.Errorf("config.db mode: %v %v", st, err)
	}
	// A restart sees the data and removes the restart flag.
	n.start(t, "-l")
	if data, err := os.ReadFile(filepath.Join(n.mount, "storage.cfg")); err != nil || string(data) != "dir: local\n" {
		t.Errorf("after restart: %q %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(n.runDir, "cfs-restart-flag")); !os.IsNotExist(err) {
		t.Errorf("restart flag not removed after start: %v", err)
	}
}

func TestExitCodes(t *testing.T) {
	n := newNode(t)
	for _, c := range []struct {
		args []string
		code int
	}{{[]string{"-x"}, 1}, {[]string{"-f", "extra"}, 255}} {
		err := n.command(c.args...).Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != c.code {
			t.Errorf("%v: %v, want exit %d", c.args, err, c.code)
		}
	}
}

func TestUnreadableDatabaseRefused(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	garbage := bytes.Repeat([]byte("not a database "), 300)
	os.WriteFile(n.db, garbage, 0600)
	out, err := n.command("-l").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 255 {
		t.Fatalf("start on a corrupt database: %v, want exit 255\n%s", err, out)
	}
	if !strings.Contains(string(out), "memdb_open failed") {
		t.Errorf("no clear error: %s", out)
	}
	if data, _ := os.ReadFile(n.db); !bytes.Equal(data, garbage) {
		t.Error("the unreadable database was modified")
	}
	if isMounted(n.mount) {
		syscall.Unmount(n.mount, syscall.MNT_DETACH)
		t.Error("mounted although the database was refused")
	}
}

func TestSecondDaemonOnSameDatabaseRefused(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	n.start(t, "-l")
	other := *n
	other.mount = filepath.Join(n.dir, "pve2")
	other.runDir = filepath.Join(n.dir, "run2")
	out, err := other.command("-l").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 255 || !strings.Contains(string(out), "unable to acquire pmxcfs lock") {
		t.Fatalf("second daemon: %v\n%s", err, out)
	}
	if isMounted(other.mount) {
		syscall.Unmount(other.mount, syscall.MNT_DETACH)
		t.Error("second daemon mounted")
	}
}

// A write that returned success must survive kill -9 of the daemon.
func TestKill9LosesNoAcknowledgedWrite(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	pid := n.start(t, "-l")
	acked := make(chan int, 100000)
	stop := make(chan struct{})
	go func() {
		defer close(acked)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := filepath.Join(n.mount, fmt.Sprintf("f%05d.cfg", i))
			if err := os.WriteFile(name, []byte(fmt.Sprintf("content %d\n", i)), 0640); err != nil {
				return
			}
			acked <- i
		}
	}()
	time.Sleep(700 * time.Millisecond)
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(pid, 5*time.Second)
	close(stop)
	var got []int
	for i := range acked {
		got = append(got, i)
	}
	if len(got) < 10 {
		t.Fatalf("only %d writes before the kill", len(got))
	}
	syscall.Unmount(n.mount, syscall.MNT_DETACH)
	n.start(t, "-l")
	for _, i := range got {
		data, err := os.ReadFile(filepath.Join(n.mount, fmt.Sprintf("f%05d.cfg", i)))
		if err != nil || string(data) != fmt.Sprintf("content %d\n", i) {
			t.Fatalf("acknowledged write %d of %d lost: %q %v", i, len(got), data, err)
		}
	}
	t.Logf("%d acknowledged writes survived kill -9", len(got))
}

// Started on upstream's own database, the mount shows exactly what upstream showed.
func TestUpstreamDatabaseTree(t *testing.T) {
	needRoot(t)
	src := fixtures.Path(t, "upstream-9.1.6-local", "config.db")
	manifest, err := os.ReadFile(fixtures.Path(t, "upstream-9.1.6-local", "manifest.txt"))
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(n.db, data, 0600)
	n.start(t, "-l")
	var lines []string
	err = filepath.WalkDir(n.mount, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "MNT" + strings.TrimPrefix(path, n.mount)
		if strings.HasPrefix(d.Name(), ".") && path != n.mount {
			return nil // generated files are not in the manifest
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			return nil
		case info.IsDir():
			lines = append(lines, fmt.Sprintf("dir %o %s", info.Mode().Perm(), rel))
		default:
			content, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(content)
			lines = append(lines, fmt.Sprintf("%s %o %d %s", hex.EncodeToString(sum[:]), info.Mode().Perm(), info.Size(), rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(manifest)), "\n")
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tree differs from upstream's manifest\n got:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// Without -l, a database holding corosync.conf means cluster mode; with no corosync the node
// has no quorum, so the tree is read-only and every change is refused with EACCES
// (docs/upstream-behaviour.md#without-quorum).
func TestClusterModeWithoutCorosyncIsReadOnly(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	conf := filepath.Join(n.dir, "corosync.conf")
	confData := []byte("totem {\n  cluster_name: test\n  config_version: 3\n}\n")
	os.WriteFile(conf, confData, 0644)
	n.start(t, "--corosync-conf", conf)
	got, err := os.ReadFile(filepath.Join(n.mount, "corosync.conf"))
	if err != nil || !bytes.Equal(got, confData) {
		t.Fatalf("corosync.conf not imported on first start: %q %v", got, err)
	}
	st, _ := os.Stat(filepath.Join(n.mount, "corosync.conf"))
	if st.Mode().Perm() != 0440 {
		t.Errorf("file mode without quorum = %o, want 440", st.Mode().Perm())
	}
	lst, _ := os.Lstat(filepath.Join(n.mount, "local"))
	if lst.Mode().Perm() != 0555 {
		t.Errorf("local link mode without quorum = %o, want 555", lst.Mode().Perm())
	}
	if out, err := n.command("--status").Output(); err == nil || !strings.Contains(string(out), "corosync not reachable") {
		t.Errorf("--status without corosync: %q %v", out, err)
	}
	if err := os.Mkdir(filepath.Join(n.mount, "nodes"), 0755); !errors.Is(err, syscall.EACCES) {
		t.Errorf("mkdir without quorum: %v, want EACCES", err)
	}
	if err := os.WriteFile(filepath.Join(n.mount, "x.cfg"), nil, 0640); !errors.Is(err, syscall.EACCES) {
		t.Errorf("create without quorum: %v, want EACCES", err)
	}
}

func TestDebugSwitch(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	n.start(t, "-l")
	dbg := filepath.Join(n.mount, ".debug")
	if err := os.WriteFile(dbg, []byte("1\n"), 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dbg); string(got) != "1\n" {
		t.Errorf(".debug after enabling = %q", got)
	}
	if err := os.WriteFile(dbg, []byte("2\n"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("invalid .debug write: %v, want EIO", err)
	}
	os.WriteFile(dbg, []byte("0\n"), 0)
	if got, _ := os.ReadFile(dbg); string(got) != "0\n" {
		t.Errorf(".debug after disabling = %q", got)
	}
}

// A cluster database whose corosync.conf is newer than the host's updates the host file at
// start-up (dcdb.c:dcdb_sync_corosync_conf); an older one leaves it alone.
func TestNewerCorosyncConfReachesHost(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	host := filepath.Join(n.dir, "corosync.conf")
	pid := n.start(t, "-l")
	newer := []byte("totem {\n  cluster_name: test\n  config_version: 4\n}\n")
	if err := os.WriteFile(filepath.Join(n.mount, "corosync.conf"), newer, 0640); err != nil {
		t.Fatal(err)
	}
	stopPid(pid, n.mount)
	os.WriteFile(host, []byte("totem {\n  cluster_name: test\n  config_version: 3\n}\n"), 0600)
	n.start(t, "--corosync-conf", host)
	got, err := os.ReadFile(host)
	if err != nil || !bytes.Equal(got, newer) {
		t.Fatalf("host corosync.conf = %q, %v", got, err)
	}
	if st, _ := os.Stat(host); st.Mode().Perm() != 0644 {
		t.Errorf("host corosync.conf mode %o, want 644", st.Mode().Perm())
	}
}

// The IPC server answers from the same generators as the generated files (peer lessons #1).
func TestIPCMatchesGeneratedFiles(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	n.start(t, "-l")
	os.MkdirAll(filepath.Join(n.mount, "nodes", "node1", "qemu-server"), 0755)
	os.WriteFile(filepath.Join(n.mount, "nodes", "node1", "qemu-server", "100.conf"), []byte("name: vm\n"), 0640)
	c, err := qbclient.Connect("pve2")
	if err != nil {
		t.Fatalf("connect to pve2: %v", err)
	}
	defer c.Close()
	for op, file := range map[int32]string{1: ".version", 2: ".members", 3: ".vmlist"} {
		r, err := c.Send(op, nil)
		if err != nil || r.Error != 0 {
			t.Fatalf("op %d: %v, error %d", op, err, r.Error)
		}
		want, _ := os.ReadFile(filepath.Join(n.mount, file))
		if string(r.Data) != string(want) {
			t.Errorf("op %d:\n%s\n%s:\n%s", op, r.Data, file, want)
		}
	}
	r, err := c.Send(6, []byte("nodes/node1/qemu-server/100.conf\x00"))
	if err != nil || r.Error != 0 || string(r.Data) != "name: vm\n" {
		t.Errorf("GET_CONFIG: %+v %v", r, err)
	}
}

// RRD values set over IPC land in RRD files, as upstream writes them (status.c:update_rrd_data).
func TestIPCRRDUpdateWritesFile(t *testing.T) {
	needRoot(t)
	n := newNode(t)
	os.Mkdir(filepath.Join(n.dir, "rrd"), 0755) // made by the rrdcached package, not by pmxcfs
	pid := n.start(t, "-l")
	c, err := qbclient.Connect("pve2")
	if err != nil {
		t.Fatalf("connect to pve2: %v", err)
	}
	defer c.Close()
	ts := time.Now().Unix()
	value := fmt.Sprintf("100:0:%d:1:2:3:4:5:6:7:8:9:10:11:12", ts)
	key := make([]byte, 256)
	copy(key, "rrd/pve2-node/node1")
	r, err := c.Send(4, append(key, value+"\x00"...))
	if err != nil || r.Error != 0 {
		t.Fatalf("SET_STATUS: %+v %v", r, err)
	}
	stopPid(pid, n.mount) // a clean stop writes what was queued
	file := filepath.Join(n.dir, "rrd", "pve-node-9.0", "node1")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("rrd file: %v", err)
	}
	if _, err := exec.LookPath("rrdtool"); err != nil {
		return
	}
	out, err := exec.Command("rrdtool", "lastupdate", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d: 1 2 3 4 5 6 7 8 9 10 11 12 U U U U U U U", ts)) {
		t.Errorf("rrdtool lastupdate: %v\n%s", err, out)
	}
}
