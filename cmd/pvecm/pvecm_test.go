package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/corosyncconf"
)

func TestParseArgs(t *testing.T) {
	spec := withLinks(optionSpec{"force": true, "nodeid": false, "new_node_ip": false})
	pos, opts, err := parseArgs([]string{"node2", "--force", "1", "--nodeid=3", "-new_node_ip", "10.0.0.2", "--link0", "address=10.1.0.2,priority=5"}, spec)
	if err != nil {
		t.Fatal(err)
	}
	want := options{"force": "1", "nodeid": "3", "new_node_ip": "10.0.0.2", "link0": "address=10.1.0.2,priority=5"}
	if !reflect.DeepEqual(pos, []string{"node2"}) || !reflect.DeepEqual(opts, want) {
		t.Fatalf("pos %q opts %v", pos, opts)
	}
	// A boolean followed by a positional argument leaves it positional.
	pos, opts, err = parseArgs([]string{"--force", "node2"}, spec)
	if err != nil || !reflect.DeepEqual(pos, []string{"node2"}) || opts["force"] != "1" {
		t.Fatalf("pos %q opts %v err %v", pos, opts, err)
	}
	for _, bad := range [][]string{{"--bogus"}, {"--nodeid"}, {"--force=maybe"}} {
		if _, _, err := parseArgs(bad, spec); err == nil {
			t.Errorf("parseArgs(%q) accepted", bad)
		}
	}
	links, err := parseLinks(options{"link0": "10.0.0.1", "link1": "address=10.1.0.1,priority=20"})
	if err != nil || links[0].Address != "10.0.0.1" || links[1] != (corosyncconf.Link{Address: "10.1.0.1", Priority: 20}) {
		t.Fatalf("links %v %v", links, err)
	}
	if _, err := parseLinks(options{"link0": "priority=3"}); err == nil {
		t.Error("link without address accepted")
	}
}

