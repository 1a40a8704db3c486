package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmxcfs-go/pmxcfs/memdb"

	"golang.org/x/sys/unix"
)

// Every refusal and its errno, as upstream 9.1.6 gave them (docs/upstream-behaviour.md#fuse).
func TestRefusals(t *testing.T) {
	env := mountTest(t, "", true, nil)
	mkdirs(t, env, "nodes", "priv", "dir")
	writeFile(t, env.p("f"), "x")
	writeFile(t, env.p("priv/f"), "x")
	writeFile(t, env.p("dir/inner"), "x")

	wantErrno(t, "chmod 0640", os.Chmod(env.p("f"), 0o640), 0)
	wantErrno(t, "chmod 0644", os.Chmod(env.p("f"), 0o644), syscall.EPERM)
	wantErrno(t, "chmod 0600 priv", os.Chmod(env.p("priv/f"), 0o600), 0)
	wantErrno(t, "chmod 0640 priv", os.Chmod(env.p("priv/f"), 0o640), syscall.EPERM)
	wantErrno(t, "chmod 755 dir", os.Chmod(env.p("nodes"), 0o755), syscall.EPERM)
	wantErrno(t, "chmod 640 dir", os.Chmod(env.p("nodes"), 0o640), 0)
	if st := lstat(t, env.p("f")); st.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("chmod changed the mode: %o", st.Mode)
	}
	wantErrno(t, "chown 0:33", os.Chown(env.p("f"), 0, wwwData), 0)
	wantErrno(t, "chown nobody", os.Chown(env.p("f"), 65534, -1), syscall.EPERM)
	wantErrno(t, "chown .version", os.Chown(env.p(".version"), 0, wwwData), 0)
	wantErrno(t, "lchown local", os.Lchown(env.p("local"), 0, wwwData), 0)

	wantErrno(t, "symlink", os.Symlink("f", env.p("s")), syscall.ENOSYS)
	wantErrno(t, "link", os.Link(env.p("f"), env.p("h")), syscall.EPERM)
	wantErrno(t, "mkfifo", syscall.Mkfifo(env.p("fifo"), 0o640), syscall.ENOSYS)
	wantErrno(t, "mknod chr", syscall.Mknod(env.p("chr"), syscall.S_IFCHR|0o640, 0x0101), syscall.ENOSYS)
	wantErrno(t, "mknod reg", syscall.Mknod(env.p("reg"), syscall.S_IFREG|0o600, 0), 0)
	if st := lstat(t, env.p("reg")); st.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("mknod reg: mode %o", st.Mode)
	}
	_, err := unix.Getxattr(env.p("f"), "user.x", make([]byte, 10))
	wantErrno(t, "getxattr", err, syscall.EOPNOTSUPP)
	wantErrno(t, "setxattr", unix.Setxattr(env.p("f"), "user.x", []byte("1"), 0), syscall.EOPNOTSUPP)
	_, err = unix.Listxattr(env.p("f"), make([]byte, 100))
	wantErrno(t, "listxattr", err, syscall.EOPNOTSUPP)
	wantErrno(t, "removexattr", unix.Removexattr(env.p("f"), "user.x"), syscall.EOPNOTSUPP)
	wantErrno(t, "renameat2 noreplace", unix.Renameat2(unix.AT_FDCWD, env.p("f"), unix.AT_FDCWD, env.p("g"), unix.RENAME_NOREPLACE), syscall.EINVAL)
	wantErrno(t, "renameat2 exchange", unix.Renameat2(unix.AT_FDCWD, env.p("f"), unix.AT_FDCWD, env.p("reg"), unix.RENAME_EXCHANGE), syscall.EINVAL)

	wantErrno(t, "mv dir_nonempty", os.Rename(env.p("dir"), env.p("dir2")), syscall.ENOTEMPTY)
	wantErrno(t, "mv .version", os.Rename(env.p(".version"), env.p("x")), syscall.EACCES)
	wantErrno(t, "mv onto .version", os.Rename(env.p("f"), env.p(".version")), syscall.EACCES)
	wantErrno(t, "rm .vmlist", os.Remove(env.p(".vmlist")), syscall.EACCES)
	wantErrno(t, "rm local", syscall.Unlink(env.p("local")), syscall.EACCES)
	wantErrno(t, "rmdir .rrd", syscall.Rmdir(env.p(".rrd")), syscall.ENOTDIR)
	wantErrno(t, "rmdir local", syscall.Rmdir(env.p("local")), syscall.ENOTDIR)
	wantErrno(t, "rmdir root", syscall.Rmdir(env.mnt), syscall.EBUSY)
	_, err = os.Readlink(env.p("f"))
	wantErrno(t, "readlink memdb", err, syscall.EINVAL)

	wantErrno(t, "echo 1 > .version", os.WriteFile(env.p(".version"), []byte("1\n"), 0), syscall.EIO)
	wantErrno(t, "echo 2 > .debug", os.WriteFile(env.p(".debug"), []byte("2\n"), 0), syscall.EIO)
	wantErrno(t, "touch .debug", os.Chtimes(env.p(".debug"), time.Now(), time.Now()), syscall.EACCES)
	wantErrno(t, "touch root", os.Chtimes(env.mnt, time.Now(), time.Now()), syscall.EACCES)
	wantErrno(t, "touch local", unix.Lutimes(env.p("local"), []unix.Timeval{{Sec: 5}, {Sec: 5}}), syscall.EACCES)

	// rename replaces an existing target (file_set_contents relies on it).
	writeFile(t, env.p("tmp"), "new")
	wantErrno(t, "rename over", os.Rename(env.p("tmp"), env.p("f")), 0)
	if data, _ := os.ReadFile(env.p("f")); string(data) != "new" {
		t.Errorf("after rename f = %q", data)
	}
	wantErrno(t, "rename into dir", os.Rename(env.p("f"), env.p("nodes/f")), 0)
	if data, _ := os.ReadFile(env.p("nodes/f")); string(data) != "new" {
		t.Errorf("after rename nodes/f = %q", data)
	}

	// O_CREAT|O_EXCL on an existing name.
	fd, err := syscall.Open(env.p("excl"), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	_, err = syscall.Open(env.p("excl"), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o640)
	wantErrno(t, "second O_EXCL", err, syscall.EEXIST)
}

