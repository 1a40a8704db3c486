package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nodeBinds are the per-node directories and files bind-mounted into each node:
// name under NodeDir(i) -> path inside the node.
type nodeBind struct{ name, path string }

var nodeBinds = []nodeBind{
	{"etc-corosync", "/etc/corosync"},
	{"hosts", "/etc/hosts"},
	{"hostname", "/etc/hostname"},
	{"var-lib-pve-cluster", "/var/lib/pve-cluster"},
	{"var-lib-corosync", "/var/lib/corosync"},
	{"var-log-corosync", "/var/log/corosync"},
	{"var-lib-rrdcached", "/var/lib/rrdcached"},
}

// overlays are the host directories a node sees through its own copy-on-write layer: reads
// show the host's files, writes stay in the node.
func (b *Bench) overlays() string {
	if b.st.PrivateRoot {
		return "etc var root"
	}
	return "etc var"
}

// nodeSetupScript runs once inside a fresh node (net+mount+UTS namespaces of its
// holder). Order matters: the overlays come first so that every mount point
// created afterwards lives in the node's upper dir, never on the host (a host
// directory used as mount point that gets deleted on the host silently detaches
// the mount in every namespace); the bind sources live in the bench dir, which
// /tmp's tmpfs hides only after the binds are made.
//
// Shared directories are bound read-only onto stages in the bench dir before
// anything covers their path, then moved to that path: into an overlay once it is
// mounted, or into a fresh tmpfs before that tmpfs is moved over /run, /dev/shm or
// /tmp (a moved mount takes the mounts below it along). So every mount point is in
// the node's overlay or tmpfs, and the stages stay empty directories on the host.
// (-n: a move would update /run/mount/utab, which the fresh /run does not have.)
const nodeSetupScript = `set -eu
# Everything below would cover the host's own directories if run outside a node.
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
	echo "bench: node setup outside a node's mount namespace" >&2; exit 1
fi
d=$1; name=$2; overlays=$3; nshare=$4; shift 4
hostname "$name"
k=0
while [ $k -lt "$nshare" ]; do
	k=$((k + 1))
	eval "share_$k=\$1"
	mkdir -p "$d/share/$k"
	mount --bind -o ro "$1" "$d/share/$k"
	shift
done
# place PREFIX ROOT: move each staged share below PREFIX to the same place below ROOT.
place() {
	k=0
	while [ $k -lt "$nshare" ]; do
		k=$((k + 1))
		eval "s=\$share_$k"
		case $s in "$1"/*)
			mkdir -p "$2${s#"$1"}"
			mount -n --move "$d/share/$k" "$2${s#"$1"}"
		esac
	done
}
# fresh PATH NAME OPTIONS: a new tmpfs on PATH, with the shares below PATH already in it.
fresh() {
	mkdir -p "$d/fresh"
	mount -t tmpfs -o "$3" "$2" "$d/fresh"
	place "$1" "$d/fresh"
	mount -n --move "$d/fresh" "$1"
}
for p in $overlays; do
	mkdir -p "$d/ovl/$p/upper" "$d/ovl/$p/work"
	mount -t overlay "bench-$p" -o "lowerdir=/$p,upperdir=$d/ovl/$p/upper,workdir=$d/ovl/$p/work" "/$p"
	place "/$p" "/$p"
done
while [ $# -gt 0 ]; do
	src=$d/$1; dst=$2; shift 2
	if [ -d "$src" ]; then mkdir -p "$dst"; elif [ ! -e "$dst" ]; then touch "$dst"; fi
	mount --bind "$src" "$dst"
done
mkdir -p /etc/pve
mount -t tmpfs -o ro,mode=0755,size=16k pve-placeholder /etc/pve
fresh /run bench-run mode=0755,nosuid,nodev,size=64m
mkdir -p /run/lock /run/pve-cluster /run/corosync
fresh /dev/shm bench-shm mode=1777,nosuid,nodev,size=256m
fresh /tmp bench-tmp mode=1777,nosuid,nodev,size=256m
# sysfs of the node's own netns (best effort; only informational tools use it)
if umount -l /sys 2>/dev/null; then mount -t sysfs bench-sys /sys || true; fi
`

