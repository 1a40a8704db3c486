package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/tests/bench"
)

// TestPvecmBuildsACluster drives our pvecm on three stand-alone bench nodes, each running
// pmxcfs (no cluster yet) and an sshd: `pvecm create` on node 1, `pvecm add node1-ip` on
// nodes 2 and 3 (SSH to node 1, which runs `pvecm addnode`), then status, nodes, expected
// and delnode, with the refusals an operator relies on (issue 6, item 2).
func TestPvecmBuildsACluster(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	pmxcfs, _ := filepath.Abs(pmxcfsBinary()) // PMXCFS_BIN may name upstream's
	pvecm := filepath.Join(filepath.Dir(file), "..", "bin", "pvecm")
	for _, bin := range []string{pmxcfs, pvecm} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("no binary %s (run make build)", bin)
		}
	}
	for _, tool := range []string{"/usr/sbin/sshd", "ssh", "ssh-keygen", "sqlite3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("pvecm test needs %s", tool)
		}
	}
	systemctl := filepath.Join(filepath.Dir(file), "testdata", "bench-systemctl")

	// The daemons pvecm starts are not the bench's; they are stopped cleanly before Down.
	b := startBenchWith(t, 3, bench.Options{Unclustered: true, PrivateRoot: true},
		[]string{"var-log-corosync/pmxcfs.log", "sshd.log"}, func(b *bench.Bench) {
			for i := 1; i <= b.N(); i++ {
				b.Exec(i, systemctl, "stop", "pve-cluster", "corosync")
			}
		})
	pubKeys := make([]string, 4)
	for i := 1; i <= 3; i++ {
		pubKeys[i] = startSSHD(t, b, i, filepath.Dir(pvecm))
		if _, err := b.Exec(i, "env", "PMXCFS_BIN="+pmxcfs, systemctl, "start", "pve-cluster"); err != nil {
			t.Fatal(err)
		}
	}
	// The operator's one manual step: node 1 accepts the joining nodes' root keys (what
	// ssh-copy-id with node 1's root password does when pvecm add runs interactively).
	if _, err := b.Exec(1, "sh", "-c", `umask 077; printf '%s' "$1" > /root/.ssh/authorized_keys`, "sh", pubKeys[2]+pubKeys[3]); err != nil {
		t.Fatal(err)
	}

	run := func(i int, args ...string) (string, error) {
		return b.Exec(i, append([]string{"env", "PVECM_SYSTEMCTL=" + systemctl, "PMXCFS_BIN=" + pmxcfs, pvecm}, args...)...)
	}
	mustRun := func(i int, args ...string) string {
		t.Helper()
		out, err := run(i, args...)
		if err != nil {
			t.Fatalf("node%d: pvecm %s: %v", i, strings.Join(args, " "), err)
		}
		return out
	}
	refused := func(i int, want string, args ...string) {
		t.Helper()
		out, err := run(i, args...)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("node%d: pvecm %s = %v, %q; want a refusal with %q", i, strings.Join(args, " "), err, out, want)
		}
	}
	field := func(out, label string) string {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + `:\s+(\S+)`).FindStringSubmatch(out)
		if m == nil {
			return ""
		}
		return m[1]
	}
	// pvecm status once corosync and pmxcfs agree on the expected number of quorate nodes.
	waitStatus := func(i, nodes int) string {
		t.Helper()
		var out string
		if !waitFor(60*time.Second, func() bool {
			out, _ = run(i, "status")
			_, err := b.Exec(i, "sh", "-c", `[ "$(stat -c %a /etc/pve/local)" = 755 ]`)
			return field(out, "Quorate") == "Yes" && field(out, "Nodes") == fmt.Sprint(nodes) && err == nil
		}) {
			t.Fatalf("node%d: not quorate with %d nodes:\n%s", i, nodes, out)
		}
		return out
	}
	clusterName := "lab" + b.ID()

	refused(1, "Error: Corosync config '/etc/pve/corosync.conf' does not exist - is this node part of a cluster?", "status")

	out := mustRun(1, "create", clusterName)
	for _, want := range []string{"Writing corosync config to /etc/pve/corosync.conf\n", "Restart corosync and cluster filesystem\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("pvecm create output lacks %q:\n%s", want, out)
		}
	}
	status := waitStatus(1, 1)
	for label, want := range map[string]string{
		"Name": clusterName, "Config Version": "1", "Transport": "knet", "Secure auth": "on",
		"Expected votes": "1", "Total votes": "1",
	} {
		if got := field(status, label); got != want {
			t.Errorf("pvecm status %s = %q, want %q:\n%s", label, got, want, status)
		}
	}
	for _, header := range []string{"Cluster information\n-------------------\n", "Quorum information\n------------------\n",
		"Votequorum information\n----------------------\n", "Membership information\n----------------------\n"} {
		if !strings.Contains(status, header) {
			t.Errorf("pvecm status lacks %q:\n%s", header, status)
		}
	}
	hostConf, _ := b.Exec(1, "cat", "/etc/corosync/corosync.conf")
	pveConf, _ := b.Exec(1, "cat", "/etc/pve/corosync.conf")
	if hostConf != pveConf || !strings.Contains(pveConf, "    ring0_addr: "+b.IP(1)+"\n") || !strings.Contains(pveConf, "  secauth: on\n") {
		t.Errorf("corosync.conf after create: host copy equal=%v\n%s", hostConf == pveConf, pveConf)
	}
	refused(1, "cluster config '/etc/pve/corosync.conf' already exists", "create", clusterName)

	// A node holding guests is refused and left untouched.
	if _, err := b.Exec(3, "sh", "-c", "mkdir -p /etc/pve/nodes/node3/qemu-server && echo 'name: vm100' > /etc/pve/nodes/node3/qemu-server/100.conf"); err != nil {
		t.Fatal(err)
	}
	out, err := run(3, "add", b.IP(1), "--use_ssh")
	if err == nil || !strings.Contains(out, "* this host already contains virtual guests\n") || !strings.Contains(out, "Check if node may join a cluster failed!") {
		t.Errorf("joining a node with a guest: %v\n%s", err, out)
	}
	if _, err := b.Exec(3, "test", "-e", "/etc/corosync/corosync.conf"); err == nil {
		t.Error("refused join left a corosync.conf on node 3")
	}
	if got := field(mustRun(1, "status"), "Config Version"); got != "1" {
		t.Errorf("refused join changed the cluster config (version %s)", got)
	}
	if _, err := b.Exec(3, "rm", "/etc/pve/nodes/node3/qemu-server/100.conf"); err != nil {
		t.Fatal(err)
	}
	// Node 2 has its own files before joining; the join backs its database up and
	// replaces /etc/pve with the cluster's.
	if _, err := b.Exec(2, "sh", "-c", "echo local > /etc/pve/only-on-node2"); err != nil {
		t.Fatal(err)
	}

	for _, i := range []int{2, 3} {
		out := mustRun(i, "add", b.IP(1), "--use_ssh")
		for _, want := range []string{
			"No cluster network links passed explicitly, fallback to local node IP '" + b.IP(i) + "'",
			"copy corosync auth key", "stopping pve-cluster service", "backup old database to '/var/lib/pve-cluster/backup/config-",
			"successfully added node 'node" + fmt.Sprint(i) + "' to cluster.",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("node%d: pvecm add output lacks %q:\n%s", i, want, out)
			}
		}
		waitStatus(i, i)
	}
	for i := 1; i <= 3; i++ {
		status := waitStatus(i, 3)
		if i == 1 {
			t.Logf("pvecm status on node1:\n%s", status)
		}
		if got := field(status, "Config Version"); got != "3" {
			t.Errorf("node%d: config version %s after two joins, want 3", i, got)
		}
		if got := field(status, "Expected votes"); got != "3" {
			t.Errorf("node%d: expected votes %s, want 3", i, got)
		}
		nodes := mustRun(i, "nodes")
		if i == 1 {
			t.Logf("pvecm nodes on node1:\n%s", nodes)
		}
		for k := 1; k <= 3; k++ {
			if !strings.Contains(nodes, fmt.Sprintf("node%d", k)) {
				t.Errorf("node%d: pvecm nodes lacks node%d:\n%s", i, k, nodes)
			}
		}
		conf, _ := b.Exec(i, "cat", "/etc/corosync/corosync.conf")
		for k := 1; k <= 3; k++ {
			if !strings.Contains(conf, fmt.Sprintf("    name: node%d\n    nodeid: %d\n    quorum_votes: 1\n    ring0_addr: %s\n", k, k, b.IP(k))) {
				t.Errorf("node%d: /etc/corosync/corosync.conf lacks node%d:\n%s", i, k, conf)
			}
		}
		for k := 1; k <= 3; k++ {
			if _, err := b.Exec(i, "test", "-d", fmt.Sprintf("/etc/pve/nodes/node%d/qemu-server", k)); err != nil {
				t.Errorf("node%d: no /etc/pve/nodes/node%d/qemu-server", i, k)
			}
		}
	}
	if _, err := b.Exec(2, "test", "-e", "/etc/pve/only-on-node2"); err == nil {
		t.Error("node 2 kept its pre-join /etc/pve file; want the cluster's tree")
	}
	if out, err := b.Exec(2, "sh", "-c", "zcat /var/lib/pve-cluster/backup/config-*.sql.gz | grep -c only-on-node2"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("node 2's pre-join database backup lacks its file: %v %q", err, out)
	}
	mustExec(t, b, 3, "echo from-node3 > /etc/pve/written-on-node3")
	if !waitFor(20*time.Second, func() bool {
		out, _ := b.Exec(1, "cat", "/etc/pve/written-on-node3")
		return out == "from-node3\n"
	}) {
		t.Error("a file written on node 3 does not reach node 1")
	}
	// Every node's root key is in the cluster-wide authorized_keys: node 3 reaches node 2
	// although only node 1 was given keys by hand.
	if out, err := b.Exec(3, "ssh", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "root@"+b.IP(2), "hostname"); err != nil || strings.TrimSpace(out) != "node2" {
		t.Errorf("ssh node3 -> node2: %v %q", err, out)
	}

	refused(1, "Cannot delete myself from cluster!", "delnode", "node1")
	refused(1, "Node/IP: node9 is not a known host of the cluster.", "delnode", "node9")
	refused(1, "minimum value of 1", "expected", "0")

	// Node 3 goes away for good: the rest stay quorate, can lower the expected votes, and
	// remove it from the configuration.
	if _, err := b.Exec(3, systemctl, "stop", "pve-cluster", "corosync"); err != nil {
		t.Fatal(err)
	}
	if !waitFor(60*time.Second, func() bool { return field(mustRun(1, "status"), "Nodes") == "2" }) {
		t.Fatal("node 3 still a member after stopping it")
	}
	mustRun(1, "expected", "2")
	if got := field(mustRun(1, "status"), "Expected votes"); got != "2" {
		t.Errorf("expected votes %s after pvecm expected 2", got)
	}
	mustRun(1, "delnode", "node3")
	for _, i := range []int{1, 2} {
		if !waitFor(30*time.Second, func() bool {
			conf, _ := b.Exec(i, "cat", "/etc/corosync/corosync.conf")
			return !strings.Contains(conf, "node3") && strings.Contains(conf, "config_version: 4\n")
		}) {
			conf, _ := b.Exec(i, "cat", "/etc/corosync/corosync.conf")
			t.Errorf("node%d: corosync.conf still lists node3 or has the wrong version:\n%s", i, conf)
		}
		status := waitStatus(i, 2)
		if got := field(status, "Config Version"); got != "4" {
			t.Errorf("node%d: config version %s after delnode, want 4", i, got)
		}
	}
	if out := mustRun(1, "nodes"); strings.Contains(out, "node3") {
		t.Errorf("pvecm nodes still lists node3:\n%s", out)
	}
	log := mustExec(t, b, 1, "cat /etc/pve/.clusterlog")
	for _, want := range []string{"adding node node2 to cluster", "adding node node3 to cluster", "deleting node node3 from cluster"} {
		if !strings.Contains(log, want) {
			t.Errorf("cluster log lacks %q", want)
		}
	}
}

