package main

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/pmxcfs-go/pmxcfs/internal/logging"
)

// Without -f, upstream forks after mounting and its parent returns only once the child has
// reported readiness. A running Go process cannot fork safely, so we re-execute ourselves as a
// detached child instead; the parent waits for the same one-byte readiness signal.
const (
	envReadyFD  = "PMXCFS_READY_FD"
	envNoSyslog = "PMXCFS_NO_SYSLOG" // tests: keep their daemons out of the system log
)

func isDaemonChild() bool { return os.Getenv(envReadyFD) != "" }

func startDetachedChild() int {
	self, err := os.Executable()
	if err != nil {
		log.Errorf("failed to daemonize program - %s", err)
		return exitFailure
	}
	r, w, err := os.Pipe()
	if err != nil {
		log.Errorf("pipe error: %s", err)
		return exitFailure
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		log.Errorf("failed to daemonize program - %s", err)
		return exitFailure
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envReadyFD+"=3")
	cmd.Stdin = devnull
	cmd.Stdout = devnull
	cmd.Stderr = os.Stderr // start-up errors still reach the caller's terminal
	cmd.ExtraFiles = []*os.File{w}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		log.Errorf("failed to daemonize program - %s", err)
		return exitFailure
	}
	w.Close()
	devnull.Close()
	buf := make([]byte, 1)
	n, err := r.Read(buf)
	if n == 1 && buf[0] == '1' {
		return 0
	}
	if err != nil && n == 0 {
		log.Error("child failed to send '1'")
	} else {
		log.Errorf("read error: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return exitFailure
}

// signalReady tells the waiting parent (if any) that /etc/pve is usable, then detaches
// from the caller's terminal like upstream's daemon child.
func signalReady() {
	fdText := os.Getenv(envReadyFD)
	if fdText == "" {
		return
	}
	os.Unsetenv(envReadyFD)
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return
	}
	pipe := os.NewFile(uintptr(fd), "ready")
	pipe.Write([]byte{'1'})
	pipe.Close()
	logging.DetachStderr()
	if devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		for _, target := range []int{0, 1, 2} {
			syscall.Dup2(int(devnull.Fd()), target)
		}
		devnull.Close()
	}
}
