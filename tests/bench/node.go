package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemonEnv is the environment of daemons started in a node: nothing from the
// caller leaks in, so runs are reproducible.
var daemonEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "HOME=/root"}

// reapLater waits for a child started by this process so it never lingers as a
// zombie; processes started by another process (CLI) are reaped by init.
func (b *Bench) reapLater(cmd *exec.Cmd) {
	done := make(chan struct{})
	b.reaped[cmd.Process.Pid] = done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
}

// alive reports whether pid runs (not a zombie) inside node i's mount namespace;
// the namespace check protects against signalling a reused pid.
func (b *Bench) alive(i, pid int) bool {
	if pid <= 0 || i < 1 || i > len(b.st.Nodes) || b.st.Nodes[i-1].MountNS == "" {
		return false
	}
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil || mnt != b.st.Nodes[i-1].MountNS {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// the state follows the parenthesised command name, which may hold spaces
	if k := bytes.LastIndexByte(stat, ')'); k >= 0 && k+2 < len(stat) {
		return stat[k+2] != 'Z' && stat[k+2] != 'X'
	}
	return false
}

// Exec runs a command inside node i (its net, mount and UTS namespaces) and
// returns combined stdout+stderr. It gives up after two minutes.
func (b *Bench) Exec(i int, args ...string) (string, error) {
	return b.exec(i, 2*time.Minute, args...)
}

// ExecContext is Exec with a caller-controlled lifetime.
func (b *Bench) ExecContext(ctx context.Context, i int, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("bench: Exec needs a command")
	}
	ns, err := b.node(i)
	if err != nil {
		return "", err
	}
	if !b.alive(i, ns.Holder) {
		return "", fmt.Errorf("node %d: namespace holder is not running", i)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(ns.Holder), "-n", "-m", "-u", "--"}, args...)...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("node %d: %s: %w: %s", i, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Command returns an unstarted command that runs inside node i, for callers
// that want to attach stdin/stdout themselves (an interactive shell, say).
func (b *Bench) Command(i int, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, errors.New("bench: Command needs a command")
	}
	ns, err := b.node(i)
	if err != nil {
		return nil, err
	}
	if !b.alive(i, ns.Holder) {
		return nil, fmt.Errorf("node %d: namespace holder is not running", i)
	}
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(ns.Holder), "-n", "-m", "-u", "--"}, args...)...)
	cmd.Dir = "/"
	return cmd, nil
}

func (b *Bench) exec(i int, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return b.ExecContext(ctx, i, args...)
}

func (ns *nodeState) pid(c Component) *int {
	if c == Corosync {
		return &ns.Corosync
	}
	return &ns.Pmxcfs
}

// Pid returns the pid of a running component of node i, or 0.
func (b *Bench) Pid(i int, c Component) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	ns, err := b.node(i)
	if err != nil {
		return 0
	}
	if p := *ns.pid(c); b.alive(i, p) {
		return p
	}
	return 0
}

// startDaemon starts argv inside node i, detached in its own session, output
// appended to NodeDir(i)/<component>.log.
func (b *Bench) startDaemon(i int, c Component, argv ...string) error {
	ns, err := b.node(i)
	if err != nil {
		return err
	}
	if p := *ns.pid(c); b.alive(i, p) {
		return fmt.Errorf("node %d: %s already runs (pid %d)", i, c, p)
	}
	if !b.alive(i, ns.Holder) {
		return fmt.Errorf("node %d: namespace holder is not running", i)
	}
	if err := b.checkMounts(i); err != nil {
		return err
	}
	logPath := filepath.Join(b.NodeDir(i), string(c)+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s bench: starting %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	// nsenter without --fork execs the daemon, so the pid we get is the daemon's
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(ns.Holder), "-n", "-m", "-u", "--"}, argv...)...)
	cmd.Dir = "/"
	cmd.Env = daemonEnv
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	b.reapLater(cmd)
	done := b.reaped[pid]
	entered := poll(5*time.Second, 10*time.Millisecond, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		return b.alive(i, pid)
	})
	if !entered || !b.alive(i, pid) {
		return fmt.Errorf("node %d: %s exited at once; log %s:\n%s", i, c, logPath, tail(logPath, 2000))
	}
	*ns.pid(c) = pid
	b.log.Infof("node%d: started %s (pid %d)", i, c, pid)
	return b.save()
}

