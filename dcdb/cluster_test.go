package dcdb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/dfsm/dfsmtest"
	"github.com/pmxcfs-go/pmxcfs/memdb"
)

// cluster runs DCDB apps over real memdb instances on the dfsm simulator.
type cluster struct {
	t     *testing.T
	sim   *dfsmtest.Simulator
	dir   string
	now   atomic.Int64 // node-local clock of every memdb (lock expiry)
	nodes map[uint32]*node
	// configure, if set, adjusts a node's application config before it starts.
	configure func(n *node, cfg *Config)
	// noConfirm hides the application's dfsm.Confirmer from the engine.
	noConfirm bool
}

type node struct {
	id      uint32
	path    string
	db      *memdb.DB
	app     *App
	proc    *dfsmtest.SimProc
	quorate atomic.Bool
	mu      sync.Mutex
	confs   []bool // CorosyncConfChanged calls
	modes   []dfsm.Mode
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, sim: dfsmtest.NewSimulator(1_800_000_000), dir: t.TempDir(), nodes: map[uint32]*node{}}
	c.now.Store(1_800_000_000)
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.db.Close()
		}
	})
	return c
}

func (c *cluster) dbPath(id uint32) string {
	return filepath.Join(c.dir, fmt.Sprintf("node%d", id), "config.db")
}

// openDB opens (creating) node id's database without starting the node.
func (c *cluster) openDB(id uint32) *memdb.DB {
	p := c.dbPath(id)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		c.t.Fatal(err)
	}
	db, err := memdb.Open(p, memdb.Options{Log: quietEntry(),
		Now: func() time.Time { return time.Unix(c.now.Load(), 0) }})
	if err != nil {
		c.t.Fatal(err)
	}
	return db
}

// start runs a new process on node id over its database (db, or a freshly opened one).
func (c *cluster) start(id uint32, db *memdb.DB) *node {
	if db == nil {
		db = c.openDB(id)
	}
	n := &node{id: id, path: c.dbPath(id), db: db}
	n.quorate.Store(true)
	cfg := Config{DB: db, Log: quietLogger(), Quorate: n.quorate.Load,
		CorosyncConfChanged: func(notify bool) {
			n.mu.Lock()
			n.confs = append(n.confs, notify)
			n.mu.Unlock()
		}}
	if c.configure != nil {
		c.configure(n, &cfg)
	}
	n.app = New(cfg)
	var app dfsm.Application = n.app
	if c.noConfirm {
		app = struct{ dfsm.Application }{n.app}
	}
	p, err := c.sim.Spawn(id, dfsm.Config{Name: GroupName, ProtocolVersion: ProtocolVersion,
		App: app, Log: quietLogger(), OnModeChange: func(_, to dfsm.Mode) {
			n.mu.Lock()
			n.modes = append(n.modes, to)
			n.mu.Unlock()
		}})
	if err != nil {
		c.t.Fatal(err)
	}
	n.app.Attach(p.Engine)
	n.proc = p
	c.nodes[id] = n
	return n
}

// stop shuts node id's process down and closes its database.
func (c *cluster) stop(id uint32) {
	n := c.nodes[id]
	c.sim.Stop(n.proc)
	c.run()
	n.db.Close()
	delete(c.nodes, id)
}

func (c *cluster) run() {
	if c.sim.Run(1_000_000) == 1_000_000 {
		c.t.Fatal("simulator did not settle")
	}
}

// do runs a local operation on node id (it blocks until its own delivery)
// while the simulator delivers.
func (c *cluster) do(id uint32, fn func(a *App) error) error {
	c.t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn(c.nodes[id].app) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-done:
			c.run()
			return err
		default:
		}
		if c.sim.Run(1000) == 0 {
			time.Sleep(50 * time.Microsecond)
		}
		if time.Now().After(deadline) {
			c.t.Fatal("operation did not finish")
		}
	}
}

