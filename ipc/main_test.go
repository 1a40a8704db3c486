package ipc

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pmxcfs-go/pmxcfs/qb/qbclient"
	"golang.org/x/sys/unix"

	"github.com/pmxcfs-go/pmxcfs/internal/privns"
)

// libqb's rendezvous socket is abstract (scoped to the network namespace) and
// its ring buffers live in /dev/shm, so the end-to-end tests run in a
// re-executed copy of the test binary inside new network and mount
// namespaces with a private /dev/shm: they can never meet a real pmxcfs.
const (
	envInner  = "PMXCFS_IPCTEST_INNER"
	envClient = "PMXCFS_IPCTEST_CLIENT" // JSON []clientRequest: run as a client and exit
	binDir    = "/dev/shm/ipctest-bin"
)

var e2eSkip = "needs root"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envClient); spec != "" {
		os.Exit(runClient(spec))
	}
	switch {
	case fuzzing():
		// Fuzz workers talk to their coordinator over inherited descriptors
		// that a re-exec would drop; the fuzz target needs no libqb.
		e2eSkip = "not in a private namespace while fuzzing"
	default:
		code, done, skip := privns.Enter(envInner, setupNamespace)
		if done {
			os.Exit(code)
		}
		e2eSkip = skip
	}
	os.Exit(m.Run())
}

func fuzzing() bool {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzz") && !strings.HasPrefix(a, "-test.fuzztime") && !strings.HasPrefix(a, "-test.fuzzcachedir") {
			return true
		}
	}
	return false
}

func setupNamespace() error {
	if err := unix.Mount("ipctest", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=256m"); err != nil {
		return fmt.Errorf("mount tmpfs on /dev/shm: %w", err)
	}
	// Clients running as other users need a copy of this binary they can execute.
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(binDir, "ipc.test"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

type clientRequest struct {
	ID      int32
	Payload []byte
}

// clientResult is one response as the client saw it; ConnectErrno is set
// (and nothing else) when the connection was refused.
type clientResult struct {
	ConnectErrno int
	ID, Size     int32
	Error        int32
	Data         []byte
	PID          int
}

func runClient(spec string) int {
	var reqs []clientRequest
	if err := json.Unmarshal([]byte(spec), &reqs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var out []clientResult
	c, err := qbclient.Connect("pve2")
	if err != nil {
		errno, _ := err.(syscall.Errno)
		out = append(out, clientResult{ConnectErrno: int(errno) + 1000*btoi(errno == 0), PID: os.Getpid()})
	} else {
		defer c.Close()
		for _, r := range reqs {
			resp, err := c.Send(r.ID, r.Payload)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 3
			}
			out = append(out, clientResult{ID: resp.ID, Size: resp.Size, Error: resp.Error, Data: resp.Data, PID: os.Getpid()})
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 4
	}
	return 0
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runClientAs runs the requests in a child process with the given credentials.
func runClientAs(t *testing.T, uid, gid uint32, reqs []clientRequest) []clientResult {
	t.Helper()
	spec, err := json.Marshal(reqs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "ipc.test"))
	cmd.Dir = "/"
	cmd.Env = []string{envClient + "=" + string(spec)}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("client %d:%d: %v", uid, gid, err)
	}
	var res []clientResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("client %d:%d output %q: %v", uid, gid, b, err)
	}
	return res
}