// Up creates n nodes (namespaces, network, private mounts, corosync config) and
// starts corosync on each, returning once every corosync answers on its IPC.
// On error the bench is left for Down to remove.
func (b *Bench) Up(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n < 1 || n > 32 {
		return fmt.Errorf("bench: node count %d out of range 1..32", n)
	}
	if err := Available(); err != nil {
		return err
	}
	if len(b.st.Nodes) != 0 {
		return errors.New("bench: already up")
	}
	if _, err := os.Stat(filepath.Join(b.st.Dir, "state.json")); err == nil {
		return fmt.Errorf("bench: %s already holds a bench; run Down first", b.st.Dir)
	}
	if linkExists(b.BridgeName()) {
		return fmt.Errorf("bench: bridge %s already exists", b.BridgeName())
	}
	for i := 1; i <= n; i++ {
		if linkExists(b.VethName(i)) {
			return fmt.Errorf("bench: link %s already exists", b.VethName(i))
		}
	}
	if err := os.MkdirAll(b.st.Dir, 0o755); err != nil {
		return err
	}
	// Record the node slots before touching the system, so that Down can
	// clean up whatever a failing Up leaves behind.
	b.st.Nodes = make([]nodeState, n)
	if err := b.save(); err != nil {
		return err
	}
	if err := b.writeClusterFiles(n); err != nil {
		return err
	}
	if err := run("ip", "link", "add", b.BridgeName(), "type", "bridge", "stp_state", "0", "forward_delay", "0"); err != nil {
		return err
	}
	if err := run("ip", "link", "set", b.BridgeName(), "up"); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		if err := b.createNode(i); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	for i := 1; i <= n && !b.st.Unclustered; i++ {
		if err := b.startCorosync(i); err != nil {
			return err
		}
	}
	for i := 1; i <= n && !b.st.Unclustered; i++ {
		if err := b.waitCorosyncIPC(i, 30*time.Second); err != nil {
			return err
		}
	}
	b.log.Infof("bench up: %d nodes, bridge %s, subnet %s.0/24, dir %s", n, b.BridgeName(), b.st.Net, b.st.Dir)
	return nil
}

// writeClusterFiles writes the shared corosync.conf + authkey and each node's
// private directories.
func (b *Bench) writeClusterFiles(n int) error {
	conf := CorosyncConf(b.st.ClusterName, b.st.Net, n, b.st.TokenMS)
	if err := os.WriteFile(filepath.Join(b.st.Dir, "corosync.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	keyPath := filepath.Join(b.st.Dir, "authkey")
	_ = os.Remove(keyPath)
	if err := run("corosync-keygen", "-k", keyPath); err != nil {
		return err
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		d := b.NodeDir(i)
		_ = os.RemoveAll(d)
		for _, sub := range []string{"etc-corosync/uidgid.d", "var-lib-pve-cluster", "var-lib-corosync", "var-log-corosync", "var-lib-rrdcached"} {
			if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
				return err
			}
		}
		files := []struct {
			name string
			data []byte
			mode os.FileMode
		}{
			{"etc-corosync/corosync.conf", []byte(conf), 0o644},
			{"etc-corosync/authkey", key, 0o400},
			{"hosts", []byte(b.hostsFile(n)), 0o644},
			{"hostname", []byte(NodeName(i) + "\n"), 0o644},
		}
		if b.st.Unclustered {
			files = files[2:]
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(d, f.name), f.data, f.mode); err != nil {
				return err
			}
		}
	}
	return nil
}

// hostsFile makes every node name resolve to its bench address (upstream
// pmxcfs refuses a node name that resolves only to loopback).
func (b *Bench) hostsFile(n int) string {
	var s strings.Builder
	s.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&s, "%s\t%s.%s.bench %s\n", b.IP(i), NodeName(i), b.st.ClusterName, NodeName(i))
	}
	return s.String()
}