// StartCorosync starts corosync -f in node i and waits until its IPC answers.
func (b *Bench) StartCorosync(i int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.startCorosync(i); err != nil {
		return err
	}
	return b.waitCorosyncIPC(i, 30*time.Second)
}

func (b *Bench) startCorosync(i int) error {
	return b.startDaemon(i, Corosync, "corosync", "-f")
}

func (b *Bench) waitCorosyncIPC(i int, timeout time.Duration) error {
	ok := poll(timeout, 100*time.Millisecond, func() bool {
		_, err := b.exec(i, 5*time.Second, "corosync-cfgtool", "-s")
		return err == nil || !b.alive(i, b.st.Nodes[i-1].Corosync)
	})
	if !ok || !b.alive(i, b.st.Nodes[i-1].Corosync) {
		return fmt.Errorf("node %d: corosync did not come up:\n%s", i, b.logs(i))
	}
	return nil
}

// StartPmxcfs starts binary (a host path that must also be visible inside the
// node: under /tmp, /run, /etc or /var only in a directory of Options.Share) with
// args in node i. It does not
// wait for the mount; see WaitPmxcfs.
func (b *Bench) StartPmxcfs(i int, binary string, args ...string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	abs, err := filepath.Abs(binary)
	if err != nil {
		return err
	}
	if _, err := b.exec(i, 10*time.Second, "test", "-x", abs); err != nil {
		return fmt.Errorf("node %d: %s is not an executable inside the node (a node sees directories under /tmp, /run, /etc, /var only when Options.Share names them)", i, abs)
	}
	ns, err := b.node(i)
	if err != nil {
		return err
	}
	ns.PmxcfsBin, ns.PmxcfsArgs = abs, args
	return b.startDaemon(i, Pmxcfs, append([]string{abs}, args...)...)
}

// Kill stops component c of node i: SIGTERM with escalation to SIGKILL after
// a grace period, or SIGKILL at once when hard. A node without it is a no-op.
func (b *Bench) Kill(i int, c Component, hard bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.node(i); err != nil {
		return err
	}
	return b.stop(i, c, hard)
}

func (b *Bench) stop(i int, c Component, hard bool) error {
	ns := &b.st.Nodes[i-1]
	p := ns.pid(c)
	pid := *p
	if !b.alive(i, pid) {
		*p = 0
		return nil
	}
	grace := 15 * time.Second
	if c == Pmxcfs {
		grace = 5 * time.Second
	}
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	b.log.Infof("node%d: stopping %s (pid %d, %v)", i, c, pid, sig)
	_ = syscall.Kill(pid, sig)
	start := time.Now()
	poked := false
	gone := poll(grace, 20*time.Millisecond, func() bool {
		if c == Pmxcfs && !hard && !poked && time.Since(start) > time.Second {
			// Upstream pmxcfs on Debian 12 may sit in epoll_wait(-1) in its IPC
			// thread and never see the termination flag; any connection to its
			// @pve2 socket wakes that loop up.
			poked = true
			_ = connectAbstract(ns.Holder, "pve2")
		}
		return !b.alive(i, pid)
	})
	var err error
	if !gone {
		b.log.Warnf("node%d: %s (pid %d) ignored %v for %v, sending SIGKILL", i, c, pid, sig, grace)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !poll(5*time.Second, 20*time.Millisecond, func() bool { return !b.alive(i, pid) }) {
			err = fmt.Errorf("node %d: %s (pid %d) survives SIGKILL", i, c, pid)
		}
	}
	if err == nil {
		*p = 0
	}
	if c == Pmxcfs {
		b.resetPveMount(i)
	}
	if saveErr := b.save(); err == nil {
		err = saveErr
	}
	return err
}