func (c *cluster) must(id uint32, fn func(a *App) error) {
	c.t.Helper()
	if err := c.do(id, fn); err != nil {
		c.t.Fatalf("node %d: %v", id, err)
	}
}

// converged requires every running node to be SYNCED with byte-identical indexes.
func (c *cluster) converged() []byte {
	c.t.Helper()
	var ref []byte
	var refID uint32
	for id, n := range c.nodes {
		if m := n.proc.Engine.Mode(); m != dfsm.ModeSynced {
			c.t.Fatalf("node %d in mode %s", id, m)
		}
		idx := n.db.Index()
		if ref == nil {
			ref, refID = idx, id
		} else if !bytes.Equal(idx, ref) {
			c.t.Fatalf("index of node %d differs from node %d", id, refID)
		}
	}
	return ref
}

func (c *cluster) readAll(path string, want string) {
	c.t.Helper()
	for id, n := range c.nodes {
		got, err := n.db.ReadFile(path)
		if err != nil || string(got) != want {
			c.t.Fatalf("node %d: %s = %q, %v; want %q", id, path, got, err, want)
		}
	}
}

func (c *cluster) absent(path string) {
	c.t.Helper()
	for id, n := range c.nodes {
		if _, err := n.db.Lookup(path); !errors.Is(err, syscall.ENOENT) {
			c.t.Fatalf("node %d: %s still there (%v)", id, path, err)
		}
	}
}

func writeFile(path, data string) func(a *App) error {
	return func(a *App) error {
		confirm, err := a.Create(path)
		if err != nil {
			return err
		}
		n, err := a.Write(path, 0, []byte(data), false)
		if err == nil && n != len(data) {
			err = fmt.Errorf("wrote %d of %d bytes", n, len(data))
		}
		if cerr := confirm(); err == nil {
			err = cerr
		}
		return err
	}
}

func TestWritesFromEveryNode(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.run()
	c.converged()
	for id := uint32(1); id <= 3; id++ {
		dir := fmt.Sprintf("dir%d", id)
		c.must(id, func(a *App) error { return a.Mkdir(dir) })
		c.must(id, writeFile(dir+"/f", "from "+dir))
	}
	c.must(2, func(a *App) error { return a.Rename("dir1/f", "dir3/g") })
	c.must(3, func(a *App) error { return a.Delete("dir2/f") })
	c.must(1, func(a *App) error { _, err := a.Write("dir3/g", 2, nil, true); return err })
	c.must(1, func(a *App) error { return a.Mtime("dir3/g", 12345) })
	// Errors come back to the writer as errnos.
	if err := c.do(3, func(a *App) error { return a.Mkdir("dir1") }); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("mkdir of an existing dir: %v, want EEXIST", err)
	}
	c.converged()
	c.absent("dir1/f")
	c.absent("dir2/f")
	c.readAll("dir3/f", "from dir3")
	c.readAll("dir3/g", "fr")
	for id, n := range c.nodes {
		e, err := n.db.Lookup("dir3/g")
		if err != nil || e.Writer != 1 || e.Mtime != 12345 {
			t.Fatalf("node %d: dir3/g = %+v, %v; want writer 1 mtime 12345", id, e, err)
		}
		e, _ = n.db.Lookup("dir2")
		if e.Writer != 2 || e.Mtime != uint32(c.sim.Clock.T) {
			t.Fatalf("node %d: dir2 writer %d mtime %d, want the sender and its header time", id, e.Writer, e.Mtime)
		}
	}
}

