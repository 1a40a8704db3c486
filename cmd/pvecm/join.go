package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pmxcfs-go/pmxcfs/corosyncconf"
)

// cmdAdd joins this node to the cluster that host belongs to, over SSH as upstream's
// `pvecm add --use_ssh`: the existing node adds us to corosync.conf (pvecm addnode), we fetch
// corosync.conf and the authkey, and our pmxcfs restarts on an empty database so the
// cluster's copy of /etc/pve replaces ours.
func cmdAdd(h *host, pos []string, opts options) error {
	remote := pos[0]
	if wd, err := os.Getwd(); err == nil && (wd == h.pveDir || strings.HasPrefix(wd, h.pveDir+"/")) {
		return fmt.Errorf("Navigate out of %s before running 'pvecm add', for example by running 'cd'.", h.pveDir)
	}
	if !opts.has("use_ssh") {
		h.warnf("note: this pvecm joins over SSH only (as with --use_ssh)\n")
	}
	if opts.has("fingerprint") {
		return errors.New("fingerprint: joining through the API is not supported by this pvecm; use --use_ssh")
	}
	links, err := parseLinks(opts)
	if err != nil {
		return err
	}
	self, err := nodeName()
	if err != nil {
		return err
	}
	localIP, ipErr := nodeIP(self)
	if err := h.assertJoinable(localIP, ipErr, links, opts.flag("force")); err != nil {
		return err
	}
	if err := h.setupRootKey(); err != nil {
		return err
	}
	ssh := sshTo(remote)
	if err := exec.Command(ssh[0], append(ssh[1:], "true")...).Run(); err != nil {
		// First contact: install our key on the remote root account (asks for its password).
		cmd := exec.Command("ssh-copy-id", "-i", filepath.Join(h.sshDir, "id_rsa"), "root@"+remote)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, h.stdout, h.stderr
		if err := cmd.Run(); err != nil {
			return errors.New("unable to copy ssh ID")
		}
	}
	apiVer := 0
	if out, err := exec.Command(ssh[0], append(ssh[1:], "pvecm", "apiver")...).Output(); err == nil {
		apiVer, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	}
	if min := joinAPIVersion - joinAPIAge; apiVer < min {
		return fmt.Errorf("error: incompatible join API version on cluster (%d), local node has %d and supports >= %d. Make sure all cluster nodes are up-to-date.", apiVer, joinAPIVersion, min)
	}

	addArgs := append(ssh[1:], "pvecm", "addnode", self, "--force", "1")
	for _, o := range []string{"nodeid", "votes"} {
		if v, ok := opts[o]; ok {
			addArgs = append(addArgs, "--"+o, v)
		}
	}
	for num := 0; num <= corosyncconf.MaxLink; num++ {
		if l, ok := links[num]; ok {
			v := "address=" + l.Address
			if l.Priority != 0 {
				v += ",priority=" + strconv.Itoa(l.Priority)
			}
			addArgs = append(addArgs, fmt.Sprintf("--link%d", num), v)
		}
	}
	if len(links) == 0 {
		if apiVer >= 1 {
			addArgs = append(addArgs, "--new_node_ip", localIP)
		} else {
			addArgs = append(addArgs, "--link0", localIP)
		}
		h.printf("No cluster network links passed explicitly, fallback to local node IP '%s'\n", localIP)
	}
	if err := h.runCmd(ssh[0], addArgs...); err != nil {
		return fmt.Errorf("unable to add node: command failed (%s)", strings.Join(append(ssh[:1], addArgs...), " "))
	}

	h.printf("copy corosync auth key\n")
	authKey, err := exec.Command(ssh[0], append(ssh[1:], "cat", "/etc/corosync/authkey")...).Output()
	if err != nil || len(authKey) == 0 {
		return fmt.Errorf("can't copy data from host '%s'", remote)
	}
	conf, err := exec.Command(ssh[0], append(ssh[1:], "cat", "/etc/pve/corosync.conf")...).Output()
	if err != nil || len(conf) == 0 {
		return fmt.Errorf("can't copy data from host '%s'", remote)
	}
	return h.finishJoin(self, conf, authKey)
}

// sshTo is the ssh command line pvecm uses for a cluster member: root, keys only.
func sshTo(remote string) []string {
	return []string{"ssh", "-o", "BatchMode=yes", "-l", "root", remote, "--"}
}