// .debug write rules (pmxcfs.c:write_debug_setting_cb), as upstream 9.1.6 showed them.
func TestDebugFile(t *testing.T) {
	env := mountTest(t, "", true, nil)
	f, err := os.OpenFile(env.p(".debug"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := syscall.Write(int(f.Fd()), []byte("1\nabc"))
	if n != 2 || err != nil {
		t.Errorf(`write "1\nabc" = %d, %v; want a short write of 2`, n, err)
	}
	f.Close()
	if !env.debug.Load() {
		t.Error("debug not enabled")
	}
	if data, _ := os.ReadFile(env.p(".debug")); string(data) != "1\n" {
		t.Errorf(".debug = %q", data)
	}
	f, err = os.OpenFile(env.p(".debug"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("0\n"), 1)
	wantErrno(t, "pwrite at 1", err, syscall.EIO)
	_, err = f.Write([]byte("0"))
	wantErrno(t, "1-byte write", err, syscall.EIO)
	n, err = f.Write([]byte("0\n"))
	if n != 2 || err != nil || env.debug.Load() {
		t.Errorf(`write "0\n" = %d, %v, debug %v`, n, err, env.debug.Load())
	}
	f.Close()
	// An empty O_TRUNC write succeeds.
	wantErrno(t, "empty write", os.WriteFile(env.p(".debug"), nil, 0), 0)
}

// The 1 MiB limit and O_TRUNC, as upstream 9.1.6 showed them
// (docs/upstream-behaviour.md#size-limit-and-truncation).
func TestSizeLimitAndTruncate(t *testing.T) {
	env := mountTest(t, "", true, nil)
	f, err := os.Create(env.p("big"))
	if err != nil {
		t.Fatal(err)
	}
	// One write(2); os.File.Write would retry the short write.
	n, err := syscall.Write(int(f.Fd()), make([]byte, 1<<20+1))
	if n != 1<<20 || err != nil {
		t.Errorf("write 1 MiB + 1 = %d, %v; want a short write of 1048576", n, err)
	}
	_, err = f.Write([]byte{1})
	wantErrno(t, "write past 1 MiB", err, syscall.EFBIG)
	f.Close()
	if st := lstat(t, env.p("big")); st.Size != 1<<20 {
		t.Errorf("big size %d", st.Size)
	}

	writeFile(t, env.p("small"), "abc")
	f, _ = os.OpenFile(env.p("small"), os.O_WRONLY, 0)
	_, err = f.WriteAt(make([]byte, 100), 1<<20-50)
	wantErrno(t, "pwrite crossing 1 MiB", err, syscall.EFBIG)
	f.Close()
	if data, _ := os.ReadFile(env.p("small")); string(data) != "abc" {
		t.Errorf("crossing pwrite changed the file: %d bytes", len(data))
	}
	// On a file opened by create (no direct I/O, as upstream), the kernel sends the part below
	// 1 MiB as its own write: upstream writes 50 bytes and the file reaches 1 MiB.
	f, err = os.OpenFile(env.p("created"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0640)
	if err != nil {
		t.Fatal(err)
	}
	n, err = syscall.Pwrite(int(f.Fd()), make([]byte, 100), 1<<20-50)
	f.Close()
	if n != 50 || err != nil {
		t.Errorf("pwrite crossing 1 MiB on a created file = %d, %v; want 50 as upstream", n, err)
	}
	if st := lstat(t, env.p("created")); st.Size != 1<<20 {
		t.Errorf("created size %d, want 1048576", st.Size)
	}
	wantErrno(t, "truncate 1 MiB + 1", os.Truncate(env.p("small"), 1<<20+1), syscall.EFBIG)
	wantErrno(t, "truncate 1", os.Truncate(env.p("small"), 1), 0)
	if data, _ := os.ReadFile(env.p("small")); string(data) != "a" {
		t.Errorf("after truncate: %q", data)
	}
	f, err = os.OpenFile(env.p("small"), os.O_RDONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st := lstat(t, env.p("small")); st.Size != 0 {
		t.Errorf("O_RDONLY|O_TRUNC left %d bytes", st.Size)
	}
	// A read past EOF gives 0 bytes.
	writeFile(t, env.p("small"), "abc")
	f, _ = os.Open(env.p("small"))
	buf := make([]byte, 10)
	if n, _ := f.ReadAt(buf, 10); n != 0 {
		t.Errorf("read past EOF = %d", n)
	}
	f.Close()
}

// utime only with both times, and the lock rules (docs/upstream-behaviour.md#times, #locks).
func TestUtime(t *testing.T) {
	env := mountTest(t, "", true, nil)
	mkdirs(t, env, "priv", "priv/lock")
	writeFile(t, env.p("f"), "x")
	wantErrno(t, "utime(a, m)", unix.UtimesNano(env.p("f"), []unix.Timespec{{Sec: 1000}, {Sec: 2000}}), 0)
	if st := lstat(t, env.p("f")); st.Mtim.Sec != 2000 || st.Atim.Sec != 2000 {
		t.Errorf("utime: mtime %d atime %d", st.Mtim.Sec, st.Atim.Sec)
	}
	// touch -m: atime omitted, silently ignored.
	wantErrno(t, "touch -m", unix.UtimesNano(env.p("f"), []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: 3000}}), 0)
	if st := lstat(t, env.p("f")); st.Mtim.Sec != 2000 {
		t.Errorf("touch -m changed mtime to %d", st.Mtim.Sec)
	}
	before := time.Now().Unix()
	wantErrno(t, "utime now", unix.UtimesNano(env.p("f"), nil), 0)
	if st := lstat(t, env.p("f")); st.Mtim.Sec < before {
		t.Errorf("utime(now): mtime %d", st.Mtim.Sec)
	}

	// As upstream: mkdir of an existing lock EEXIST; utime(0,0) on a fresh lock EACCES;
	// refresh ok; rmdir ok.
	lock := env.p("priv/lock/l1")
	mkdirs(t, env, "priv/lock/l1")
	wantErrno(t, "mkdir existing lock", os.Mkdir(lock, 0o755), syscall.EEXIST)
	wantErrno(t, "utime(0,0) fresh lock", unix.UtimesNano(lock, []unix.Timespec{{}, {}}), syscall.EACCES)
	now := time.Now().Unix()
	wantErrno(t, "lock refresh", unix.UtimesNano(lock, []unix.Timespec{{Sec: 0}, {Sec: now + 10}}), 0)
	wantErrno(t, "rename lock", os.Rename(lock, env.p("priv/lock/l2")), syscall.EACCES)
	wantErrno(t, "rmdir lock", syscall.Rmdir(lock), 0)

	// Local mode (cfs-plug-memdb.c:cfs_plug_memdb_utimens): utime(0,0) on an expired lock
	// deletes it. libfuse2 stats the path after a setattr, so the caller sees ENOENT, as
	// upstream's does.
	mkdirs(t, env, "priv/lock/l3")
	env.skew.Store(121)
	wantErrno(t, "utime(0,0) expired lock", unix.UtimesNano(env.p("priv/lock/l3"), []unix.Timespec{{}, {}}), syscall.ENOENT)
	if _, err := env.db.Lookup("priv/lock/l3"); err == nil {
		t.Error("expired lock not deleted")
	}
}

// A memdb entry named like a fixed root entry is hidden from lookup and readdir
// (docs/upstream-behaviour.md#root-entries).
func TestFixedNamesShadowMemdb(t *testing.T) {
	env := mountTest(t, "", true, func(db *memdb.DB) {
		must(t, db.Mkdir("local", 0, 1))
		must(t, db.Create(".members", 0, 1))
	})
	names, err := os.ReadDir(env.mnt)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, d := range names {
		count[d.Name()]++
	}
	if count["local"] != 1 || count[".members"] != 1 {
		t.Errorf("root listing: %v", count)
	}
	if st := lstat(t, env.p("local")); st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("local is not the symlink: %o", st.Mode)
	}
	if data, _ := os.ReadFile(env.p(".members")); string(data) != ".members content\n" {
		t.Errorf(".members = %q", data)
	}
}

// What www-data and nobody may do, run as child processes, as upstream 9.1.6 showed it
// (docs/upstream-behaviour.md#modes-and-owners).
func TestOtherUsers(t *testing.T) {
	env := mountTest(t, "", true, nil)
	mkdirs(t, env, "priv", "nodes")
	writeFile(t, env.p("pub"), "public\n")
	writeFile(t, env.p("priv/secret"), "secret\n")
	type check struct {
		uid, gid uint32
		script   string
		ok       bool
	}
	for _, c := range []check{
		{wwwData, wwwData, "cat pub", true},
		{wwwData, wwwData, "ls nodes", true},
		{wwwData, wwwData, "cat .version", true},
		{wwwData, wwwData, "cat priv/secret", false},
		{wwwData, wwwData, "ls priv", false},
		{wwwData, wwwData, "echo x > pub", false},
		{wwwData, wwwData, "mkdir nodes/x", false},
		{65534, wwwData, "cat pub", true},
		{65534, 65534, "ls . nodes", true},
		{65534, 65534, "stat pub", true},
		{65534, 65534, "cat pub", false},
		{65534, 65534, "cat .version", false},
		{65534, 65534, "echo x > new", false},
	} {
		cmd := execAs(c.uid, c.gid, env.mnt, c.script)
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.ok {
			t.Errorf("%d:%d %q: err %v, output %q", c.uid, c.gid, c.script, err, out)
		}
		if !c.ok && !bytes.Contains(out, []byte("Permission denied")) {
			t.Errorf("%d:%d %q: want Permission denied, got %q", c.uid, c.gid, c.script, out)
		}
	}
}

// Without quorum the write bits vanish and mutations are refused; reads and the chmod
// acceptance still work. The root stays 0755 (docs/upstream-behaviour.md#without-quorum).
func TestNonQuorate(t *testing.T) {
	env := mountTest(t, "", false, func(db *memdb.DB) {
		for _, d := range []string{"nodes", "priv", "priv/lock", "priv/lock/l"} {
			must(t, db.Mkdir(d, 0, 1))
		}
		for _, f := range []string{"f", "priv/p"} {
			must(t, db.Create(f, 0, 1))
			_, err := db.Write(f, 0, []byte("data"), false, 0, 1)
			must(t, err)
		}
	})
	for path, mode := range map[string]uint32{
		"":      syscall.S_IFDIR | 0o755,
		"nodes": syscall.S_IFDIR | 0o555, "priv": syscall.S_IFDIR | 0o500,
		"f": syscall.S_IFREG | 0o440, "priv/p": syscall.S_IFREG | 0o400,
		"local": syscall.S_IFLNK | 0o555, ".version": syscall.S_IFREG | 0o440,
		".debug": syscall.S_IFREG | 0o640,
	} {
		if st := lstat(t, env.p(path)); st.Mode != mode {
			t.Errorf("%q: mode %o, want %o", path, st.Mode, mode)
		}
	}
	if data, err := os.ReadFile(env.p("f")); err != nil || string(data) != "data" {
		t.Errorf("read f = %q, %v", data, err)
	}
	wantErrno(t, "write", os.WriteFile(env.p("f"), []byte("x"), 0), syscall.EACCES)
	wantErrno(t, "create", os.WriteFile(env.p("g"), []byte("x"), 0o640), syscall.EACCES)
	wantErrno(t, "mkdir", os.Mkdir(env.p("d"), 0o755), syscall.EACCES)
	wantErrno(t, "rm", os.Remove(env.p("f")), syscall.EACCES)
	wantErrno(t, "rmdir", syscall.Rmdir(env.p("nodes")), syscall.EACCES)
	wantErrno(t, "rename", os.Rename(env.p("f"), env.p("h")), syscall.EACCES)
	wantErrno(t, "utime", os.Chtimes(env.p("f"), time.Now(), time.Now()), syscall.EACCES)
	wantErrno(t, "truncate", os.Truncate(env.p("f"), 0), syscall.EACCES)
	wantErrno(t, "chmod 0640", os.Chmod(env.p("f"), 0o640), 0)
	f, err := os.OpenFile(env.p("f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("O_APPEND open: %v", err)
	}
	_, err = f.Write([]byte("x"))
	wantErrno(t, "append write", err, syscall.EACCES)
	f.Close()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// execAs runs a shell script in dir as uid:gid.
func execAs(uid, gid uint32, dir, script string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd
}

// Names up to 1024 bytes work; longer ones get ENAMETOOLONG, as on upstream's libfuse2
// mount, whatever limit the kernel would allow go-fuse. A longer name that came from a
// peer is listed but cannot be looked up, as there.
func TestNameLengthLimit(t *testing.T) {
	long := strings.Repeat("L", 1100)
	env := mountTest(t, "", true, func(db *memdb.DB) {
		must(t, db.Mkdir("dir", 0, 1))
		must(t, db.Create("dir/"+long, 0, 1))
	})
	// The paths are too long to print: report the errno only.
	check := func(what string, err error, want syscall.Errno) {
		t.Helper()
		var got syscall.Errno
		if err != nil && !errors.As(err, &got) {
			t.Fatalf("%s: %T", what, err)
		}
		if got != want {
			t.Errorf("%s: errno %d (%v), want %d (%v)", what, got, got, want, want)
		}
	}
	for _, dir := range []string{"", "dir"} {
		for _, n := range []int{255, 300, 1023, 1024} {
			name := strings.Repeat("a", n-1) + "f"
			p := env.p(filepath.Join(dir, name))
			check(fmt.Sprintf("create %d in %q", n, dir), os.WriteFile(p, []byte("x"), 0o640), 0)
			check(fmt.Sprintf("rename to %d in %q", n, dir), os.Rename(p, p[:len(p)-1]+"g"), 0)
			check(fmt.Sprintf("unlink %d in %q", n, dir), os.Remove(p[:len(p)-1]+"g"), 0)
			check(fmt.Sprintf("mkdir %d in %q", n, dir), os.Mkdir(p, 0o755), 0)
			check(fmt.Sprintf("rmdir %d in %q", n, dir), syscall.Rmdir(p), 0)
		}
		writeFile(t, env.p(filepath.Join(dir, "short")), "x")
		for _, n := range []int{1025, 1100, 3000} {
			p := env.p(filepath.Join(dir, strings.Repeat("b", n)))
			check(fmt.Sprintf("create %d in %q", n, dir), os.WriteFile(p, []byte("x"), 0o640), syscall.ENAMETOOLONG)
			check(fmt.Sprintf("mkdir %d in %q", n, dir), os.Mkdir(p, 0o755), syscall.ENAMETOOLONG)
			check(fmt.Sprintf("mknod %d in %q", n, dir), syscall.Mknod(p, syscall.S_IFREG|0o640, 0), syscall.ENAMETOOLONG)
			check(fmt.Sprintf("rename to %d in %q", n, dir), os.Rename(env.p(filepath.Join(dir, "short")), p), syscall.ENAMETOOLONG)
		}
	}
	for _, p := range []string{"short", "dir/short", "dir/" + long} {
		if _, err := env.db.Lookup(p); err != nil {
			t.Errorf("%s: %v", p[:min(len(p), 20)], err)
		}
	}
	entries, _ := env.db.ReadDir("")
	for _, e := range entries {
		if len(e.Name) > 1024 {
			t.Errorf("a %d-byte name reached memdb", len(e.Name))
		}
	}
	if entries, _ = env.db.ReadDir("dir"); len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2", len(entries))
	}

	names, err := os.ReadDir(env.p("dir"))
	if err != nil || len(names) != 2 {
		t.Errorf("readdir with a peer's long name: %d entries, %v", len(names), err)
	}
	_, err = os.Stat(env.p("dir/" + long))
	check("stat of a peer's long name", err, syscall.ENAMETOOLONG)
	check("unlink of a peer's long name", os.Remove(env.p("dir/"+long)), syscall.ENAMETOOLONG)
}