func TestJoinWithDifferentDataCatchesUp(t *testing.T) {
	c := newCluster(t)
	// Node 3 has local data of its own, and fewer changes than the others.
	db3 := c.openDB(3)
	if err := db3.Mkdir("stale", 3, 100); err != nil {
		t.Fatal(err)
	}
	if err := db3.Create("shared.txt", 3, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := db3.Write("shared.txt", 0, []byte("node3's version"), false, 3, 100); err != nil {
		t.Fatal(err)
	}
	db3.Close()

	c.start(1, nil)
	c.start(2, nil)
	c.run()
	for i := 0; i < 4; i++ {
		c.must(1+uint32(i%2), writeFile(fmt.Sprintf("f%d", i), fmt.Sprint(i)))
	}
	c.must(1, writeFile("shared.txt", "leader's version"))
	c.must(2, writeFile("gone.txt", "x"))
	c.must(2, func(a *App) error { return a.Delete("gone.txt") })

	n3 := c.start(3, nil)
	c.run()
	idx := c.converged()
	if !bytes.Equal(n3.db.Index(), idx) {
		t.Fatal("node 3 did not catch up")
	}
	c.absent("stale")
	c.absent("gone.txt")
	c.readAll("shared.txt", "leader's version")
	c.readAll("f3", "3")
	// The replaced local data was saved first.
	backups, _ := filepath.Glob(filepath.Join(filepath.Dir(n3.path), "backup", "config-*-presync.db"))
	if len(backups) != 1 {
		t.Fatalf("backups: %v", backups)
	}
	old, err := memdb.Open(backups[0], memdb.Options{Log: quietEntry()})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got, _ := old.ReadFile("shared.txt"); string(got) != "node3's version" {
		t.Fatalf("backup has shared.txt = %q", got)
	}
	if n3.confs[len(n3.confs)-1] != false {
		t.Fatal("commit must call CorosyncConfChanged(false)")
	}
	// The database on disk holds the synced tree: reopen it.
	c.stop(3)
	re := c.openDB(3)
	defer re.Close()
	if !bytes.Equal(re.Index(), idx) {
		t.Fatal("reopened database differs from the synced tree")
	}
}

func TestPartitionAndHeal(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 5; id++ {
		c.start(id, nil)
	}
	c.run()
	c.must(4, writeFile("before.txt", "b"))
	c.sim.Partition([]uint32{1, 2, 3})
	c.nodes[4].quorate.Store(false)
	c.nodes[5].quorate.Store(false)
	c.run()
	c.must(1, writeFile("majority.txt", "m"))
	c.must(3, func(a *App) error { return a.Delete("before.txt") })
	c.must(2, func(a *App) error { return a.Mkdir("d") })
	if err := c.do(5, writeFile("minority.txt", "x")); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("write without quorum: %v, want EACCES", err)
	}
	c.sim.Heal()
	c.nodes[4].quorate.Store(true)
	c.nodes[5].quorate.Store(true)
	c.run()
	c.converged()
	c.readAll("majority.txt", "m")
	c.absent("before.txt")
	c.absent("minority.txt")
}

func TestRestartedProcessCatchesUp(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.run()
	c.must(2, writeFile("a", "1"))
	c.stop(2)
	c.must(1, writeFile("b", "2"))
	c.must(3, func(a *App) error { return a.Delete("a") })
	c.start(2, nil)
	c.run()
	c.converged()
	c.readAll("b", "2")
	c.absent("a")
}

func TestWriteWithoutQuorumForcesResync(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.run()
	n3 := c.nodes[3]
	n3.quorate.Store(false)
	done := make(chan error, 1)
	go func() { done <- writeFile("x", "y")(c.nodes[1].app) }()
	// Deliver node 1's CREATE: node 3 refuses it and leaves.
	for !hasMode(n3, dfsm.ModeLeave) {
		if c.sim.Run(1) == 0 {
			time.Sleep(50 * time.Microsecond)
		}
	}
	n3.quorate.Store(true)
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			c.run()
			c.converged()
			c.readAll("x", "y")
			return
		default:
			if c.sim.Run(1000) == 0 {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
}

func hasMode(n *node, m dfsm.Mode) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range n.modes {
		if x == m {
			return true
		}
	}
	return false
}