// startSSHD gives root in node i (whose /root is its own copy-on-write layer) an RSA key
// and runs an sshd in the node that lets root in with keys and finds binDir first on PATH; it
// returns root's public key.
func startSSHD(t *testing.T, b *bench.Bench, i int, binDir string) string {
	t.Helper()
	put := func(path, data string) {
		t.Helper()
		if _, err := b.Exec(i, "sh", "-c", `umask 077; printf '%s' "$1" > "$2"`, "sh", data, path); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		{"mkdir", "-p", "-m", "0700", "/root/.ssh", "/run/sshd"},
		{"ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", fmt.Sprintf("root@node%d", i), "-f", "/root/.ssh/id_rsa"},
		{"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/.ssh/ssh_host_ed25519_key"},
	} {
		if _, err := b.Exec(i, args...); err != nil {
			t.Fatal(err)
		}
	}
	put("/root/.ssh/config", "StrictHostKeyChecking accept-new\n")
	put("/root/.ssh/sshd_config", "HostKey /root/.ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"+
		"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPidFile none\n"+
		"SetEnv PATH="+binDir+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
	logf, err := os.Create(filepath.Join(b.NodeDir(i), "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd, err := b.Command(i, "/usr/sbin/sshd", "-D", "-e", "-f", "/root/.ssh/sshd_config")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if !waitFor(10*time.Second, func() bool {
		_, err := b.Exec(i, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/22")
		return err == nil
	}) {
		t.Fatalf("node%d: sshd does not listen", i)
	}
	pub, err := b.Exec(i, "cat", "/root/.ssh/id_rsa.pub")
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func lastBytes(data []byte, n int) []byte {
	if len(data) > n {
		return data[len(data)-n:]
	}
	return data
}
