// Package corosyncconf reads, edits and writes corosync.conf: it keeps the host's
// /etc/corosync/corosync.conf in step with the cluster-wide copy in /etc/pve/corosync.conf
// (how pvecm changes reach corosync), and parses and renders the file the way pvecm does.
package corosyncconf

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/pmxcfs-go/pmxcfs/internal/atomicfile"
)

var versionLine = regexp.MustCompile(`^\s*config_version\s*:\s*(\d+)`)

// ConfigVersion returns the config_version of a corosync.conf, 0 when it has none.
// Upstream (cfs-utils.c:cluster_config_version) takes the first match anywhere, comments
// included; we only read a real key, so a commented-out version cannot stop or misdirect the
// sync.
func ConfigVersion(conf []byte) uint64 {
	s := bufio.NewScanner(bytes.NewReader(conf))
	s.Buffer(nil, len(conf)+1)
	for s.Scan() {
		line := s.Bytes()
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if m := versionLine.FindSubmatch(line); m != nil {
			v, err := strconv.ParseUint(string(m[1]), 10, 64)
			if err != nil {
				return 0
			}
			return v
		}
	}
	return 0
}

// Syncer writes the cluster's corosync.conf to the host file when it is newer.
type Syncer struct {
	HostPath string // /etc/corosync/corosync.conf
	Log      *logrus.Entry
	// Reload tells corosync to re-read its configuration; nil runs `corosync-cfgtool -R`.
	Reload func() error
	// Settle is the pause before the reload, giving the file time to reach the other nodes
	// (upstream sleeps 1 s).
	Settle time.Duration
}

// Sync installs conf (the content of /etc/pve/corosync.conf) as the host file unless the host
// file is identical or carries a higher version. With notify, and when the host file had a
// version, corosync is asked to reload: only the node that made the change does that.
func (s *Syncer) Sync(conf []byte, notify bool) {
	if len(conf) == 0 {
		return
	}
	newVersion := ConfigVersion(conf)
	if newVersion == 0 {
		s.Log.Error("unable to parse cluster config_version")
		return
	}
	old, err := os.ReadFile(s.HostPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.Log.Errorf("unable to read cluster config file '%s' - %v", s.HostPath, err)
	}
	if bytes.Equal(old, conf) && err == nil {
		return
	}
	oldVersion := ConfigVersion(old)
	if newVersion < oldVersion {
		s.Log.Error("local corosync.conf is newer")
		return
	}
	if err := atomicfile.Write(s.HostPath, conf, 0644); err != nil {
		s.Log.Errorf("unable to write '%s': %v", s.HostPath, err)
		return
	}
	s.Log.Infof("wrote new corosync config '%s' (version = %d)", s.HostPath, newVersion)
	if !notify || oldVersion == 0 {
		return
	}
	time.Sleep(s.Settle)
	reload := s.Reload
	if reload == nil {
		reload = func() error { return exec.Command("corosync-cfgtool", "-R").Run() }
	}
	if err := reload(); err != nil {
		s.Log.Errorf("corosync-cfgtool -R failed: %v", err)
	}
}