func TestUnlockExpiredLock(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.run()
	for _, d := range []string{"priv", "priv/lock", "priv/lock/L"} {
		c.must(2, func(a *App) error { return a.Mkdir(d) })
	}
	// Too young: the lowest node does not answer.
	c.must(3, func(a *App) error { return a.RequestUnlock("priv/lock/L") })
	c.converged()
	if _, err := c.nodes[1].db.Lookup("priv/lock/L"); err != nil {
		t.Fatal("young lock was removed")
	}
	c.now.Add(121)
	c.sim.Clock.T += 121
	c.must(3, func(a *App) error { return a.RequestUnlock("priv/lock/L") })
	c.converged()
	c.absent("priv/lock/L")
	if r := c.nodes[2].db.Root(); r.Writer != 1 || r.Mtime != uint32(c.sim.Clock.T) {
		t.Fatalf("root after unlock: %+v, want writer 1 (the lowest node sent UNLOCK)", r)
	}
	// utime(0) on a lock through MTIME fails with EACCES for everybody.
	c.must(2, func(a *App) error { return a.Mkdir("priv/lock/M") })
	if err := c.do(3, func(a *App) error { return a.Mtime("priv/lock/M", 0) }); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("mtime 0 on a lock: %v, want EACCES", err)
	}
}

func TestCorosyncConfHook(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 2; id++ {
		c.start(id, nil)
	}
	c.run()
	for _, n := range c.nodes {
		n.confs = nil
	}
	c.must(2, writeFile("corosync.conf.new", "totem {}"))
	c.must(2, func(a *App) error { return a.Rename("corosync.conf.new", "corosync.conf") })
	want := map[uint32][]bool{1: {false}, 2: {true}}
	for id, n := range c.nodes {
		if fmt.Sprint(n.confs) != fmt.Sprint(want[id]) {
			t.Fatalf("node %d: CorosyncConfChanged calls %v, want %v", id, n.confs, want[id])
		}
	}
}

func TestMalformedMessageMakesEveryNodeLeave(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.run()
	bad := dfsm.Message{Header: dfsm.Header{Type: dfsm.MsgNormal, Subtype: MsgWrite,
		ProtocolVersion: ProtocolVersion, Time: 5}, Count: 99, Payload: []byte{1, 2, 3}}
	if err := c.sim.Inject(c.nodes[1].proc, bad.Encode()); err != nil {
		t.Fatal(err)
	}
	c.run()
	for id, n := range c.nodes {
		if !hasMode(n, dfsm.ModeLeave) {
			t.Fatalf("node %d did not leave on a malformed payload", id)
		}
	}
	// They rejoin and stay consistent.
	c.converged()
	c.must(2, writeFile("after", "ok"))
	c.readAll("after", "ok")
}

func TestVerifyDetectsDivergence(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.run()
	c.must(2, writeFile("a", "1"))
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.nodes[1].proc.Engine.VerifyTick())
	c.run()
	for id, n := range c.nodes {
		if hasMode(n, dfsm.ModeLeave) {
			t.Fatalf("node %d left although all data is equal", id)
		}
	}
	// Change node 3 behind the group's back.
	must(c.nodes[3].db.Mkdir("rogue", 3, 1))
	must(c.nodes[1].proc.Engine.VerifyTick())
	c.run()
	if !hasMode(c.nodes[3], dfsm.ModeLeave) {
		t.Fatal("node 3 with different data did not leave")
	}
	c.converged()
}

