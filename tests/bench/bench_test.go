package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// corosync's own configuration parser is the oracle for the generated file.
// Outside a node no nodelist entry matches a local address, and that check
// comes only after the whole file was parsed and validated, so it is the one
// error accepted here (the bench test runs the full check inside the nodes).
func TestCorosyncConfAcceptedByCorosync(t *testing.T) {
	if _, err := exec.LookPath("corosync"); err != nil {
		t.Skip("corosync not installed")
	}
	// corosync creates its compiled-in log file before reading any config, so
	// it runs in a private mount namespace with a tmpfs on /var/log/corosync.
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "authkey")
	if out, err := exec.Command("corosync-keygen", "-k", key).CombinedOutput(); err != nil {
		t.Skipf("corosync-keygen: %v: %s", err, out)
	}
	// On the host, log to stderr and read the key from the temp dir: nothing
	// may be written to the host's /var/log/corosync or read from /etc/corosync.
	conf := CorosyncConf("benchcluster", "10.123.45", 3, 1000)
	conf = strings.Replace(conf, "to_stderr: no", "to_stderr: yes", 1)
	conf = strings.Replace(conf, "to_logfile: yes", "to_logfile: no", 1)
	conf = strings.Replace(conf, "totem {", "totem {\n  keyfile: "+key, 1)
	path := filepath.Join(dir, "corosync.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
		`mount -t tmpfs bench-test /var/log/corosync && exec corosync -t -c "$0"`, path).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No valid name found for local host") {
		t.Fatalf("corosync -t rejects the generated config: %v\n%s", err, out)
	}
}

// Linux refuses interface names longer than 15 bytes (IFNAMSIZ-1).
func TestLinkNamesFitIFNAMSIZ(t *testing.T) {
	b, err := New(Options{ID: "abcdef", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{b.BridgeName(), b.VethName(32)} {
		if len(name) > 15 {
			t.Errorf("link name %q longer than 15 bytes", name)
		}
	}
}

func TestNewRejectsUnsafeSettings(t *testing.T) {
	for _, opt := range []Options{{ID: "UPPER"}, {ID: "toolong1"}, {ID: "a/b"}, {ID: "ok", Dir: "/var/tmp/x"}, {ID: "ok", Dir: "/run/x"}} {
		if _, err := New(opt); err == nil {
			t.Errorf("New(%+v) accepted", opt)
		}
	}
	b1, _ := New(Options{ID: "one"})
	b2, _ := New(Options{ID: "two"})
	if b1.IP(1) == b2.IP(1) || !strings.HasPrefix(b1.IP(1), "10.") {
		t.Errorf("subnets %s and %s: want distinct 10.x.y.0/24", b1.IP(1), b2.IP(1))
	}
}

func TestHiddenDirsKeepsWhatNodesCannotSee(t *testing.T) {
	tmp := t.TempDir() // under /tmp, which nodes cover
	inner := filepath.Join(tmp, "bin")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := hiddenDirs([]string{inner, "/usr/bin", tmp, tmp + "/../" + filepath.Base(tmp)}, false)
	if err != nil || strings.Join(got, " ") != tmp {
		t.Errorf("hiddenDirs = %q, %v; want just %s", got, err, tmp)
	}
	if got, _ := hiddenDirs([]string{"/root/.cache"}, false); len(got) != 0 {
		t.Errorf("/root without PrivateRoot: %q", got)
	}
	for _, bad := range []string{"/tmp", "/var", "/etc/pve", "/etc/pve/x", filepath.Join(tmp, "missing")} {
		if _, err := hiddenDirs([]string{bad}, true); err == nil {
			t.Errorf("share %s accepted", bad)
		}
	}
}

// A checkout under /tmp or /var: its files are at the same path in every node,
// read-only, while the rest of the node's /tmp stays its own.
func TestSharedDirsAtTheirPathInNodes(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	underTmp := t.TempDir()
	underVar, err := os.MkdirTemp("/var/tmp", "bench-share-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(underVar) })
	for _, d := range []string{underTmp, underVar} {
		if err := os.WriteFile(filepath.Join(d, "tool"), []byte("#!/bin/sh\necho shared-ok\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	b, err := New(Options{Dir: dir, Unclustered: true, Share: []string{underTmp, underVar}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Down(); err != nil {
			t.Errorf("down: %v", err)
		}
		if _, err := os.Stat(filepath.Join(b.NodeDir(1), "share")); !os.IsNotExist(err) {
			t.Errorf("stage directories left after down: %v", err)
		}
		for _, d := range []string{underTmp, underVar} {
			if _, err := os.Stat(filepath.Join(d, "tool")); err != nil {
				t.Errorf("shared file gone on the host: %v", err)
			}
		}
	})
	if err := b.Up(1); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{underTmp, underVar} {
		if out, err := b.Exec(1, filepath.Join(d, "tool")); err != nil || out != "shared-ok\n" {
			t.Errorf("%s/tool in the node: %q, %v", d, out, err)
		}
		if _, err := b.Exec(1, "touch", filepath.Join(d, "new")); err == nil {
			t.Errorf("%s is writable from the node", d)
		}
	}
	if _, err := b.Exec(1, "test", "-e", filepath.Join(dir, "state.json")); err == nil {
		t.Error("the node sees the host's /tmp beside the shared directory")
	}
	if out, err := b.Exec(1, "sh", "-c", "echo x > /tmp/node-own && cat /tmp/node-own"); err != nil || out != "x\n" {
		t.Errorf("node's own /tmp: %q, %v", out, err)
	}
	if _, err := os.Stat("/tmp/node-own"); err == nil {
		t.Error("a node's /tmp write reached the host")
	}
}
