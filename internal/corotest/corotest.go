// Package corotest runs a throw-away single-node corosync for tests, inside a
// private network and mount namespace so it can never meet another corosync
// or test bench on the machine.
//
// libqb IPC uses abstract unix sockets (scoped to the network namespace) and
// ring buffers in /dev/shm, so the test process itself must live in the
// namespace: Main re-executes the test binary there.
package corotest

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmxcfs-go/pmxcfs/internal/privns"
)

const envInner = "PMXCFS_COROTEST_INNER"

// Directories that get a private tmpfs: corosync's pid file lives in /run,
// libqb's ring buffers in /dev/shm, and the config in /etc/corosync.
var privateDirs = []string{"/run", "/dev/shm", "/etc/corosync", "/var/lib/corosync", "/var/log/corosync"}

// ConfPath and KeyPath are where the private corosync reads its files.
const (
	ConfPath = "/etc/corosync/corosync.conf"
	KeyPath  = "/etc/corosync/authkey"
)

var skipReason = "corotest.Main was not called from TestMain"

// Main is meant for TestMain: os.Exit(corotest.Main(m)). As root with
// corosync installed it runs the tests in a re-executed copy of the test
// binary inside new network and mount namespaces; otherwise it runs them
// here and Start skips.
func Main(m *testing.M) int {
	if os.Getenv(envInner) != "1" {
		if _, err := exec.LookPath("corosync"); err != nil {
			skipReason = "corosync is not installed"
			return m.Run()
		}
	}
	code, done, skip := privns.Enter(envInner, setupNamespace)
	if done {
		return code
	}
	skipReason = skip
	return m.Run()
}

func setupNamespace() error {
	for _, d := range privateDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("corotest", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=64m"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", d, err)
		}
	}
	return loopbackUp()
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// Node is one nodelist entry of the generated corosync.conf.
type Node struct {
	ID    uint32
	Name  string // empty: no name key, only ring0_addr
	Votes uint32
	Addr  string
}

// Config is what goes into the generated corosync.conf.
type Config struct {
	ClusterName    string
	Version        uint64
	Nodes          []Node
	QuorumProvider string // empty: no quorum section (libquorum reports QUORUM_FREE)
}

// DefaultConfig is the local node "alpha" (nodeid 1, 2 votes, 127.0.0.1) and
// an absent node 2 without a name (1 vote, 127.0.0.2): expected votes 3,
// quorum 2, so the local node alone is quorate.
func DefaultConfig() Config {
	return Config{
		ClusterName:    "corotest",
		Version:        1,
		QuorumProvider: "corosync_votequorum",
		Nodes: []Node{
			{ID: 1, Name: "alpha", Votes: 2, Addr: "127.0.0.1"},
			{ID: 2, Votes: 1, Addr: "127.0.0.2"},
		},
	}
}

// Text renders the configuration as corosync.conf.
func (c Config) Text() string {
	var b strings.Builder
	b.WriteString("logging {\n  to_stderr: yes\n  to_syslog: no\n  to_logfile: no\n}\n\nnodelist {\n")
	for _, n := range c.Nodes {
		b.WriteString("  node {\n")
		if n.Name != "" {
			fmt.Fprintf(&b, "    name: %s\n", n.Name)
		}
		fmt.Fprintf(&b, "    nodeid: %d\n    quorum_votes: %d\n    ring0_addr: %s\n  }\n", n.ID, n.Votes, n.Addr)
	}
	b.WriteString("}\n\n")
	if c.QuorumProvider != "" {
		fmt.Fprintf(&b, "quorum {\n  provider: %s\n}\n\n", c.QuorumProvider)
	}
	fmt.Fprintf(&b, "totem {\n  cluster_name: %s\n  config_version: %d\n", c.ClusterName, c.Version)
	b.WriteString("  crypto_cipher: aes256\n  crypto_hash: sha256\n  transport: knet\n  version: 2\n  token: 1000\n}\n")
	return b.String()
}

// Corosync is a running private corosync.
type Corosync struct {
	t      testing.TB
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd is reaped
	log    string
}

// Start writes cfg (and an authkey) and starts corosync, waiting until its
// IPC services accept connections. It skips the test when the private
// namespace is not available. The daemon is stopped at test cleanup.
func Start(t testing.TB, cfg Config) *Corosync {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if err := WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 256)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(KeyPath, key, 0o400); err != nil {
		t.Fatal(err)
	}
	c := &Corosync{t: t, log: filepath.Join(t.TempDir(), "corosync.log")}
	c.Restart()
	t.Cleanup(c.Stop)
	return c
}

// WriteConfig replaces the private corosync.conf.
func WriteConfig(cfg Config) error {
	return os.WriteFile(ConfPath, []byte(cfg.Text()), 0o644)
}

// Restart starts corosync again after Kill or Stop.
func (c *Corosync) Restart() {
	c.t.Helper()
	if c.Running() {
		c.t.Fatal("corotest: corosync is already running")
	}
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("corosync", "-f")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	readyBefore := strings.Count(c.Log(), readyLine)
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(c.exited)
	deadline := time.Now().Add(20 * time.Second)
	// The sockets appear before the first membership is synced; until then
	// the services answer CS_ERR_TRY_AGAIN.
	for !servicesListening() || strings.Count(c.Log(), readyLine) == readyBefore {
		if time.Now().After(deadline) {
			c.Kill()
			c.t.Fatalf("corotest: corosync did not come up; log:\n%s", c.Log())
		}
		if !c.Running() {
			c.t.Fatalf("corotest: corosync exited at start; log:\n%s", c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readyLine is what corosync logs once its services are synchronised.
const readyLine = "ready to provide service"

// servicesListening reports whether the libqb sockets of the services we
// use exist (abstract sockets, so /proc/net/unix of our namespace; libqb
// pads the names with NULs, which the kernel shows as "@").
func servicesListening() bool {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return false
	}
	s := string(b)
	for _, name := range []string{"@cpg", "@cmap", "@quorum", "@cfg"} {
		if !strings.Contains(s, " "+name+"@") && !strings.Contains(s, " "+name+"\n") {
			return false
		}
	}
	return true
}

// Running reports whether the corosync we started is still alive.
func (c *Corosync) Running() bool {
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// Kill stops corosync with SIGKILL (by its recorded pid) and reaps it.
func (c *Corosync) Kill() { c.signal(syscall.SIGKILL, 0) }

// Stop stops corosync with SIGTERM, escalating to SIGKILL after 10 s.
func (c *Corosync) Stop() { c.signal(syscall.SIGTERM, 10*time.Second) }

func (c *Corosync) signal(sig syscall.Signal, grace time.Duration) {
	if !c.Running() {
		return
	}
	_ = c.cmd.Process.Signal(sig)
	done := c.exited
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
			_ = c.cmd.Process.Kill()
		}
	}
	<-done
}

// Reload runs `corosync-cfgtool -R` (re-read corosync.conf).
func (c *Corosync) Reload() error {
	out, err := exec.Command("corosync-cfgtool", "-R").CombinedOutput()
	if err != nil {
		return fmt.Errorf("corosync-cfgtool -R: %w: %s", err, out)
	}
	return nil
}

// Log returns what corosync printed so far.
func (c *Corosync) Log() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}
