package fs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/memdb"
	"golang.org/x/sys/unix"
)

const wwwData = 33

// testEnv is one real mount over a real memdb in temporary directories.
type testEnv struct {
	mnt   string
	db    *memdb.DB
	debug atomic.Bool
	gen   map[string]*atomic.Value // content of the test's generated files
	skew  atomic.Int64             // seconds added to memdb's clock (lock expiry)
}

// roBackend behaves like a node without quorum in cluster mode: every mutation is
// refused with EACCES before anything is sent.
type roBackend struct{ *LocalBackend }

func (roBackend) Quorate() bool                                   { return false }
func (roBackend) Writable() error                                 { return syscall.EACCES }
func (roBackend) Create(string) (func() error, error)             { return nil, syscall.EACCES }
func (roBackend) Write(string, uint64, []byte, bool) (int, error) { return 0, syscall.EACCES }
func (roBackend) Mkdir(string) error                              { return syscall.EACCES }
func (roBackend) Delete(string) error                             { return syscall.EACCES }
func (roBackend) Rename(string, string) error                     { return syscall.EACCES }
func (roBackend) Utime(string, uint32) error                      { return syscall.EACCES }

func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// openDB opens a memdb at dbPath, skipping while memdb is not implemented yet.
func openDB(t *testing.T, dbPath string, now func() time.Time) *memdb.DB {
	t.Helper()
	db, err := memdb.Open(dbPath, memdb.Options{Now: now})
	if errors.Is(err, syscall.ENOSYS) {
		t.Skip("memdb not implemented yet")
	}
	if err != nil {
		t.Fatalf("memdb.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// mountTest mounts a fresh (or the given) database; prepare runs on the memdb before the
// mount, so a read-only backend can still be given content.
func mountTest(t *testing.T, dbPath string, quorate bool, prepare func(db *memdb.DB), extra ...GeneratedFile) *testEnv {
	t.Helper()
	wrap := func(b *LocalBackend) Backend { return b }
	if !quorate {
		wrap = func(b *LocalBackend) Backend { return roBackend{b} }
	}
	return mountTestWith(t, dbPath, wrap, prepare, extra...)
}

// mountTestWith mounts with the backend wrap makes of a local one.
func mountTestWith(t *testing.T, dbPath string, wrap func(*LocalBackend) Backend, prepare func(db *memdb.DB), extra ...GeneratedFile) *testEnv {
	t.Helper()
	needFUSE(t)
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "config.db")
	}
	env := &testEnv{gen: map[string]*atomic.Value{}}
	env.db = openDB(t, dbPath, func() time.Time { return time.Now().Add(time.Duration(env.skew.Load()) * time.Second) })
	if prepare != nil {
		prepare(env.db)
	}
	// Other users must reach the mount point, and t.TempDir() is 0700.
	mnt, err := os.MkdirTemp("", "pmxcfs-fs-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(mnt, 0o755)
	t.Cleanup(func() { os.Remove(mnt) })
	env.mnt = mnt

	backend := wrap(NewLocalBackend(env.db))
	var gens []GeneratedFile
	for _, name := range []string{".version", ".members", ".vmlist", ".rrd", ".clusterlog"} {
		v := &atomic.Value{}
		v.Store([]byte(name + " content\n"))
		env.gen[name] = v
		gens = append(gens, GeneratedFile{Name: name, Read: func() []byte { return v.Load().([]byte) }})
	}
	gens = append(gens, DebugFile(env.debug.Load, env.debug.Store))
	gens = append(gens, extra...)
	m, err := Mount(mnt, Config{NodeName: "node1", Backend: backend, Generated: gens, WWWDataGID: wwwData})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
	})
	return env
}

func (e *testEnv) p(rel string) string { return filepath.Join(e.mnt, rel) }

