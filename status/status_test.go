package status

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/sirupsen/logrus"
)

func TestMain(m *testing.M) {
	logrus.SetOutput(io.Discard)
	os.Exit(m.Run())
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

type fakeVMs struct{ l memdb.VMList }

func (f fakeVMs) VMList() memdb.VMList { return f.l }

func newTest(t *testing.T) (*Status, *clock) {
	c := &clock{time.Unix(1700000000, 0)}
	s := New(Options{NodeName: "node1", NodeIP: "10.0.0.1", PID: 4242, Now: c.now})
	return s, c
}

// Local mode right after start, as upstream 9.1.6's status.c printed it (observed, see
// docs/upstream-behaviour.md#status-files): no cluster info so the short .members with
// version 0, every counter 1 after the memdb load, .vmlist version 1, empty local kvstore
// block.
func TestLocalModeAfterStart(t *testing.T) {
	s, _ := newTest(t)
	s.SetVMList(fakeVMs{memdb.VMList{Version: 1}})
	s.Reloaded()
	s.SetQuorate(true)

	if got, want := string(s.Members()), "{\n\"nodename\": \"node1\",\n\"version\": 0\n}\n"; got != want {
		t.Errorf(".members %q want %q", got, want)
	}
	if got, want := string(s.VMList()), "{\n\"version\": 1\n\n}\n"; got != want {
		t.Errorf(".vmlist %q want %q", got, want)
	}
	var want strings.Builder
	want.WriteString("{\n\"starttime\": 1700000000,\n\"clinfo\": 0,\n\"vmlist\": 1,\n")
	for _, p := range ObservedFiles {
		want.WriteString("\"" + p + "\": 1,\n")
	}
	want.WriteString("\"kvstore\": {\n\"node1\": {\n}\n}\n}\n")
	if got := string(s.Version()); got != want.String() {
		t.Errorf(".version\n%s\nwant\n%s", got, want.String())
	}
	// the first cluster-log entry (uid 1, ident root, tag cluster, our pid, priority 6)
	wantLog := "{\n\"data\": [\n" + `{"uid": 1, "time": 1700000000, "pri": 6, "tag": "cluster", "pid": 4242, "node": "node1", "user": "root", "msg": "starting cluster log"}` + "\n]\n}\n"
	if got := string(s.ClusterLogJSON()); got != wantLog {
		t.Errorf(".clusterlog %q", got)
	}
}

func TestObservedFiles(t *testing.T) {
	if len(ObservedFiles) != 43 || ObservedFiles[0] != "corosync.conf" || ObservedFiles[42] != "mapping/usb.cfg" {
		t.Fatal("observed list")
	}
	s, _ := newTest(t)
	s.FileChanged("storage.cfg")
	s.FileChanged("storage.cfg")
	s.FileChanged("/user.cfg") // a leading slash does not match upstream's table
	s.FileChanged("nodes/node1/qemu-server/100.conf")
	v := string(s.Version())
	if !strings.Contains(v, "\"storage.cfg\": 2,\n") || !strings.Contains(v, "\"user.cfg\": 0,\n") {
		t.Fatal(v)
	}
}

// .vmlist of memdb's golden scenario (memdb_test.go:TestScenarioGolden) as upstream's
// status.c:cfs_create_vmlist_msg printed it (docs/upstream-behaviour.md#errno-scenario).
func TestVMListGolden(t *testing.T) {
	s, _ := newTest(t)
	s.SetVMList(fakeVMs{memdb.VMList{Version: 2, VMs: map[uint32]memdb.VM{100: {Node: "n1", Type: "qemu", Version: 2}}}})
	want := "{\n\"version\": 2,\n\"ids\": {\n\"100\": { \"node\": \"n1\", \"type\": \"qemu\", \"version\": 2 }}\n\n}\n"
	if got := string(s.VMList()); got != want {
		t.Fatalf("%q", got)
	}
	s.SetVMList(fakeVMs{memdb.VMList{Version: 7, VMs: map[uint32]memdb.VM{
		200: {Node: "n2", Type: "lxc", Version: 5}, 100: {Node: "n1", Type: "qemu", Version: 3}}}})
	want = "{\n\"version\": 7,\n\"ids\": {\n\"100\": { \"node\": \"n1\", \"type\": \"qemu\", \"version\": 3 },\n\"200\": { \"node\": \"n2\", \"type\": \"lxc\", \"version\": 5 }}\n\n}\n"
	if got := string(s.VMList()); got != want {
		t.Fatalf("%q", got)
	}
	if !json.Valid(s.VMList()) {
		t.Fatal("invalid json")
	}
}

// kv semantics of status.c:cfs_status_set and cfs_create_status_msg, as upstream 9.1.6
// showed them over IPC (docs/upstream-behaviour.md#status-values).
func TestSetGetStatus(t *testing.T) {
	s, _ := newTest(t)
	if err := s.SetStatus("kv/test", []byte("value1\x00")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetStatus("", "kv/test"); err != nil || string(v) != "value1\x00" {
		t.Fatalf("%q %v", v, err)
	}
	if v, err := s.GetStatus("node1", "kv/test"); err != nil || len(v) != 7 {
		t.Fatalf("%q %v", v, err)
	}
	if _, err := s.GetStatus("", "missing"); !errors.Is(err, syscall.ENOENT) {
		t.Fatal(err)
	}
	if _, err := s.GetStatus("nosuchnode", "kv/test"); !errors.Is(err, syscall.ENOENT) {
		t.Fatal(err)
	}
	s.SetStatus("kv/test", []byte("value2\x00"))
	s.SetStatus("tasklist", []byte("[]\x00"))
	if v := string(s.Version()); !strings.Contains(v, "\"node1\": {\n\"kv/test\": 1,\n\"tasklist\": 0}\n}\n}\n") {
		t.Fatal(v)
	}
	if err := s.SetStatus("kv/test", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetStatus("", "kv/test"); !errors.Is(err, syscall.ENOENT) {
		t.Fatal("len 0 did not delete")
	}
	if err := s.SetStatus("kv/big", make([]byte, 40000)); !errors.Is(err, syscall.EFBIG) {
		t.Fatal(err)
	}
	if err := s.SetStatus("kv/max", make([]byte, MaxStatusSize)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, []byte("x"), append(make([]byte, 4096), 0)} {
		if err := s.SetStatus("rrd/pve2-node/node1", bad); !errors.Is(err, syscall.ENOMEM) {
			t.Fatalf("rrd %q: %v", bad, err)
		}
	}
	if err := s.SetStatus("nodeip", []byte("10.0.0.9")); !errors.Is(err, syscall.ENOMEM) {
		t.Fatal(err)
	}
	// rrd and nodeip values are not readable as kv
	s.SetStatus("nodeip", []byte("10.0.0.9\x00"))
	if _, err := s.GetStatus("", "nodeip"); !errors.Is(err, syscall.ENOENT) {
		t.Fatal(err)
	}
	if kv := s.LocalKV(); len(kv) != 2 || kv[0].Key != "kv/max" || kv[1].Key != "tasklist" {
		t.Fatalf("%+v", kv)
	}
}

func TestNodeIPAndMembers(t *testing.T) {
	s, _ := newTest(t)
	if got := string(s.SyncedNodeIP()); got != "10.0.0.1\x00" {
		t.Fatalf("%q", got)
	}
	s.SetStatus("nodeip", []byte("10.0.0.101\x00"))
	s.SetStatus("nodeip", []byte("10.0.0.101\x00")) // unchanged: no bump
	if got := string(s.SyncedNodeIP()); got != "10.0.0.101\x00" {
		t.Fatalf("%q", got)
	}
	if got := string(s.Members()); got != "{\n\"nodename\": \"node1\",\n\"version\": 1\n}\n" {
		t.Fatalf("%q", got)
	}
	s.SetClusterInfo("testcluster", 1, []Node{{3, "node3", 1}, {1, "node1", 1}, {2, "node2", 1}})
	s.SetQuorate(true)
	s.SetMembers([]uint32{1, 2})
	s.SetNodeStatus(2, "nodeip", []byte("10.0.0.2\x00"))
	s.SetNodeStatus(9, "kv/x", []byte("ignored\x00")) // unknown nodeid
	s.SetNodeStatus(2, "kv/test", []byte("v2\x00"))
	// status.c:cfs_create_memberlist_msg layout
	want := "{\n\"nodename\": \"node1\",\n\"version\": 4,\n" + // nodeip, cluster info, confchg, node2 nodeip
		"\"cluster\": { \"name\": \"testcluster\", \"version\": 1, \"nodes\": 3, \"quorate\": 1 },\n" +
		"\"nodelist\": {\n" +
		"  \"node1\": { \"id\": 1, \"online\": 1, \"ip\": \"10.0.0.101\"},\n" +
		"  \"node2\": { \"id\": 2, \"online\": 1, \"ip\": \"10.0.0.2\"},\n" +
		"  \"node3\": { \"id\": 3, \"online\": 0}\n" +
		"  }\n}\n"
	if got := string(s.Members()); got != want {
		t.Fatalf("\n%s\nwant\n%s", got, want)
	}
	if !json.Valid(s.Members()) || !json.Valid(s.Version()) {
		t.Fatal("invalid json")
	}
	if v, err := s.GetStatus("node2", "kv/test"); err != nil || string(v) != "v2\x00" {
		t.Fatal(v, err)
	}
	if !strings.HasSuffix(string(s.Version()), "\"kvstore\": {\n\"node1\": {\n}\n,\n\"node2\": {\n\"kv/test\": 0}\n}\n}\n") {
		t.Fatal(string(s.Version()))
	}
	// a new node list keeps kv tables and online flags by nodeid
	s.SetClusterInfo("testcluster", 2, []Node{{1, "node1", 1}, {2, "node2", 1}})
	if v, err := s.GetStatus("node2", "kv/test"); err != nil || string(v) != "v2\x00" {
		t.Fatal(v, err)
	}
	if !strings.Contains(string(s.Members()), "\"node2\": { \"id\": 2, \"online\": 1,") {
		t.Fatal(string(s.Members()))
	}
}

// status.c:cfs_rrd_dump: lines then a NUL; 300 s expiry; 2 s cache.
func TestRRDDump(t *testing.T) {
	var hooked []string
	c := &clock{time.Unix(1700000000, 0)}
	s := New(Options{NodeName: "vm", Now: c.now, RRDUpdate: func(k string, v []byte) { hooked = append(hooked, k) }})
	if got := s.RRDDump(); !bytes.Equal(got, []byte{0}) {
		t.Fatalf("%q", got)
	}
	c.t = c.t.Add(2 * time.Second)
	s.SetStatus("rrd/pve2-node/vm", []byte("1234:0:1700000000:0.5\x00"))
	s.SetStatus("rrd/pve2-storage/vm/local", []byte("1700000000:10:5\x00"))
	want := "pve2-node/vm:1234:0:1700000000:0.5\npve2-storage/vm/local:1700000000:10:5\n\x00"
	if got := string(s.RRDDump()); got != want {
		t.Fatalf("%q", got)
	}
	if len(hooked) != 2 || hooked[0] != "pve2-node/vm" {
		t.Fatal(hooked)
	}
	c.t = c.t.Add(200 * time.Second)
	s.SetStatus("rrd/pve2-node/vm", []byte("new\x00"))
	c.t = c.t.Add(1 * time.Second)
	// younger than 2 s: the cached dump
	s.RRDDump()
	c.t = c.t.Add(100 * time.Second)
	if got := string(s.RRDDump()); got != "pve2-node/vm:new\n\x00" {
		t.Fatalf("expiry: %q", got)
	}
	s.SetStatus("rrd/pve2-node/other", []byte("x\x00"))
	if got := string(s.RRDDump()); got != "pve2-node/vm:new\n\x00" {
		t.Fatalf("cache: %q", got)
	}
}

func TestLogMessage(t *testing.T) {
	s, c := newTest(t)
	c.t = c.t.Add(5 * time.Second)
	e, err := s.LogMessage("root@pam", "wirecap", 23487, 6, "hello \"quoted\" ä tab\tend")
	if err != nil {
		t.Fatal(err)
	}
	// As upstream showed over IPC and in its wire trace (step d): the first client message has
	// uid 2 and this escaping
	if e.UID != 2 || e.Msg != `hello \"quoted\" \u00e4 tab#009end` || e.Node != "node1" || e.Time != 1700000005 {
		t.Fatalf("%+v", e)
	}
	if got := string(s.ClusterLogDump("root@pam", 0)); !strings.Contains(got, `"uid": 2`) || strings.Contains(got, `"uid": 1`) {
		t.Fatal(got)
	}
}
