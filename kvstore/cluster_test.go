package kvstore

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/dfsm/dfsmtest"
	"github.com/pmxcfs-go/pmxcfs/status"
)

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// cluster runs KVSTORE apps, each over its own status.Status, on the dfsm
// simulator. Nodes 1..3 are in the cmap node list as node1..node3.
type cluster struct {
	t     *testing.T
	sim   *dfsmtest.Simulator
	nodes map[uint32]*node
}

type node struct {
	st   *status.Status
	app  *App
	proc *dfsmtest.SimProc
}

var cmapNodes = []status.Node{{ID: 1, Name: "node1", Votes: 1}, {ID: 2, Name: "node2", Votes: 1}, {ID: 3, Name: "node3", Votes: 1}}

func newCluster(t *testing.T) *cluster {
	return &cluster{t: t, sim: dfsmtest.NewSimulator(1_800_000_000), nodes: map[uint32]*node{}}
}

func (c *cluster) start(id uint32) *node {
	now := c.sim.Clock.Now
	st := status.New(status.Options{NodeName: fmt.Sprintf("node%d", id), NodeIP: fmt.Sprintf("10.0.0.%d", id),
		PID: 1000 + id, Now: func() time.Time { return now() }, Log: logrus.NewEntry(quietLogger())})
	st.SetClusterInfo("test", 1, cmapNodes)
	n := &node{st: st, app: New(Config{Status: st, Log: quietLogger()})}
	p, err := c.sim.Spawn(id, dfsm.Config{Name: GroupName, ProtocolVersion: ProtocolVersion, App: n.app, Log: quietLogger()})
	if err != nil {
		c.t.Fatal(err)
	}
	n.app.Attach(p.Engine)
	n.proc = p
	c.nodes[id] = n
	return n
}

func (c *cluster) run() {
	c.t.Helper()
	if c.sim.Run(100_000) == 100_000 {
		c.t.Fatal("simulator did not settle")
	}
	for id, n := range c.nodes {
		if m := n.proc.Engine.Mode(); m != dfsm.ModeSynced {
			c.t.Fatalf("node%d in mode %s", id, m)
		}
	}
}

// set is what the IPC SET_STATUS handler does: store, then broadcast.
func (n *node) set(t *testing.T, key, value string) {
	t.Helper()
	if err := n.st.SetStatus(key, []byte(value)); err != nil {
		t.Fatal(err)
	}
	if err := n.app.BroadcastStatus(key, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

func (n *node) logMsg(t *testing.T, msg string) {
	t.Helper()
	e, err := n.st.LogMessage("root@pam", "test", 4242, 6, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.app.BroadcastLog(e); err != nil {
		t.Fatal(err)
	}
}

func wantStatus(t *testing.T, st *status.Status, node, key, want string) {
	t.Helper()
	got, err := st.GetStatus(node, key)
	if want == "" {
		if err != syscall.ENOENT {
			t.Errorf("%s on %s: %q, %v; want ENOENT", key, node, got, err)
		}
		return
	}
	if err != nil || string(got) != want {
		t.Errorf("%s of %s: %q, %v; want %q", key, node, got, err, want)
	}
}

func TestStatusReplicates(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id)
	}
	c.run()
	c.nodes[1].set(t, "kv/test", "value1\x00")
	c.nodes[2].set(t, "kv/test", "value2\x00")
	c.run()
	for id, n := range c.nodes {
		wantStatus(t, n.st, "node1", "kv/test", "value1\x00")
		wantStatus(t, n.st, "node2", "kv/test", "value2\x00")
		wantStatus(t, n.st, "node3", "kv/test", "")
		if id == 1 {
			wantStatus(t, n.st, "", "kv/test", "value1\x00")
		}
	}
	// An empty value deletes the key everywhere (status.c:cfs_status_set, cfs_kvstore_node_set).
	c.nodes[1].set(t, "kv/test", "")
	c.run()
	for _, n := range c.nodes {
		wantStatus(t, n.st, "node1", "kv/test", "")
	}
}

func TestNodeIPOnSync(t *testing.T) {
	c := newCluster(t)
	c.start(1)
	c.start(2)
	c.run()
	// node1's IPC-set address wins over its resolved one at every later sync.
	c.nodes[1].set(t, "nodeip", "10.9.9.1\x00")
	c.run()
	c.start(3)
	c.run()
	for id, n := range c.nodes {
		m := string(n.st.Members())
		for _, want := range []string{
			`"node1": { "id": 1, "online": 1, "ip": "10.9.9.1"}`,
			`"node2": { "id": 2, "online": 1, "ip": "10.0.0.2"}`,
			`"node3": { "id": 3, "online": 1, "ip": "10.0.0.3"}`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("node%d .members lacks %s:\n%s", id, want, m)
			}
		}
	}
	c.sim.Stop(c.nodes[3].proc)
	delete(c.nodes, 3)
	c.run()
	if m := string(c.nodes[1].st.Members()); !strings.Contains(m, `"node3": { "id": 3, "online": 0, "ip": "10.0.0.3"}`) {
		t.Errorf("node3 still online after it left:\n%s", m)
	}
}

func TestClusterLogOnceEverywhere(t *testing.T) {
	c := newCluster(t)
	for id := uint32(1); id <= 3; id++ {
		c.start(id)
	}
	c.run()
	c.nodes[2].logMsg(t, `hello "world"`)
	c.run()
	for id, n := range c.nodes {
		dump := string(n.st.ClusterLogJSON())
		if k := strings.Count(dump, `hello \"world\"`); k != 1 {
			t.Errorf("node%d has the entry %d times:\n%s", id, k, dump)
		}
	}
	// A re-sync (a node leaves) must not duplicate it either.
	c.sim.Stop(c.nodes[3].proc)
	delete(c.nodes, 3)
	c.run()
	for id, n := range c.nodes {
		if k := strings.Count(string(n.st.ClusterLogJSON()), `hello \"world\"`); k != 1 {
			t.Errorf("after resync node%d has the entry %d times", id, k)
		}
	}
}