// resetPveMount drops a FUSE mount left by a dead pmxcfs and restores the
// read-only placeholder, so writes to /etc/pve fail while no pmxcfs serves it.
func (b *Bench) resetPveMount(i int) {
	for k := 0; k < 5 && strings.HasPrefix(b.pveMountType(i), "fuse"); k++ {
		if _, err := b.exec(i, 10*time.Second, "umount", "-l", "/etc/pve"); err != nil {
			break
		}
	}
	if b.pveMountType(i) == "" {
		_, _ = b.exec(i, 10*time.Second, "mount", "-t", "tmpfs", "-o", "ro,mode=0755,size=16k", "pve-placeholder", "/etc/pve")
	}
}

// pveMountType is the file system type of the top mount on /etc/pve in node i
// ("" when nothing is mounted there).
func (b *Bench) pveMountType(i int) string {
	out, err := b.exec(i, 10*time.Second, "cat", "/proc/self/mounts")
	if err != nil {
		return ""
	}
	typ := ""
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "/etc/pve" {
			typ = f[2]
		}
	}
	return typ
}

// PveMounted reports whether node i's /etc/pve is a FUSE mount.
func (b *Bench) PveMounted(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.HasPrefix(b.pveMountType(i), "fuse")
}

// WaitPmxcfs waits until /etc/pve is a FUSE mount on each node (all when none given).
func (b *Bench) WaitPmxcfs(timeout time.Duration, nodes ...int) error {
	return b.waitAll(timeout, nodes, "/etc/pve mounted", func(i int) bool {
		return strings.HasPrefix(b.pveMountType(i), "fuse")
	})
}

// Restart stops component c of node i (SIGTERM) and starts it again with the
// same binary and arguments.
func (b *Bench) Restart(i int, c Component) error {
	if err := b.Kill(i, c, false); err != nil {
		return err
	}
	if c == Corosync {
		return b.StartCorosync(i)
	}
	b.mu.Lock()
	ns, err := b.node(i)
	bin, args := "", []string(nil)
	if err == nil {
		bin, args = ns.PmxcfsBin, ns.PmxcfsArgs
	}
	b.mu.Unlock()
	if err != nil {
		return err
	}
	if bin == "" {
		return fmt.Errorf("node %d: pmxcfs was never started", i)
	}
	return b.StartPmxcfs(i, bin, args...)
}

// Partition cuts node i off the bridge (host-side veth down).
func (b *Bench) Partition(i int) error {
	if _, err := b.node(i); err != nil {
		return err
	}
	return run("ip", "link", "set", b.VethName(i), "down")
}

// Heal reconnects node i.
func (b *Bench) Heal(i int) error {
	if _, err := b.node(i); err != nil {
		return err
	}
	return run("ip", "link", "set", b.VethName(i), "up")
}

// Logs returns node i's setup, corosync and pmxcfs logs.
func (b *Bench) Logs(i int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logs(i)
}

func (b *Bench) logs(i int) string {
	var s strings.Builder
	for _, name := range []string{"holder.log", "corosync.log", "var-log-corosync/corosync.log", "pmxcfs.log"} {
		p := filepath.Join(b.NodeDir(i), name)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		fmt.Fprintf(&s, "----- node%d %s\n%s", i, name, tail(p, 16000))
	}
	return s.String()
}

// tail returns at most the last max bytes of a file.
func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error() + "\n"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(-max, 2)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(f)
	return buf.String()
}

// connectAbstract opens and closes one connection to a libqb IPC service
// (abstract unix socket named like libqb does: NUL-padded to the full
// sun_path) inside the network namespace of pid.
func connectAbstract(pid int, service string) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		name := "@" + service + strings.Repeat("\x00", 107-len(service))
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: name})
		unix.Close(fd)
	}
	// A thread that cannot return to our namespace stays locked and dies
	// with this goroutine instead of serving other goroutines.
	if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	return err
}
