// Package fs serves the pmxcfs configuration tree as the FUSE file system at /etc/pve,
// with upstream's plugin layout (memdb tree, fixed symlinks, generated files), modes,
// refusals and errnos.
package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pmxcfs-go/pmxcfs/memdb"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Backend is what the file system needs from the daemon: reads straight from memdb, and
// the mutating operations, which local mode applies directly and cluster mode sends
// through the cluster. Mutations return syscall.Errno values. Paths are FUSE-relative
// without a leading slash ("nodes/n1/x").
type Backend interface {
	DB() *memdb.DB
	Quorate() bool
	// Writable returns the error a change would get now (no quorum, not connected), so
	// a buffered write can be refused at once; nil where a change may be tried.
	Writable() error
	// Create returns once the file exists on this node. confirm, when not nil, waits
	// until the change is final (known to the other members; committed); the create's
	// success is not final before it returned nil. The close or fsync of the descriptor
	// that created the file calls it.
	Create(path string) (confirm func() error, err error)
	Write(path string, off uint64, data []byte, truncate bool) (int, error)
	Mkdir(path string) error
	Delete(path string) error
	Rename(from, to string) error
	Utime(path string, mtime uint32) error // includes the unlock rule (docs/upstream-behaviour.md#locks)
}

// GeneratedFile is one of the root's generated ("func") files such as .members.
// Write nil means read-only (mode 0440); otherwise the file is 0640 and writable at
// offset 0 only, and Write returns the byte count to report.
type GeneratedFile struct {
	Name  string
	Read  func() []byte
	Write func(data []byte) (int, error)
}

// Config describes one mount.
type Config struct {
	NodeName   string
	Backend    Backend
	Generated  []GeneratedFile
	WWWDataGID uint32
	Log        *logrus.Entry
}

// Mounted is a mounted pmxcfs file system.
type Mounted struct {
	server     *fuse.Server
	mountpoint string
}

// maxWrite is the largest write chunk, as with libfuse2's big_writes.
const maxWrite = 128 * 1024

// BlockedReaders is how many goroutines the server of a mount made with GOMAXPROCS procs
// may keep blocked in read(2) on /dev/fuse: go-fuse allows procs readers, at least 2 and
// at most 16, and one more gets in before it checks (go-fuse v2.12 fuse/server.go:NewServer,
// fuse/fusefd.go:readRequest).
func BlockedReaders(procs int) int {
	return min(max(procs, 2), 16) + 1
}

// Mount mounts the file system at mountpoint and serves it until Unmount.
//
// The mount is made here rather than by go-fuse so that the mount table shows fstype
// "fuse" and source "/dev/fuse" exactly as for upstream (go-fuse would say "fuse.<name>").
func Mount(mountpoint string, cfg Config) (*Mounted, error) {
	if cfg.Backend == nil {
		return nil, errors.New("fs: no backend")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return nil, fmt.Errorf("fs: mount point %s: %w", mountpoint, err)
	}
	// CLOEXEC: a child holding the fd would keep a dead mount alive.
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fs: open /dev/fuse: %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=%d,group_id=%d,default_permissions,allow_other",
		fd, st.Mode&syscall.S_IFMT, os.Geteuid(), os.Getegid())
	if err := syscall.Mount("/dev/fuse", mountpoint, "fuse", syscall.MS_NOSUID|syscall.MS_NODEV, data); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("fs: mount %s: %w", mountpoint, err)
	}

	one := time.Second
	zero := time.Duration(0)
	root := newRoot(&cfg)
	opts := &gofs.Options{
		EntryTimeout:    &one,
		AttrTimeout:     &one,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			MaxWrite: maxWrite,
			// Read replies are always bytes in memory, which go-fuse cannot splice: with
			// splicing on it still fills and drains a pipe for every READ, three wasted
			// system calls.
			DisableSplice: true,
			Name:          "pmxcfs",
		},
	}
	server, err := fuse.NewServer(gofs.NewNodeFS(root, opts), fmt.Sprintf("/dev/fd/%d", fd), &opts.MountOptions)
	if err != nil {
		syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		syscall.Close(fd)
		return nil, fmt.Errorf("fs: serve %s: %w", mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		return nil, fmt.Errorf("fs: mount %s: %w", mountpoint, err)
	}
	if err := refusePoll(mountpoint); err != nil {
		cfg.Log.Warnf("unable to switch off poll on %s: %v", mountpoint, err)
	}
	return &Mounted{server: server, mountpoint: mountpoint}, nil
}

// refusePoll makes the kernel learn at once that this file system does not support poll, as
// go-fuse does for mounts it makes itself. Otherwise the first file this process opens on its
// own mount is added to the Go runtime's epoll, which sends a POLL request to the file system
// from a thread the scheduler still counts as running: if a garbage collection stops the world
// at that moment, no goroutine can answer and the process hangs. The name is go-fuse's, whose
// server answers POLL on it with ENOSYS. Upstream (libfuse 2, no poll operation) answers
// ENOSYS too, so other processes see the same behaviour.
func refusePoll(mountpoint string) error {
	fd, err := syscall.Open(filepath.Join(mountpoint, ".go-fuse-epoll-hack"), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	_, err = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return err
}

// Unmount unmounts the file system (retrying while it is busy, then detaching it) and
// waits until the server has stopped.
func (m *Mounted) Unmount() error {
	var err error
	for try := 0; try < 10; try++ {
		err = syscall.Unmount(m.mountpoint, 0)
		if err != syscall.EBUSY {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == syscall.EBUSY {
		err = syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
	}
	if err != nil && err != syscall.EINVAL {
		return fmt.Errorf("fs: unmount %s: %w", m.mountpoint, err)
	}
	m.server.Wait()
	return nil
}

// Wait blocks until the file system is unmounted (also from outside, by umount).
func (m *Mounted) Wait() { m.server.Wait() }