func lstat(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Errorf("%s: got %v, want success", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func mkdirs(t *testing.T, env *testEnv, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.Mkdir(env.p(d), 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
	}
}

// Root listing, fixed entries, their modes, sizes, targets and mtime 0, as upstream 9.1.6
// shows them (docs/upstream-behaviour.md#root-entries).
func TestRootEntries(t *testing.T) {
	env := mountTest(t, "", true, nil)
	mkdirs(t, env, "nodes")
	names, err := os.ReadDir(env.mnt)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range names {
		got = append(got, d.Name())
	}
	want := "local qemu-server openvz lxc .version .members .vmlist .rrd .clusterlog .debug nodes"
	if strings.Join(got, " ") != want {
		// os.ReadDir sorts; compare as sets.
		have := map[string]bool{}
		for _, n := range got {
			have[n] = true
		}
		for _, n := range strings.Fields(want) {
			if !have[n] {
				t.Errorf("root listing lacks %q: %v", n, got)
			}
		}
		if len(got) != len(strings.Fields(want)) {
			t.Errorf("root listing %v, want %s", got, want)
		}
	}

	root := lstat(t, env.mnt)
	if root.Mode != syscall.S_IFDIR|0o755 || root.Uid != 0 || root.Gid != wwwData || root.Mtim.Sec != 0 {
		t.Errorf("root: mode %o uid %d gid %d mtime %d", root.Mode, root.Uid, root.Gid, root.Mtim.Sec)
	}
	for link, target := range map[string]string{
		"local": "nodes/node1", "qemu-server": "nodes/node1/qemu-server",
		"openvz": "nodes/node1/openvz", "lxc": "nodes/node1/lxc",
	} {
		st := lstat(t, env.p(link))
		if st.Mode != syscall.S_IFLNK|0o755 || st.Size != int64(len(target)) || st.Mtim.Sec != 0 || st.Gid != wwwData {
			t.Errorf("%s: mode %o size %d mtime %d gid %d", link, st.Mode, st.Size, st.Mtim.Sec, st.Gid)
		}
		if got, err := os.Readlink(env.p(link)); err != nil || got != target {
			t.Errorf("readlink %s = %q, %v", link, got, err)
		}
	}
	for name, mode := range map[string]uint32{".version": 0o440, ".members": 0o440, ".vmlist": 0o440, ".rrd": 0o440, ".clusterlog": 0o440, ".debug": 0o640} {
		st := lstat(t, env.p(name))
		if st.Mode != syscall.S_IFREG|mode || st.Mtim.Sec != 0 || st.Nlink != 1 || st.Uid != 0 || st.Gid != wwwData {
			t.Errorf("%s: mode %o mtime %d nlink %d", name, st.Mode, st.Mtim.Sec, st.Nlink)
		}
	}
	data, err := os.ReadFile(env.p(".members"))
	if err != nil || string(data) != ".members content\n" {
		t.Errorf(".members = %q, %v", data, err)
	}
	// A memdb entry named like a fixed entry is hidden.
	var st unix.Statfs_t
	if err := unix.Statfs(env.mnt, &st); err != nil {
		t.Fatal(err)
	}
	// As upstream: df shows 131072 1K-blocks; a fresh database counts only the root
	// (docs/upstream-behaviour.md#statfs).
	if st.Blocks*uint64(st.Bsize)/1024 != 131072 || st.Namelen != 256 || st.Files != 262144 {
		t.Errorf("statfs: blocks %d bsize %d namelen %d files %d", st.Blocks, st.Bsize, st.Namelen, st.Files)
	}
}

// The mount table shows fstype fuse, source /dev/fuse and the options upstream's
// pmxcfs.c:main mounts with.
func TestMountEntry(t *testing.T) {
	env := mountTest(t, "", true, nil)
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != env.mnt {
			continue
		}
		i := 6
		for f[i] != "-" {
			i++
		}
		if f[i+1] != "fuse" || f[i+2] != "/dev/fuse" || !strings.Contains(f[i+3], "default_permissions,allow_other") {
			t.Errorf("mountinfo: %s", line)
		}
		return
	}
	t.Errorf("mount point %s not in mountinfo", env.mnt)
}

// Modes, private paths, hook scripts, sizes, blocks, nlink, times
// (docs/upstream-behaviour.md#modes-and-owners).
func TestMemdbAttributes(t *testing.T) {
	env := mountTest(t, "", true, nil)
	mkdirs(t, env, "nodes", "nodes/node1", "nodes/node1/priv", "priv", "nodes/node1/openvz")
	for _, f := range []string{"a.cfg", "priv/x", "nodes/node1/priv/y", "nodes/node1/openvz/101.mount",
		"101.start", "vps.umount", "priv/102.stop", "0100.mount", "12abc.mount", "vps.other", "7.postumount"} {
		writeFile(t, env.p(f), "")
	}
	want := map[string]uint32{
		"nodes": syscall.S_IFDIR | 0o755, "priv": syscall.S_IFDIR | 0o700,
		"nodes/node1/priv": syscall.S_IFDIR | 0o700,
		"a.cfg":            syscall.S_IFREG | 0o640, "priv/x": syscall.S_IFREG | 0o600,
		"nodes/node1/priv/y": syscall.S_IFREG | 0o600, "nodes/node1/openvz/101.mount": syscall.S_IFREG | 0o740,
		"101.start": syscall.S_IFREG | 0o740, "vps.umount": syscall.S_IFREG | 0o740,
		"priv/102.stop": syscall.S_IFREG | 0o700, "0100.mount": syscall.S_IFREG | 0o640,
		"12abc.mount": syscall.S_IFREG | 0o640, "vps.other": syscall.S_IFREG | 0o640,
		"7.postumount": syscall.S_IFREG | 0o740,
	}
	for path, mode := range want {
		st := lstat(t, env.p(path))
		nlink := uint64(1)
		if mode&syscall.S_IFDIR != 0 {
			nlink = 2
		}
		if st.Mode != mode || st.Uid != 0 || st.Gid != wwwData || st.Nlink != nlink {
			t.Errorf("%s: mode %o (want %o) uid %d gid %d nlink %d", path, st.Mode, mode, st.Uid, st.Gid, st.Nlink)
		}
	}
	writeFile(t, env.p("a.cfg"), strings.Repeat("x", 5000))
	st := lstat(t, env.p("a.cfg"))
	e, err := env.db.Lookup("a.cfg")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != 5000 || st.Blocks != 2 || st.Mtim.Sec != int64(e.Mtime) || st.Atim.Sec != int64(e.Mtime) || st.Ctim.Sec != int64(e.Mtime) {
		t.Errorf("a.cfg: size %d blocks %d times %d/%d/%d, entry mtime %d", st.Size, st.Blocks, st.Atim.Sec, st.Mtim.Sec, st.Ctim.Sec, e.Mtime)
	}
}
