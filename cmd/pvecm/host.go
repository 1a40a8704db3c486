package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pmxcfs-go/pmxcfs/internal/atomicfile"
)

// host is what pvecm works on: the node's paths and the programs it runs. Everything is the
// standard Debian/Proxmox layout; only the service manager can be swapped (PVECM_SYSTEMCTL),
// for hosts whose services are not run by systemd.
type host struct {
	pveDir      string // /etc/pve
	corosyncDir string // /etc/corosync
	libDir      string // /var/lib/pve-cluster
	sshDir      string // /root/.ssh
	localLock   string // /var/lock/pvecm.lock
	systemctl   string
	stdout      io.Writer
	stderr      io.Writer
	stdin       io.Reader
}

func newHost() *host {
	h := &host{
		pveDir:      "/etc/pve",
		corosyncDir: "/etc/corosync",
		libDir:      "/var/lib/pve-cluster",
		sshDir:      "/root/.ssh",
		localLock:   "/var/lock/pvecm.lock",
		systemctl:   "systemctl",
		stdout:      os.Stdout,
		stderr:      os.Stderr,
		stdin:       os.Stdin,
	}
	if s := os.Getenv("PVECM_SYSTEMCTL"); s != "" {
		h.systemctl = s
	}
	return h
}

func (h *host) pve(p ...string) string { return filepath.Join(append([]string{h.pveDir}, p...)...) }

func (h *host) clusterConf() string { return h.pve("corosync.conf") }
func (h *host) authKey() string     { return filepath.Join(h.corosyncDir, "authkey") }
func (h *host) dbFile() string      { return filepath.Join(h.libDir, "config.db") }

func (h *host) printf(format string, a ...any) { fmt.Fprintf(h.stdout, format, a...) }
func (h *host) warnf(format string, a ...any)  { fmt.Fprintf(h.stderr, format, a...) }

// nodeName is the short host name, which pmxcfs also uses.
func nodeName() (string, error) {
	name, err := os.Hostname()
	if err != nil {
		return "", err
	}
	name, _, _ = strings.Cut(name, ".")
	return name, nil
}

// nodeIP resolves a node name to the address corosync should use; a loopback address is an
// error, since other nodes could not reach it.
func nodeIP(name string) (string, error) {
	ips, err := net.LookupIP(name)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("hostname lookup '%s' failed - %v", name, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil && !ip.IsLoopback() {
			return ip.String(), nil
		}
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return ip.String(), nil
		}
	}
	return "", fmt.Errorf("hostname lookup '%s' failed - got local IP address '%s'", name, ips[0])
}

// ipIsLocal reports whether ip is configured on one of this host's interfaces.
func ipIsLocal(ip string) bool {
	want := net.ParseIP(ip)
	addrs, err := net.InterfaceAddrs()
	if want == nil || err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(want) {
			return true
		}
	}
	return false
}

// mounted reports whether pmxcfs serves /etc/pve: its `local` entry is a symlink that no
// ordinary directory has.
func (h *host) mounted() bool {
	st, err := os.Lstat(h.pve("local"))
	return err == nil && st.Mode()&os.ModeSymlink != 0
}

func (h *host) checkMounted() error {
	if !h.mounted() {
		return errors.New("pve configuration filesystem (pmxcfs) not mounted")
	}
	return nil
}

// quorate reads what pmxcfs says about quorum: /etc/pve/local is writable only while the
// node may change the cluster's files.
func (h *host) quorate() bool {
	st, err := os.Lstat(h.pve("local"))
	return err == nil && st.Mode().Perm()&0o200 != 0
}

func (h *host) checkQuorum() error {
	if !h.quorate() {
		return errors.New("cluster not ready - no quorum?")
	}
	return nil
}

func (h *host) checkConfExists() error {
	if st, err := os.Stat(h.clusterConf()); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("Error: Corosync config '%s' does not exist - is this node part of a cluster?", h.clusterConf())
	}
	return nil
}

// memberCount is the number of nodes in /etc/pve/.members (0 when unknown).
func (h *host) memberCount() int {
	data, err := os.ReadFile(h.pve(".members"))
	if err != nil {
		return 0
	}
	var m struct {
		Nodelist map[string]json.RawMessage `json:"nodelist"`
	}
	if json.Unmarshal(data, &m) != nil {
		return 0
	}
	return len(m.Nodelist)
}