func twoNodeConf(t *testing.T) *corosyncconf.Config {
	t.Helper()
	coeff := 125
	cfg := corosyncconf.NewClusterConfig("lab", "a", 1, 1, map[int]corosyncconf.Link{0: {Address: "10.0.0.1"}}, &coeff)
	if _, err := addNode(cfg, addNodeRequest{name: "b", votes: -1, newNodeIP: "10.0.0.2", apiVer: 1}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAddNode(t *testing.T) {
	cfg := twoNodeConf(t)
	if _, err := addNode(cfg, addNodeRequest{name: "d", votes: -1, newNodeIP: "10.0.0.4", apiVer: 1, nodeID: 4}); err != nil {
		t.Fatal(err)
	}
	// The lowest free id is 3, even with 4 taken.
	if _, err := addNode(cfg, addNodeRequest{name: "c", votes: -1, newNodeIP: "10.0.0.3", apiVer: 1}); err != nil {
		t.Fatal(err)
	}
	nodes, _ := cfg.Nodes()
	got := map[string][2]int{}
	for n, node := range nodes {
		got[n] = [2]int{node.ID, node.Votes}
	}
	if want := map[string][2]int{"a": {1, 1}, "b": {2, 1}, "c": {3, 1}, "d": {4, 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	if nodes["c"].Links[0] != "10.0.0.3" {
		t.Errorf("c link0 = %q", nodes["c"].Links[0])
	}
	if !strings.Contains(cfg.Format(), "  node {\n    name: c\n    nodeid: 3\n    quorum_votes: 1\n    ring0_addr: 10.0.0.3\n  }\n") {
		t.Errorf("layout:\n%s", cfg.Format())
	}

	for _, tc := range []struct {
		req  addNodeRequest
		want string
	}{
		{addNodeRequest{name: "e", votes: -1, newNodeIP: "10.0.0.2", apiVer: 1}, "address '10.0.0.2' already used on link ring0_addr by node 'b'"},
		{addNodeRequest{name: "e", votes: -1, links: map[int]corosyncconf.Link{0: {Address: "10.0.0.1"}}, apiVer: 1}, "already used"},
		{addNodeRequest{name: "e", votes: -1, apiVer: 1}, "no links and no fallback ip"},
		{addNodeRequest{name: "e", votes: -1, links: map[int]corosyncconf.Link{1: {Address: "10.9.0.1"}}, apiVer: 1}, "link 0 exists in cluster config but wasn't specified"},
		{addNodeRequest{name: "e", votes: -1, links: map[int]corosyncconf.Link{0: {Address: "10.0.0.9"}, 1: {Address: "10.9.0.1"}}, apiVer: 1}, "link 1 specified for new node doesn't exist"},
		{addNodeRequest{name: "b", votes: -1, newNodeIP: "10.0.0.2", apiVer: 1}, "can't add existing node 'b'"},
		{addNodeRequest{name: "b", votes: 2, force: true, newNodeIP: "10.0.0.2", apiVer: 1}, "can't add existing node 'b'"},
		{addNodeRequest{name: "e", votes: -1, nodeID: 2, newNodeIP: "10.0.0.9", apiVer: 1}, "node id 2 is already used by node 'b'"},
	} {
		if _, err := addNode(cfg, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("addNode(%+v) = %v, want %q", tc.req, err, tc.want)
		}
	}
	// A rejoining node (pvecm add passes --force 1) keeps its id and votes.
	msgs, err := addNode(cfg, addNodeRequest{name: "b", votes: -1, force: true, newNodeIP: "10.0.0.2", apiVer: 1})
	if err != nil || len(msgs) != 1 || msgs[0] != "forcing overwrite of configured node 'b'" {
		t.Fatalf("forced re-add: %v %v", msgs, err)
	}
	// An old joiner (API version 0) passes its address as --link0.
	if _, err := addNode(cfg, addNodeRequest{name: "f", votes: 0, links: map[int]corosyncconf.Link{0: {Address: "10.0.0.6"}}}); err != nil {
		t.Fatal(err)
	}
	nodes, _ = cfg.Nodes()
	if nodes["f"].Links[0] != "10.0.0.6" || nodes["f"].Votes != -1 {
		t.Errorf("f = %+v", nodes["f"])
	}
}

func TestDelNode(t *testing.T) {
	cfg := twoNodeConf(t)
	if _, _, err := delNode(cfg, "x"); err == nil || err.Error() != "Node/IP: x is not a known host of the cluster." {
		t.Fatalf("unknown node: %v", err)
	}
	name, id, err := delNode(cfg, "10.0.0.2")
	if err != nil || name != "b" || id != 2 {
		t.Fatalf("delNode by address = %q %d %v", name, id, err)
	}
	nodes, _ := cfg.Nodes()
	if len(nodes) != 1 || nodes["a"] == nil {
		t.Fatalf("nodes after delete: %v", nodes)
	}
}

func testHost(t *testing.T) (*host, *bytes.Buffer) {
	t.Helper()
	d := t.TempDir()
	var out bytes.Buffer
	h := &host{
		pveDir: filepath.Join(d, "pve"), corosyncDir: filepath.Join(d, "corosync"),
		libDir: filepath.Join(d, "lib"), sshDir: filepath.Join(d, "ssh"),
		localLock: filepath.Join(d, "pvecm.lock"), systemctl: "false",
		stdout: &out, stderr: &out, stdin: strings.NewReader(""),
	}
	for _, p := range []string{h.pveDir, h.corosyncDir, h.libDir, h.sshDir} {
		os.MkdirAll(p, 0o755)
	}
	return h, &out
}

func TestAuthorizedKeysMerge(t *testing.T) {
	h, _ := testHost(t)
	own := "ssh-rsa AAAAown root@a\n"
	os.WriteFile(filepath.Join(h.sshDir, "id_rsa.pub"), []byte(own), 0o644)
	os.WriteFile(h.rootAuthorizedKeys(), []byte("ssh-ed25519 AAAAold admin@laptop\n"), 0o600)
	h.linkAuthorizedKeys()
	if st, err := os.Lstat(h.rootAuthorizedKeys()); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("root authorized_keys is not a symlink: %v", err)
	}
	// A key that is already there (with another comment) is not added twice.
	os.WriteFile(h.clusterAuthorizedKeys(), []byte("ssh-ed25519 AAAAold admin@laptop\nssh-rsa AAAAown other-comment\n"), 0o600)
	if err := h.mergeAuthorizedKeys(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(h.rootAuthorizedKeys())
	if want := "ssh-ed25519 AAAAold admin@laptop\nssh-rsa AAAAown other-comment\n"; string(got) != want {
		t.Fatalf("merged keys:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(h.rootAuthorizedKeys() + ".org"); err == nil {
		t.Error("backup of the old authorized_keys left behind after a successful import")
	}
}

func TestBackupDBKeepsTen(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("sqlite3 not installed")
	}
	h, _ := testHost(t)
	if out, err := exec.Command("sqlite3", h.dbFile(), "CREATE TABLE tree (inode INTEGER); INSERT INTO tree VALUES (42);").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	base := time.Unix(1700000000, 0)
	for i := 0; i < 12; i++ {
		if err := h.backupDB(base.Add(time.Duration(i) * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(h.libDir, "backup", "config-*.sql.gz"))
	if len(files) != 10 || filepath.Base(files[0]) != "config-1700000002.sql.gz" {
		t.Fatalf("backups: %v", files)
	}
	f, _ := os.Open(files[9])
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sql, _ := io.ReadAll(zr)
	if !strings.Contains(string(sql), "INSERT INTO tree VALUES(42);") {
		t.Fatalf("dump:\n%s", sql)
	}
}

func TestRefusals(t *testing.T) {
	h, out := testHost(t)
	os.WriteFile(h.clusterConf(), []byte("totem {\n config_version: 1\n}\n"), 0o644)
	if code := run([]string{"create", "lab"}, h); code != 255 || !strings.Contains(out.String(), "cluster config '"+h.clusterConf()+"' already exists") {
		t.Errorf("create with existing config: %d %q", code, out)
	}
	out.Reset()
	if code := run([]string{"create", "a-name-longer-than-15"}, h); code != 255 || !strings.Contains(out.String(), "may only be 15 characters long") {
		t.Errorf("long cluster name: %d %q", code, out)
	}
	out.Reset()
	self, _ := nodeName()
	if code := run([]string{"delnode", self}, h); code != 255 || out.String() != "Cannot delete myself from cluster!\n" {
		t.Errorf("delnode self: %d %q", code, out)
	}
	out.Reset()
	if code := run([]string{"delnode", "other"}, h); code != 255 || out.String() != "cluster not ready - no quorum?\n" {
		t.Errorf("delnode without pmxcfs: %d %q", code, out)
	}
	out.Reset()
	if code := run([]string{"expected", "0"}, h); code != 255 || !strings.Contains(out.String(), "minimum value of 1") {
		t.Errorf("expected 0: %d %q", code, out)
	}
	out.Reset()
	os.Remove(h.clusterConf())
	if code := run([]string{"nodes"}, h); code != 255 || !strings.Contains(out.String(), "does not exist - is this node part of a cluster?") {
		t.Errorf("nodes without cluster: %d %q", code, out)
	}
	out.Reset()
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(h.pveDir)
	if code := run([]string{"add", "10.0.0.1", "--use_ssh"}, h); code != 255 || !strings.Contains(out.String(), "Navigate out of "+h.pveDir) {
		t.Errorf("add from inside /etc/pve: %d %q", code, out)
	}
}
