package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pmxcfs-go/pmxcfs/dfsm"
	"github.com/pmxcfs-go/pmxcfs/internal/atomicfile"
)

// statusFile holds the one-line reason why /etc/pve is or is not writable, for
// `pmxcfs --status` and for operators reading the run directory.
func (o *options) statusFile() string { return filepath.Join(o.runDir, "status") }

// readiness says in one line why /etc/pve is or is not writable.
func (d *daemonState) readiness() string {
	if !d.clusterMode {
		return "ready: local mode"
	}
	if d.db.Failed() {
		return "read-only: database write error - see the log, restart needed"
	}
	engine := d.dcdb.CurrentEngine()
	switch {
	case engine == nil:
		return "read-only: corosync not reachable (is corosync running?)"
	case !d.status.Quorate():
		return "read-only: no quorum"
	case engine.Mode() == dfsm.ModeSynced:
		if ok, missing := d.dcdbApp.CaughtUp(); !ok {
			return fmt.Sprintf("read-only: waiting for pmxcfs on node(s) %v, quorate but not in the group "+
				"(changes they acknowledged may be newer than ours)", missing)
		}
		return "ready: cluster mode, quorate, synced"
	case engine.Mode().IsError():
		return fmt.Sprintf("not synced: cluster connection in %s", engine.Mode())
	default:
		return fmt.Sprintf("not synced yet: %s (writes wait until the sync completes)", engine.Mode())
	}
}

// publishReadiness updates the status file and systemd's STATUS line when the reason changed.
func (d *daemonState) publishReadiness(last string) string {
	now := d.readiness()
	if now == last {
		return last
	}
	notifySystemd("STATUS=" + now)
	if err := atomicfile.Write(d.opts.statusFile(), []byte(now+"\n"), 0640); err != nil {
		// Tried again at the next tick: a stale status file would misinform --status.
		log.WithError(err).Debug("unable to write the status file")
		return last
	}
	return now
}

// reportReadiness keeps the status current, once a second, until done.
func (d *daemonState) reportReadiness(last string, done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			last = d.publishReadiness(last)
		}
	}
}

// lockHeld reports whether some process holds the daemon's database lock.
func lockHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// printStatus implements `pmxcfs --status`: one line, exit 0 only when /etc/pve is writable.
func printStatus(o options) int {
	pid, err := os.ReadFile(o.pidFile)
	if err == nil {
		if _, err = os.Stat(filepath.Join("/proc", strings.TrimSpace(string(pid)))); err != nil {
			err = fmt.Errorf("stale pid file %s", o.pidFile)
		}
	} else {
		err = fmt.Errorf("no pid file %s", o.pidFile)
	}
	if err != nil {
		// Whoever holds the database lock keeps a new daemon from starting.
		if lockHeld(o.lockFile()) {
			fmt.Printf("not running: %v, but the database lock %s is held (another pmxcfs, or pmxcfs-db)\n", err, o.lockFile())
		} else {
			fmt.Printf("not running: %v\n", err)
		}
		return 3
	}
	line, err := os.ReadFile(o.statusFile())
	if err != nil {
		fmt.Println("running, status unknown:", err)
		return 1
	}
	fmt.Print(string(line))
	if strings.HasPrefix(string(line), "ready") {
		return 0
	}
	return 1
}
