// Package privns moves a test binary into new network and mount namespaces by re-executing
// it, so tests that use abstract unix sockets (libqb IPC, corosync) and /dev/shm can never
// meet a real daemon or a test bench on the same machine.
package privns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Enter is called from TestMain. envName marks the re-executed child; setup prepares the
// child's namespaces after / has been made private (e.g. tmpfs mounts).
//
// When it ran the tests in a child, it returns that child's exit code and done = true.
// Otherwise the caller runs the tests itself: skip is "" inside the namespaces, or says why
// the tests are not isolated (not root, setup failed, namespaces unavailable).
func Enter(envName string, setup func() error) (code int, done bool, skip string) {
	if os.Getenv(envName) == "1" {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return 0, false, fmt.Sprintf("cannot set up private namespace: make / private: %v", err)
		}
		if err := setup(); err != nil {
			return 0, false, "cannot set up private namespace: " + err.Error()
		}
		return 0, false, ""
	}
	if os.Geteuid() != 0 {
		return 0, false, "needs root"
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), envName+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), true, ""
	}
	if err != nil {
		return 0, false, "cannot enter private namespaces: " + err.Error()
	}
	return 0, true, ""
}