// The 1024-byte name limit is the FUSE layer's (the kernel's, for upstream): memdb
// takes any name from a peer, as upstream's does, so nodes never disagree on which
// message applied. Names far past the limit travel in messages and in a sync.
func TestPeersLongNamesAreApplied(t *testing.T) {
	c := newCluster(t)
	c.start(1, nil)
	c.start(2, nil)
	c.run()
	dir := strings.Repeat("d", 1100)
	file := dir + "/" + strings.Repeat("f", 5000)
	moved := dir + "/" + strings.Repeat("m", 70000)
	c.must(1, func(a *App) error { return a.Mkdir(dir) })
	c.must(1, writeFile(file, "x"))
	c.must(2, writeFile(dir+"/"+strings.Repeat("g", 1025), "y"))
	c.must(1, func(a *App) error { return a.Rename(file, moved) })
	c.readAll(moved, "x")
	c.absent(file)

	c.start(3, nil)
	c.run()
	c.converged()
	c.readAll(moved, "x")
	c.readAll(dir+"/"+strings.Repeat("g", 1025), "y")
	c.must(3, func(a *App) error { return a.Delete(moved) })
	c.absent(moved)
	idx := c.converged()
	c.stop(3)
	re := c.openDB(3)
	defer re.Close()
	if !bytes.Equal(re.Index(), idx) {
		t.Fatal("reopened database differs from the synced tree")
	}
}

// A process that (re)joins while another quorate node's pmxcfs is away accepts no local
// change until it has synced with that node too: the absent node may hold acknowledged
// changes of its own, with a version that makes it the leader of that later sync, which
// would replace whatever the returning group acknowledged meanwhile.
func TestRejoinWaitsForEveryQuorateNode(t *testing.T) {
	c := newCluster(t)
	corosyncNodes := func() []uint32 { return []uint32{1, 2, 3} } // corosync runs on all three
	c.configure = func(n *node, cfg *Config) { cfg.QuorumNodes = corosyncNodes }
	for id := uint32(1); id <= 3; id++ {
		c.start(id, nil)
	}
	c.run()
	for id := uint32(1); id <= 3; id++ {
		if ok, missing := c.nodes[id].app.CaughtUp(); !ok {
			t.Fatalf("node %d not caught up with every node present (missing %v)", id, missing)
		}
	}
	c.stop(1)
	c.stop(2)
	// Node 3 stays in the group and keeps accepting changes, as upstream.
	if ok, _ := c.nodes[3].app.CaughtUp(); !ok {
		t.Fatal("a node that stayed in the group stopped accepting changes")
	}
	c.must(3, writeFile("alone-on-3", "3"))
	c.stop(3)
	c.start(1, nil)
	c.start(2, nil)
	c.run()
	for id := uint32(1); id <= 2; id++ {
		ok, missing := c.nodes[id].app.CaughtUp()
		if ok || len(missing) != 1 || missing[0] != 3 {
			t.Fatalf("node %d: caught up %v, missing %v; want waiting for node 3", id, ok, missing)
		}
	}
	// Before corosync's first quorum notification nothing is known of the others.
	unknown := New(Config{DB: c.nodes[1].db, Log: quietLogger(), QuorumNodes: func() []uint32 { return nil }})
	unknown.Attach(c.nodes[1].proc.Engine)
	if ok, _ := unknown.CaughtUp(); ok {
		t.Fatal("caught up without knowing the quorum membership")
	}
	c.start(3, nil)
	c.run()
	c.converged()
	c.readAll("alone-on-3", "3")
	for id := uint32(1); id <= 3; id++ {
		if ok, missing := c.nodes[id].app.CaughtUp(); !ok {
			t.Fatalf("node %d still waiting after node 3 returned (missing %v)", id, missing)
		}
	}
}

// A node alone in the group needs no confirmation of its changes: nobody could have missed
// them. pvecm adding a second node to a one-node cluster renames corosync.conf into place,
// which costs the node its quorum right after; the rename must still report success.
func TestAloneNodeNeedsNoConfirmation(t *testing.T) {
	c := newCluster(t)
	n := c.start(1, nil)
	c.run()
	m := FuseMessage{Path: "corosync.conf", HasPath: true}
	p, err := n.proc.Engine.Submit(MsgCreate, m.Encode())
	if err != nil {
		t.Fatal(err)
	}
	c.sim.Step()
	n.quorate.Store(false)
	c.run()
	if r, err := p.Result(); err != nil || r != 0 {
		t.Fatalf("result %d, %v; want success", r, err)
	}
}