// guestCount is the number of VMs and containers /etc/pve/.vmlist knows on any node.
func (h *host) guestCount() (int, error) {
	data, err := os.ReadFile(h.pve(".vmlist"))
	if err != nil {
		return 0, err
	}
	var v struct {
		IDs map[string]json.RawMessage `json:"ids"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return 0, fmt.Errorf("cannot parse %s: %v", h.pve(".vmlist"), err)
	}
	return len(v.IDs), nil
}

// writePVE replaces a file in /etc/pve the way PVE's tools do: a temporary file
// `<name>.tmp.<pid>` in the same directory, then a rename, which pmxcfs replicates as one
// change. pmxcfs decides the mode, so none is set.
func writePVE(path string, data []byte) error {
	tmp := fmt.Sprintf("%s.tmp.%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("unable to create file '%s' - %v", tmp, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("unable to write '%s' - %v", path, err)
	}
	return nil
}

// writeLocal replaces a file on the host's own file system.
func writeLocal(path string, data []byte, mode os.FileMode) error {
	if err := atomicfile.Write(path, data, mode); err != nil {
		return fmt.Errorf("unable to write '%s' - %v", path, err)
	}
	return nil
}

// runCmd runs a program with pvecm's own stdout and stderr.
func (h *host) runCmd(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, h.stdout, h.stderr
	return cmd.Run()
}

// runQuiet runs a program and returns its combined output, for messages on failure.
func runQuiet(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// service runs the service manager, e.g. `systemctl restart corosync pve-cluster`.
func (h *host) service(action string, units ...string) error {
	args := strings.Fields(h.systemctl)
	args = append(args, action)
	args = append(args, units...)
	if out, err := runQuiet(args[0], args[1:]...); err != nil {
		return fmt.Errorf("%s %s failed: %v\n%s", action, strings.Join(units, " "), err, out)
	}
	return nil
}

// waitQuorum waits, without a time limit as upstream does, until pmxcfs is mounted and
// quorate again after a service restart.
func (h *host) waitQuorum() {
	if h.quorate() {
		return
	}
	h.printf("waiting for quorum...")
	for !h.quorate() {
		time.Sleep(time.Second)
	}
	h.printf("OK\n")
}

// withLocalLock serialises pvecm's configuration changes on this node.
func (h *host) withLocalLock(fn func() error) error {
	f, err := os.OpenFile(h.localLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("can't open file '%s' - %v", h.localLock, err)
	}
	defer f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("can't lock file '%s' - got timeout", h.localLock)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// withClusterLock holds pmxcfs's cluster-wide lock `id` (a directory under
// /etc/pve/priv/lock) while fn runs, as PVE's cfs_lock does, including its unlock request
// (utime 0) that makes pmxcfs drop a lock held for longer than its timeout.
func (h *host) withClusterLock(id string, timeout time.Duration, fn func() error) error {
	lockDir := h.pve("priv", "lock")
	os.Mkdir(lockDir, 0o755)
	if st, err := os.Stat(lockDir); err != nil || !st.IsDir() {
		return fmt.Errorf("cfs-lock '%s' error: pve cluster filesystem not online.", id)
	}
	path := filepath.Join(lockDir, id)
	start := time.Now()
	lastMsg := time.Duration(0)
	for {
		err := os.Mkdir(path, 0o755)
		if err == nil {
			break
		}
		waited := time.Since(start)
		if waited >= timeout {
			if !h.quorate() {
				return fmt.Errorf("cfs-lock '%s' error: no quorum!", id)
			}
			return fmt.Errorf("cfs-lock '%s' error: got lock request timeout", id)
		}
		if waited-lastMsg >= time.Second {
			lastMsg = waited
			h.warnf("trying to acquire cfs lock '%s' ...\n", id)
		}
		os.Chtimes(path, time.Unix(0, 0), time.Unix(0, 0))
		time.Sleep(100 * time.Millisecond)
	}
	defer os.Remove(path)
	return fn()
}
