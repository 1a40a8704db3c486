package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Root returns a host path that resolves inside node i's mount namespace
// (/proc/<holder>/root), so a test can do file system calls on the node's
// /etc/pve directly: one syscall per operation instead of an nsenter per
// command, and the errno comes back as is.
func (b *Bench) Root(i int) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ns, err := b.node(i)
	if err != nil {
		return "", err
	}
	if !b.alive(i, ns.Holder) {
		return "", fmt.Errorf("node %d: namespace holder is not running", i)
	}
	return "/proc/" + strconv.Itoa(ns.Holder) + "/root", nil
}

// MountTmpfs puts a tmpfs of the given size (mount's size= syntax, e.g. "8m") holding a copy
// of the directory's files on dir, one of node i's bind-mounted directories (e.g.
// /var/lib/pve-cluster), so a test can fill that node's disk. pmxcfs must not run on the node.
// The mount check before a daemon starts compares the host-side directory with what the node
// sees, so the host-side name becomes a symlink into the node (/proc/<holder>/root<dir>) and
// the original directory stays beside it as <name>.bind. The tmpfs lives as long as the node.
func (b *Bench) MountTmpfs(i int, dir, size string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	ns, err := b.node(i)
	if err != nil {
		return err
	}
	if b.alive(i, ns.Pmxcfs) {
		return fmt.Errorf("node %d: stop pmxcfs before replacing %s", i, dir)
	}
	name := ""
	for _, bind := range nodeBinds {
		if bind.path == dir {
			name = bind.name
		}
	}
	if name == "" {
		return fmt.Errorf("node %d: %s is not one of the node's own directories", i, dir)
	}
	const script = `set -eu
t=$(mktemp -d /run/bench-tmpfs.XXXXXX)
mount -t tmpfs -o "size=$2,mode=0755" bench-small "$t"
cp -a "$1"/. "$t"/
mount --move "$t" "$1"
rmdir "$t"`
	if _, err := b.exec(i, 30*time.Second, "sh", "-c", script, "sh", dir, size); err != nil {
		return err
	}
	host := filepath.Join(b.NodeDir(i), name)
	if err := os.Rename(host, host+".bind"); err != nil {
		return err
	}
	return os.Symlink(fmt.Sprintf("/proc/%d/root%s", ns.Holder, dir), host)
}