// assertJoinable lists every reason this node cannot join a cluster; force turns the refusal
// into a warning, as upstream.
func (h *host) assertJoinable(localIP string, ipErr error, links map[int]corosyncconf.Link, force bool) error {
	var problems []string
	if _, err := os.Stat(h.authKey()); err == nil {
		problems = append(problems, fmt.Sprintf("authentication key '%s' already exists", h.authKey()))
	}
	if _, err := os.Stat(h.clusterConf()); err == nil {
		problems = append(problems, fmt.Sprintf("cluster config '%s' already exists", h.clusterConf()))
	}
	if !h.mounted() {
		problems = append(problems, "pve configuration filesystem (pmxcfs) not mounted, cannot check for guests")
	} else if n, err := h.guestCount(); err != nil {
		problems = append(problems, fmt.Sprintf("cannot check for guests: %v", err))
	} else if n > 0 {
		problems = append(problems, "this host already contains virtual guests")
	}
	if exec.Command("corosync-quorumtool", "-l").Run() == nil {
		problems = append(problems, "corosync is already running, is this node already in a cluster?!")
	}
	checkIP := func(ip, what string) {
		if !ipIsLocal(ip) {
			problems = append(problems, fmt.Sprintf("%s: cannot use IP '%s', not found on local node!", what, ip))
		}
	}
	if ipErr != nil {
		problems = append(problems, fmt.Sprintf("local node address: %v", ipErr))
	} else {
		checkIP(localIP, "local node address")
	}
	for num := 0; num <= corosyncconf.MaxLink; num++ {
		if l, ok := links[num]; ok {
			checkIP(l.Address, fmt.Sprintf("link%d", num))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("detected the following error(s):\n")
	for _, p := range problems {
		fmt.Fprintf(&b, "* %s\n", p)
	}
	h.warnf("%s", b.String())
	if !force {
		return errors.New("Check if node may join a cluster failed!")
	}
	h.warnf("\nWARNING : detected error but forced to continue!\n\n")
	return nil
}

// finishJoin installs the cluster's corosync configuration and restarts pmxcfs on an empty
// database; the cluster's /etc/pve then replaces this node's (after a backup of the old one).
func (h *host) finishJoin(self string, conf, authKey []byte) error {
	os.MkdirAll(h.corosyncDir, 0o755)
	if err := writeLocal(h.authKey(), authKey, 0o400); err != nil {
		return err
	}
	if err := writeLocal(filepath.Join(h.corosyncDir, "corosync.conf"), conf, 0o644); err != nil {
		return err
	}
	h.printf("stopping pve-cluster service\n")
	if err := h.service("stop", "pve-cluster"); err != nil {
		return fmt.Errorf("can't stop pve-cluster service: %v", err)
	}
	if err := h.backupDB(time.Now()); err != nil {
		h.warnf("failed to create backup of pre-join config database - %v\n", err)
		bak := fmt.Sprintf("%s.%d.bak", h.dbFile(), time.Now().Unix())
		if err := os.Rename(h.dbFile(), bak); err != nil && !errors.Is(err, os.ErrNotExist) {
			h.warnf("failed to rename old config database - %v\n", err)
		}
	} else if err := os.Remove(h.dbFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		h.warnf("failed to remove old config database - %v\n", err)
	}
	// Stale write-ahead files of the removed database must not be applied to the new one.
	os.Remove(h.dbFile() + "-wal")
	os.Remove(h.dbFile() + "-shm")
	if err := h.service("start", "corosync", "pve-cluster"); err != nil {
		return fmt.Errorf("starting pve-cluster failed: %v", err)
	}
	h.waitQuorum()
	if err := h.genLocalDirs(self); err != nil {
		return err
	}
	h.linkAuthorizedKeys()
	if err := h.mergeAuthorizedKeys(); err != nil {
		h.warnf("%v\n", err)
	}
	h.printf("successfully added node '%s' to cluster.\n", self)
	return nil
}

// backupDB saves the database as a gzip'ed SQL dump in backup/config-<time>.sql.gz, the
// format and place upstream uses, keeping the newest ten.
func (h *host) backupDB(now time.Time) error {
	if _, err := os.Stat(h.dbFile()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	dir := filepath.Join(h.libDir, "backup")
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("failed to create backup dir - %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("failed to set mode for backup dir - %v", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("config-%d.sql.gz", now.Unix()))
	h.printf("backup old database to '%s'\n", path)
	var stderr bytes.Buffer
	cmd := exec.Command("sqlite3", h.dbFile(), ".dump")
	cmd.Stderr = &stderr
	dump, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("cannot backup old database: %v %s", err, stderr.String())
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(dump)
	zw.Close()
	if err := writeLocal(path, gz.Bytes(), 0o600); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "config-*.sql.gz"))
	sort.Sort(sort.Reverse(sort.StringSlice(old)))
	for i := 10; i < len(old); i++ {
		h.printf("delete old backup '%s'\n", old[i])
		os.Remove(old[i])
	}
	return nil
}