func TestLateJoinerGetsMergedLogAndKV(t *testing.T) {
	c := newCluster(t)
	c.start(1)
	c.start(2)
	c.run()
	c.nodes[1].logMsg(t, "before node3")
	c.nodes[2].set(t, "kv/x", "from2\x00")
	c.run()
	c.sim.Clock.T += 10
	var sends []string
	c.sim.Describe = func(m *dfsm.Message) string {
		if key, _, err := DecodeUpdate(m.Payload); m.IsNormal() && m.Subtype == MsgUpdate && err == nil {
			return key
		}
		return ""
	}
	c.sim.Trace = func(line string) {
		if strings.HasPrefix(line, "2/") && strings.Contains(line, " send NORMAL") {
			sends = append(sends, line[strings.LastIndexByte(line, ' ')+1:])
		}
	}
	n3 := c.start(3)
	c.run()
	// As upstream (wire README): local kv entries first, then nodeip.
	if strings.Join(sends, ",") != "kv/x,nodeip" {
		t.Errorf("node2 sent %v after the sync, want [kv/x nodeip]", sends)
	}
	dump := string(n3.st.ClusterLogJSON())
	for _, want := range []string{`"msg": "before node3"`, `"pid": 1001, "node": "node1"`,
		`"pid": 1002, "node": "node2"`, `"pid": 1003, "node": "node3"`} {
		if strings.Count(dump, want) != 1 {
			t.Errorf("node3's log lacks %s once:\n%s", want, dump)
		}
	}
	// All logs are equal after the merge.
	for id, n := range c.nodes {
		if got := string(n.st.ClusterLogJSON()); got != dump {
			t.Errorf("node%d log differs from node3's:\n%s", id, got)
		}
	}
	// node2 re-sent its kv entries at the sync (cfs_kvstore_sync).
	wantStatus(t, n3.st, "node2", "kv/x", "from2\x00")
}

// rawNormal builds a NORMAL message as node p would send it.
func rawNormal(subtype uint16, count uint64, payload []byte) []byte {
	m := dfsm.Message{Header: dfsm.Header{Type: dfsm.MsgNormal, Subtype: subtype}, Count: count, Payload: payload}
	return m.Encode()
}

func TestMalformedIgnored(t *testing.T) {
	c := newCluster(t)
	c.start(1)
	c.start(2)
	c.run()
	long := bytes.Repeat([]byte("k"), KeyFieldLen) // no NUL in the key field
	good, _ := c.nodes[1].st.LogMessage("root", "t", 1, 6, "ok")
	entry, _ := good.Marshal()
	for i, p := range [][]byte{
		nil, []byte("short\x00"), long, append(long, 0, 1, 2),
	} {
		if err := c.sim.Inject(c.nodes[1].proc, rawNormal(MsgUpdate, uint64(100+i), p)); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range [][]byte{nil, entry[:40], entry[:len(entry)-1], append(entry, 0)} {
		if err := c.sim.Inject(c.nodes[1].proc, rawNormal(MsgLog, uint64(200+i), p)); err != nil {
			t.Fatal(err)
		}
	}
	for i, sub := range []uint16{0, MsgUpdateComplete, 4, 0xffff} {
		if err := c.sim.Inject(c.nodes[1].proc, rawNormal(sub, uint64(300+i), []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	c.run() // every engine still SYNCED
	if strings.Contains(string(c.nodes[2].st.ClusterLogJSON()), `"msg": "ok"`) {
		t.Error("a damaged LOG entry was inserted")
	}
	// The group still works afterwards.
	c.nodes[1].set(t, "kv/after", "y\x00")
	c.run()
	wantStatus(t, c.nodes[2].st, "node1", "kv/after", "y\x00")
}

func TestDeliverResults(t *testing.T) {
	st := status.New(status.Options{NodeName: "node1", Log: logrus.NewEntry(quietLogger())})
	st.SetClusterInfo("test", 1, cmapNodes)
	a := New(Config{Status: st, Log: quietLogger()})
	other := dfsm.Member{NodeID: 2, PID: 7}
	for _, tc := range []struct {
		sub  uint16
		want int
	}{{MsgUpdate, 0}, {MsgLog, 0}, {MsgUpdateComplete, -int(syscall.EACCES)}, {0, -int(syscall.EACCES)}, {9, -int(syscall.EACCES)}} {
		res, err := a.Deliver(other, tc.sub, 0, []byte("garbage"))
		if err != nil || res != tc.want {
			t.Errorf("subtype %d: %d, %v; want %d", tc.sub, res, err, tc.want)
		}
	}
	// Without an engine nothing can be sent.
	if err := a.BroadcastStatus("kv/a", []byte("b\x00")); err != syscall.EACCES {
		t.Errorf("BroadcastStatus without engine: %v", err)
	}
	if err := a.ProcessUpdate(nil, other, nil); err == nil {
		t.Error("ProcessUpdate accepted an update")
	}
}

// Our own messages are ignored on delivery, whatever their subtype: the
// writer already applied them (upstream checks the sender first).
func TestOwnMessagesIgnored(t *testing.T) {
	c := newCluster(t)
	n := c.start(1)
	c.run()
	res, err := n.proc.Engine.Submit(MsgUpdateComplete, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	c.run()
	if r, err := res.Result(); err != nil || r != 0 {
		t.Errorf("own unknown subtype: %d, %v; want 0", r, err)
	}
}
