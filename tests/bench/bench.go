// Package bench runs a multi-node corosync 3 (knet) cluster on one machine, one
// network+mount+UTS namespace per node, so cluster-level tests can start pmxcfs
// binaries (ours or upstream's, mixed) at the standard paths inside each node.
//
// Layout of one bench with id ID and state directory DIR:
//
//	bridge pb<ID> (no address, no uplink) in the root netns
//	node i: host veth pb<ID>v<i> <-> eth0 (10.a.b.i/24) in the node's netns
//	        holder process (unshare ... sleep infinity) pins the namespaces;
//	        everything else enters them with nsenter -t <holder pid> -n -m -u
//	        /etc, /var   overlayfs, upper = DIR/node<i>/ovl/*  (writes never reach the host)
//	        /root        the same, with Options.PrivateRoot
//	        /run, /dev/shm, /tmp  fresh tmpfs
//	        /etc/corosync, /etc/hosts, /etc/hostname, /var/lib/pve-cluster,
//	        /var/lib/corosync, /var/log/corosync, /var/lib/rrdcached
//	                     bind mounts of DIR/node<i>/<name>
//	        /etc/pve     read-only tmpfs placeholder until a pmxcfs mounts FUSE on it
//	        Options.Share directories hidden by the above: read-only binds at the same path
//
// All state a later process needs (pids, namespace ids) is kept in DIR/state.json,
// so the CLI in ./cmd can operate a bench that another process started.
// Processes are only ever signalled by recorded pid, after checking that the pid
// still lives in the node's mount namespace.
package bench

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Options configure a new bench. Zero values pick sensible defaults.
type Options struct {
	// ID makes every global name (bridge, veths) unique; 1-6 chars [a-z0-9].
	// Empty means random.
	ID string
	// Dir holds state and logs; default /tmp/pmxcfs-bench-<ID>. It must not
	// live under /etc, /var, /run or /dev/shm, which nodes overlay.
	Dir string
	// ClusterName is totem.cluster_name; default "benchcluster".
	ClusterName string
	// TokenMS is totem.token; default 1000 so partitions are noticed fast.
	TokenMS int
	// Unclustered brings the nodes up as stand-alone hosts: network and private mounts but
	// no corosync.conf, no authkey and no corosync, as before `pvecm create`.
	Unclustered bool
	// PrivateRoot gives each node its own copy-on-write /root (for root's ssh keys and
	// config): the host's files show through, the node's writes stay in the node.
	PrivateRoot bool
	// Share lists host directories every node sees read-only at the same path, for
	// those a node's own mounts would hide (under /tmp, /run, /dev/shm, /etc, /var, or
	// /root with PrivateRoot): a checkout there keeps its binaries runnable in the
	// nodes. Other directories are visible anyway and are ignored here.
	Share []string
	// Log receives progress messages; default a logrus logger at info level.
	Log logrus.FieldLogger
}

// Bench is one running (or partially set up) cluster.
type Bench struct {
	mu  sync.Mutex
	st  state
	log logrus.FieldLogger
	// reaped is closed when a child started by this process has been waited
	// for; keyed by pid. Children of other processes are reaped by init.
	reaped map[int]chan struct{}
}

// state is persisted as JSON in Dir/state.json.
type state struct {
	ID          string
	Dir         string
	Net         string // first three octets, e.g. "10.123.45"
	ClusterName string
	TokenMS     int
	Unclustered bool
	PrivateRoot bool
	Share       []string
	Nodes       []nodeState
}

type nodeState struct {
	Holder     int
	MountNS    string // readlink of /proc/<holder>/ns/mnt
	Corosync   int
	Pmxcfs     int
	PmxcfsBin  string
	PmxcfsArgs []string
}

// Component names a daemon the bench manages inside a node.
type Component string

const (
	Corosync Component = "corosync"
	Pmxcfs   Component = "pmxcfs"
)

var idPattern = regexp.MustCompile(`^[a-z0-9]{1,6}$`)

// Available reports why the bench cannot run here (nil when it can): it needs
// root, corosync tools, iproute2/util-linux and /dev/fuse.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("bench needs root")
	}
	for _, tool := range []string{"corosync", "corosync-keygen", "corosync-quorumtool", "corosync-cfgtool", "ip", "nsenter", "unshare", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("bench needs %s: %v", tool, err)
		}
	}
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return errors.New("bench needs /dev/fuse")
	}
	return nil
}