func (b *Bench) createNode(i int) error {
	ns := &b.st.Nodes[i-1]
	d := b.NodeDir(i)
	logf, err := os.OpenFile(filepath.Join(d, "holder.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// unshare execs sleep without forking, so the holder pid is the pid
	// that owns the node's namespaces.
	cmd := exec.Command("unshare", "--net", "--mount", "--uts", "--propagation", "private", "--", "sleep", "infinity")
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	ns.Holder = cmd.Process.Pid
	b.reapLater(cmd)
	if err := b.save(); err != nil {
		return err
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if !poll(5*time.Second, 20*time.Millisecond, func() bool {
		mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", ns.Holder))
		if err != nil || mnt == self {
			return false
		}
		ns.MountNS = mnt
		return true
	}) {
		return errors.New("namespace holder did not come up (see holder.log)")
	}
	if err := b.save(); err != nil {
		return err
	}

	veth := b.VethName(i)
	pid := strconv.Itoa(ns.Holder)
	steps := [][]string{
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"ip", "link", "set", veth, "master", b.BridgeName()},
		{"ip", "link", "set", veth, "up"},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "lo", "up"},
		{"nsenter", "-t", pid, "-n", "ip", "addr", "add", b.IP(i) + "/24", "dev", "eth0"},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	args := []string{"-t", pid, "-n", "-m", "-u", "--", "/bin/sh", "-c", nodeSetupScript, "sh", d, NodeName(i), b.overlays(), strconv.Itoa(len(b.st.Share))}
	args = append(args, b.st.Share...)
	for _, bind := range nodeBinds {
		args = append(args, bind.name, bind.path)
	}
	if err := run("nsenter", args...); err != nil {
		return fmt.Errorf("private mounts: %w", err)
	}
	return b.checkMounts(i)
}

// checkMounts verifies that node i sees its own directories at the standard
// paths (same device and inode as on the host side), so that a daemon never
// runs on the host's files.
func (b *Bench) checkMounts(i int) error {
	paths := make([]string, len(nodeBinds))
	for k, bind := range nodeBinds {
		paths[k] = bind.path
	}
	out, err := b.exec(i, 10*time.Second, append([]string{"stat", "-c", "%n %d:%i"}, paths...)...)
	if err != nil {
		return fmt.Errorf("checking private mounts: %w", err)
	}
	have := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			have[f[0]] = f[1]
		}
	}
	var bad []string
	for _, bind := range nodeBinds {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(b.NodeDir(i), bind.name), &st); err != nil {
			return err
		}
		if have[bind.path] != fmt.Sprintf("%d:%d", st.Dev, st.Ino) {
			bad = append(bad, bind.path)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("node %d: private mounts missing: %s", i, strings.Join(bad, " "))
	}
	return nil
}

// Down stops every daemon, the holders (which releases namespaces and mounts),
// the veths and the bridge. It is safe after a partial Up and when called twice.
// Logs stay in Dir.
func (b *Bench) Down() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for i := 1; i <= len(b.st.Nodes); i++ {
		if err := b.stop(i, Pmxcfs, false); err != nil {
			errs = append(errs, err)
		}
	}
	for i := 1; i <= len(b.st.Nodes); i++ {
		if err := b.stop(i, Corosync, false); err != nil {
			errs = append(errs, err)
		}
	}
	for i := 1; i <= len(b.st.Nodes); i++ {
		ns := &b.st.Nodes[i-1]
		if b.alive(i, ns.Holder) {
			// Anything else still inside the node was started through the
			// bench (Exec); it cannot outlive the node's namespaces.
			for _, pid := range b.pidsInNode(i) {
				if pid != ns.Holder {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			_ = syscall.Kill(ns.Holder, syscall.SIGKILL)
			if !poll(5*time.Second, 20*time.Millisecond, func() bool { return !b.alive(i, ns.Holder) }) {
				errs = append(errs, fmt.Errorf("node %d: holder %d does not die", i, ns.Holder))
			}
		}
		ns.Holder = 0
		b.removeStages(i)
		// The veth pair vanishes with the node's netns, but asynchronously;
		// delete it explicitly only if it outlives that.
		veth := b.VethName(i)
		if !poll(3*time.Second, 20*time.Millisecond, func() bool { return !linkExists(veth) }) {
			if err := run("ip", "link", "del", veth); err != nil && linkExists(veth) {
				errs = append(errs, err)
			}
		}
	}
	if linkExists(b.BridgeName()) {
		if err := run("ip", "link", "del", b.BridgeName()); err != nil && linkExists(b.BridgeName()) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		b.st.Nodes = nil
		if err := os.Remove(filepath.Join(b.st.Dir, "state.json")); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	} else {
		_ = b.save()
	}
	return errors.Join(errs...)
}

// removeStages deletes node i's empty stage directories for shared directories and fresh
// tmpfs once its namespaces are gone; os.Remove never descends into anything.
func (b *Bench) removeStages(i int) {
	stages, _ := filepath.Glob(filepath.Join(b.NodeDir(i), "share", "*"))
	for _, p := range append(stages, filepath.Join(b.NodeDir(i), "share"), filepath.Join(b.NodeDir(i), "fresh")) {
		_ = os.Remove(p)
	}
}

// pidsInNode lists the processes living in node i's mount namespace.
func (b *Bench) pidsInNode(i int) []int {
	want := b.st.Nodes[i-1].MountNS
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && mnt == want {
			pids = append(pids, pid)
		}
	}
	return pids
}