// New prepares a bench (no system changes yet); call Up to start it.
func New(opt Options) (*Bench, error) {
	id := opt.ID
	if id == "" {
		id = randomID()
	}
	if !idPattern.MatchString(id) {
		return nil, fmt.Errorf("bench id %q: want 1-6 characters [a-z0-9]", id)
	}
	dir := opt.Dir
	if dir == "" {
		dir = "/tmp/pmxcfs-bench-" + id
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	overlaid := []string{"/etc", "/var", "/run", "/dev/shm"}
	if opt.PrivateRoot {
		overlaid = append(overlaid, "/root")
	}
	for _, bad := range overlaid {
		if dir == bad || strings.HasPrefix(dir, bad+"/") {
			return nil, fmt.Errorf("bench dir %s: must not be under %s (nodes overlay it)", dir, bad)
		}
	}
	share, err := hiddenDirs(opt.Share, opt.PrivateRoot)
	if err != nil {
		return nil, err
	}
	st := state{ID: id, Dir: dir, Net: subnetFor(id), ClusterName: opt.ClusterName, TokenMS: opt.TokenMS, Unclustered: opt.Unclustered, PrivateRoot: opt.PrivateRoot, Share: share}
	if st.ClusterName == "" {
		st.ClusterName = "benchcluster"
	}
	if st.TokenMS <= 0 {
		st.TokenMS = 1000
	}
	return &Bench{st: st, log: loggerOr(opt.Log).WithField("bench", id), reaped: map[int]chan struct{}{}}, nil
}

// hiddenPrefixes are the host directories a node's own mounts cover: fresh tmpfs first,
// then the copy-on-write overlays.
func hiddenPrefixes(privateRoot bool) []string {
	p := []string{"/tmp", "/run", "/dev/shm", "/etc", "/var"}
	if privateRoot {
		p = append(p, "/root")
	}
	return p
}

// hiddenDirs keeps the directories of share that a node could not see, without those
// inside another one, sorted.
func hiddenDirs(share []string, privateRoot bool) ([]string, error) {
	var dirs []string
	for _, d := range share {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("bench share %s: not a directory", d)
		}
		if strings.ContainsAny(abs, "\n") {
			return nil, fmt.Errorf("bench share %q: a newline in the path", abs)
		}
		if abs == "/etc/pve" || strings.HasPrefix(abs, "/etc/pve/") {
			return nil, fmt.Errorf("bench share %s: nodes mount /etc/pve themselves", abs)
		}
		for _, p := range hiddenPrefixes(privateRoot) {
			if abs == p {
				return nil, fmt.Errorf("bench share %s: share a directory below it", abs)
			}
			if strings.HasPrefix(abs, p+"/") {
				dirs = append(dirs, abs)
				break
			}
		}
	}
	sort.Strings(dirs)
	var out []string
	for _, d := range dirs {
		if len(out) > 0 && (d == out[len(out)-1] || strings.HasPrefix(d, out[len(out)-1]+"/")) {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// Load attaches to a bench that was started (possibly by another process)
// with state in dir.
func Load(dir string, log logrus.FieldLogger) (*Bench, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("no bench state in %s: %w", dir, err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("bench state %s: %w", dir, err)
	}
	if !idPattern.MatchString(st.ID) {
		return nil, fmt.Errorf("bench state %s: bad id %q", dir, st.ID)
	}
	return &Bench{st: st, log: loggerOr(log).WithField("bench", st.ID), reaped: map[int]chan struct{}{}}, nil
}

func loggerOr(l logrus.FieldLogger) logrus.FieldLogger {
	if l != nil {
		return l
	}
	return logrus.StandardLogger()
}

func randomID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// subnetFor derives 10.a.b from the id so that two benches normally differ even
// in addresses; the nets are never routed anyway (bridge without address).
func subnetFor(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	v := h.Sum32()
	return fmt.Sprintf("10.%d.%d", 100+v%100, (v>>8)%256)
}

// ID returns the bench id.
func (b *Bench) ID() string { return b.st.ID }

// Dir returns the state/log directory.
func (b *Bench) Dir() string { return b.st.Dir }

// N returns the number of nodes.
func (b *Bench) N() int { return len(b.st.Nodes) }

// IP returns node i's address (nodes are numbered from 1).
func (b *Bench) IP(i int) string { return fmt.Sprintf("%s.%d", b.st.Net, i) }

// NodeName returns node i's host name (and corosync node name).
func NodeName(i int) string { return fmt.Sprintf("node%d", i) }

// NodeDir returns the host directory holding node i's private files and logs.
func (b *Bench) NodeDir(i int) string { return filepath.Join(b.st.Dir, NodeName(i)) }

// BridgeName returns the bench's bridge in the root netns.
func (b *Bench) BridgeName() string { return "pb" + b.st.ID }

// VethName returns the host-side veth of node i.
func (b *Bench) VethName(i int) string { return fmt.Sprintf("pb%sv%d", b.st.ID, i) }

func (b *Bench) node(i int) (*nodeState, error) {
	if i < 1 || i > len(b.st.Nodes) {
		return nil, fmt.Errorf("node %d: bench has nodes 1..%d", i, len(b.st.Nodes))
	}
	return &b.st.Nodes[i-1], nil
}

func (b *Bench) save() error {
	data, err := json.MarshalIndent(&b.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(b.st.Dir, "state.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(b.st.Dir, "state.json"))
}

// run executes a host command and folds its output into the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func linkExists(name string) bool {
	return exec.Command("ip", "link", "show", "dev", name).Run() == nil
}

// poll calls cond every interval until it returns true or timeout passes.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}
